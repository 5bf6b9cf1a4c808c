"""Recording what a person changed: one audit entry per unit of work, written inside it.

Invariants:
- An entry is written in the same transaction as the change it describes, just before the unit of work
  commits (db/unit_of_work.py `before_commit`): a rolled-back request leaves no entry, and a committed change
  always has its entry (if the entry cannot be written, nothing commits).
- Only sessions a person acts through record anything: `begin` is called by the `/api/v1` auth dependency
  (provisioning/deps.py) and the console's (console/auth.py) for write requests, by the CLI's units of work
  (common/cli_support.py `with_session`, incoming/cli.py) and by the OAuth callback that stores a Connect's
  tokens (as the person who started it). It attaches the listeners to that one session, so every other
  session (the webhook's, the engine's, workers') has no listener and pays nothing.
- What changed is captured generically: ORM inserts, updates and deletes from the flush (attribute history),
  and UPDATE/DELETE/INSERT statements run through the session (`do_orm_execute`): for those the affected rows
  are read before (and, for an update or an upsert, after) the statement: an upsert that replaced a row (a changed
  password) is that row's update, not an insert. Rows removed by a database cascade (ON DELETE
  CASCADE) are implied by their parent's delete and not listed.
- Secrets never reach an entry: a column whose name ends in `_sealed` or `digest`, is `hash` or `csrf`, or
  carries `info={"secret": True}` shows as "[secret]" (only whether it was set or changed); run payloads,
  which may carry a caller's headers, are "[omitted]"; any value larger than MAX_VALUE_CHARS is cut to its size.
- Bookkeeping tables (console sessions, API tokens and nonces, rate-limit counters) are not changes of
  configuration and are left out.
- The entry belongs to the deepest organization containing every changed row (ORG_LINKS leads each row to
  its organization); Owners of that organization and above read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any

from fastapi import Request
from sqlalchemy import Column, Table, event, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.sql.dml import Delete, Insert, Update

from ihub.audit.models import AuditEntry
from ihub.common.proxies import forwarded_client
from ihub.common.route_template import route_template as scope_route_template
from ihub.db.unit_of_work import before_commit
from ihub.tenancy.permissions import Principal

# Where a session keeps its recorder.
RECORDER_KEY = "ihub.audit.recorder"

# Rows one entry lists at most (an organization deleted with its subtree can touch many); the entry says how
# many more there were.
MAX_ROWS = 200
# Longest JSON text of one value kept in an entry (template definitions, project settings).
MAX_VALUE_CHARS = 8000
# Longest user agent kept.
MAX_USER_AGENT = 300

SECRET = "[secret]"
OMITTED = "[omitted]"

# Not configuration: who is signed in, tokens exchanged, counters. Their changes are not listed.
UNAUDITED_TABLES = frozenset(
    {"audit_entries", "console_sessions", "api_tokens", "used_nonces", "rate_limit_counters", "incoming_used_jti"}
)
# Payloads that may carry a caller's credentials (a trigger's headers) or large data: listed as "[omitted]".
OMITTED_COLUMNS = frozenset(
    {
        ("runs", "trigger"),
        ("runs", "result"),
        ("run_steps", "request"),
        ("run_steps", "response"),
        ("run_steps", "state"),
    }
)
SECRET_NAMES = frozenset({"hash", "csrf"})

# How a row leads to its organization: (column, table it refers to), until `organizations` (its `path`).
# Tables not named here (and not `organizations`) do not decide the entry's organization: a table missing here
# puts its entries in the actor's organization, out of sight of the Owners whose rows changed
# (tests/audit/test_audit_entry_org.py fails for a new table until it is named here).
ORG_LINKS: dict[str, tuple[str, str]] = {
    "users": ("org_id", "organizations"),
    "projects": ("org_id", "organizations"),
    "templates": ("org_id", "organizations"),
    "oauth_apps": ("org_id", "organizations"),
    "event_endpoints": ("org_id", "organizations"),
    "replay_batches": ("org_id", "organizations"),
    "failure_groups": ("org_id", "organizations"),
    "template_versions": ("template_id", "templates"),
    "connections": ("project_id", "projects"),
    "flows": ("project_id", "projects"),
    "oauth_states": ("project_id", "projects"),
    "runs": ("project_id", "projects"),
    "run_steps": ("run_id", "runs"),
    "trigger_clients": ("flow_id", "flows"),
    "trigger_keys": ("client_pk", "trigger_clients"),
    "event_deliveries": ("endpoint_id", "event_endpoints"),
    "replay_items": ("batch_id", "replay_batches"),
    "api_keys": ("user_id", "users"),
    "user_passwords": ("user_id", "users"),
    "signin_links": ("user_id", "users"),
    "incoming_idempotency": ("client_pk", "trigger_clients"),
}


class Channel(StrEnum):
    API = "api"
    CONSOLE = "console"
    CLI = "cli"


@dataclass(frozen=True)
class Actor:
    """Who acts and from where. `org_id`/`org_path` are the actor's own organization, used when the changed
    rows do not name one (None at the shell: the root organization is used then)."""

    channel: Channel
    user_id: int | None
    name: str | None
    org_id: int | None
    org_path: str | None
    address: str | None = None
    user_agent: str | None = None


@dataclass
class Change:
    entity: str
    id: str | None
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    # Every known plain value of the row (before and after), to find its organization; never stored.
    refs: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "id": self.id, "op": self.op, "before": self.before, "after": self.after}


def is_secret(column: Column[Any] | Any) -> bool:
    name: str = column.name
    return bool(column.info.get("secret")) or name.endswith(("_sealed", "digest")) or name in SECRET_NAMES


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, bytes):
        return OMITTED
    return json.loads(json.dumps(value, default=str))


def shown(table: str, column: Column[Any] | Any, value: Any) -> Any:
    """A column's value as an entry shows it: secrets and payloads replaced, large values cut to their size."""
    if value is None:
        return None
    if is_secret(column):
        return SECRET
    if (table, column.name) in OMITTED_COLUMNS:
        return OMITTED
    plain = _plain(value)
    text = plain if isinstance(plain, str) else json.dumps(plain)
    if len(text) > MAX_VALUE_CHARS:
        return f"[{len(text)} characters omitted]"
    return plain


def _ref_values(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name in table.c and not is_secret(table.c[name])}


def _row_id(table: Table, row: Mapping[str, Any]) -> str | None:
    keys = [row.get(column.name) for column in table.primary_key.columns]
    if not keys or any(key is None for key in keys):
        return None
    return ",".join(str(key) for key in keys)


def _whole(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: shown(table.name, table.c[name], value) for name, value in row.items() if name in table.c}


def _diff(table: Table, before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for name, value in after.items():
        if name in table.c and before.get(name) != value:
            old[name] = shown(table.name, table.c[name], before.get(name))
            new[name] = shown(table.name, table.c[name], value)
            if is_secret(table.c[name]):
                # Say that it changed without saying from what to what.
                old[name], new[name] = (SECRET if before.get(name) is not None else None), SECRET
    return old, new


class Recorder:
    """The changes of one session, and the entry they become at commit."""

    def __init__(self, actor: Actor, action: str, *, record_empty: bool) -> None:
        self.actor = actor
        self.action = action
        # /api/v1 records every successful write request, even one that changed nothing (the attempt is the
        # record); the console and the CLI record only work that changed something (a form shown again with
        # errors, or `ihub runs list`, changed nothing).
        self.record_empty = record_empty
        self.changes: list[Change] = []
        self.skipped = 0
        self.closed = False

    def note(self, change: Change) -> None:
        """A change the row listeners cannot see (the audit log's own purge: its table is not audited)."""
        self._add(change)

    def _add(self, change: Change) -> None:
        if len(self.changes) >= MAX_ROWS:
            self.skipped += 1
            return
        self.changes.append(change)

    # -- ORM flushes ---------------------------------------------------------------------------------------

    def after_flush(self, session: Session, _context: UOWTransaction) -> None:
        if self.closed:
            return
        for obj in session.new:
            self._flushed(obj, "insert")
        for obj in session.dirty:
            if session.is_modified(obj, include_collections=False):
                self._flushed(obj, "update")
        for obj in session.deleted:
            self._flushed(obj, "delete")

    def _flushed(self, obj: Any, op: str) -> None:
        state = inspect(obj)
        mapper = state.mapper
        table = mapper.local_table
        if not isinstance(table, Table) or table.name in UNAUDITED_TABLES:
            return
        current: dict[str, Any] = {}
        previous: dict[str, Any] = {}
        for attr in mapper.column_attrs:
            column = attr.columns[0]
            if not isinstance(column, Column) or column.table is not table:
                continue
            # Never load: an unloaded attribute was not changed by this flush.
            if attr.key in state.dict:
                current[column.name] = state.dict[attr.key]
            if op == "update":
                history = state.attrs[attr.key].history
                if history.added or history.deleted:
                    previous[column.name] = history.deleted[0] if history.deleted else None
                    current[column.name] = history.added[0] if history.added else None
        row_id = _row_id(table, current)
        refs = [_ref_values(table, current)]
        if op == "insert":
            self._add(Change(table.name, row_id, op, None, _whole(table, current), refs))
        elif op == "delete":
            self._add(Change(table.name, row_id, op, _whole(table, current), None, refs))
        else:
            changed = {name: current.get(name) for name in previous}
            old, new = _diff(table, previous, changed)
            if new:
                self._add(Change(table.name, row_id, op, old, new, refs))

    # -- statements (UPDATE/DELETE/INSERT through session.execute) ------------------------------------------

    def on_execute(self, state: ORMExecuteState) -> Any:
        if self.closed or not (state.is_update or state.is_delete or state.is_insert):
            return None
        statement = state.statement
        if not isinstance(statement, Update | Delete | Insert) or not isinstance(statement.table, Table):
            return None
        # The plain table: an ORM statement's `table` is annotated with its entity, and selecting it would
        # return entities, not rows.
        table = AuditEntry.metadata.tables.get(statement.table.name)
        if table is None or table.name in UNAUDITED_TABLES:
            return None
        if isinstance(statement, Insert):
            if statement._post_values_clause is not None:  # ON CONFLICT ... (SQLite's and PostgreSQL's upsert)
                return self._upserted(state, statement, table)
            self._inserted(state, statement, table)
            return None
        where = statement.whereclause
        given = state.parameters
        if where is None and given and not isinstance(given, Mapping):
            # A bulk update or delete by primary key (a list of parameter sets): the sets are the rows.
            op = "delete" if isinstance(statement, Delete) else "update"
            for params in given:
                given_row = {name: value for name, value in params.items() if name in table.c}
                shown_row = _whole(table, given_row)
                old_values, new_values = (shown_row, None) if op == "delete" else (None, shown_row)
                self._add(Change(table.name, _row_id(table, given_row), op, old_values, new_values, [given_row]))
            return None
        query = select(table) if where is None else select(table).where(where)
        before = [dict(row) for row in state.session.execute(query.limit(MAX_ROWS + 1)).mappings()]
        result = state.invoke_statement()
        if isinstance(statement, Delete):
            for row in before:
                self._add(Change(table.name, _row_id(table, row), "delete", _whole(table, row), None, [row]))
            return result
        key = table.primary_key.columns
        if len(key) != 1 or not before:
            return result
        (pk,) = key
        ids = [row[pk.name] for row in before]
        after = {row[pk.name]: dict(row) for row in state.session.execute(select(table).where(pk.in_(ids))).mappings()}
        for row in before:
            new_row = after.get(row[pk.name])
            if new_row is None:
                continue
            old, new = _diff(table, row, new_row)
            if new:
                refs = [_ref_values(table, row), _ref_values(table, new_row)]
                self._add(Change(table.name, _row_id(table, row), "update", old, new, refs))
        return result

    def _given_rows(self, state: ORMExecuteState, statement: Insert, table: Table) -> list[dict[str, Any]]:
        compiled = statement.compile(dialect=state.session.get_bind().dialect)
        given = state.parameters
        many: Sequence[Mapping[str, Any]] = [given] if isinstance(given, Mapping) else list(given or [{}])
        rows = [dict(compiled.params) | dict(params) for params in many]
        return [{name: value for name, value in params.items() if name in table.c} for params in rows]

    def _inserted(self, state: ORMExecuteState, statement: Insert, table: Table) -> None:
        for row in self._given_rows(state, statement, table):
            self._add(Change(table.name, _row_id(table, row), "insert", None, _whole(table, row), [row]))

    def _upserted(self, state: ORMExecuteState, statement: Insert, table: Table) -> Any:
        """An insert that may update (or keep) a row already there (a changed password): a row that existed is
        listed as the update the statement made to it, by its primary key, not as an insert without a before."""
        rows = self._given_rows(state, statement, table)
        key = table.primary_key.columns
        ids = [row.get(key[0].name) for row in rows] if len(key) == 1 else []
        if not ids or any(row_id is None for row_id in ids):
            # No key to look rows up by: listed as given.
            for row in rows:
                self._add(Change(table.name, _row_id(table, row), "insert", None, _whole(table, row), [row]))
            return None
        (pk,) = key
        query = select(table).where(pk.in_(ids))
        before = {row[pk.name]: dict(row) for row in state.session.execute(query).mappings()}
        result = state.invoke_statement()
        after = {row[pk.name]: dict(row) for row in state.session.execute(query).mappings()}
        for row in rows:
            old_row, new_row = before.get(row[pk.name]), after.get(row[pk.name])
            if old_row is None:
                self._add(Change(table.name, _row_id(table, row), "insert", None, _whole(table, row), [row]))
            elif new_row is not None:
                old, new = _diff(table, old_row, new_row)
                if new:
                    refs = [_ref_values(table, old_row), _ref_values(table, new_row)]
                    self._add(Change(table.name, _row_id(table, old_row), "update", old, new, refs))
        return result

    # -- the entry -------------------------------------------------------------------------------------------

    async def write(self, session: AsyncSession) -> None:
        """Run by the unit of work just before it commits."""
        if self.closed:
            return
        await session.flush()
        self.closed = True
        if not self.changes and not self.record_empty:
            return
        self.changes = coalesce(self.changes)
        org_id, org_path = await _entry_org(session, self.changes, self.actor)
        changes = [change.as_json() for change in self.changes]
        if self.skipped:
            changes.append({"entity": None, "id": None, "op": "more", "before": None, "after": {"rows": self.skipped}})
        first = main_change(self.changes)
        await session.execute(
            insert(AuditEntry).values(
                channel=self.actor.channel.value,
                actor_user_id=self.actor.user_id,
                actor_name=(await _actor_name(session, self.actor))[:400],
                address=self.actor.address,
                user_agent=(self.actor.user_agent or None) and self.actor.user_agent[:MAX_USER_AGENT],
                org_id=org_id,
                org_path=org_path,
                action=self.action[:300],
                target_type=first.entity if first else None,
                target_id=first.id if first else None,
                changes=changes,
            )
        )


# Columns a change touches only as a consequence of another (a project's `updated_at` when its connection
# changes): such a change does not name what the work was about.
INCIDENTAL_COLUMNS = frozenset({"updated_at"})


def main_change(changes: Sequence[Change]) -> Change | None:
    """The change that names the entry's target: the first one that is more than a timestamp bump."""
    for change in changes:
        if change.op != "update" or not set(change.after or {}) <= INCIDENTAL_COLUMNS:
            return change
    return changes[0] if changes else None


def coalesce(changes: Sequence[Change]) -> list[Change]:
    """One change per row: a row inserted then updated within the work (an organization's path, set once its
    id is known) is one insert with its final values; updated twice, one update from the first before to the
    last after; inserted then deleted, nothing."""
    merged: dict[tuple[str, str | None], Change] = {}
    result: list[Change] = []
    for change in changes:
        key = (change.entity, change.id)
        earlier = merged.get(key) if change.id is not None else None
        if earlier is None:
            merged[key] = change
            result.append(change)
            continue
        earlier.refs.extend(change.refs)
        if change.op == "update" and earlier.op in ("insert", "update"):
            earlier.after = {**(earlier.after or {}), **(change.after or {})}
            if earlier.op == "update":
                earlier.before = {**(change.before or {}), **(earlier.before or {})}
        elif change.op == "delete" and earlier.op == "insert":
            result.remove(earlier)
            del merged[key]
        else:
            # Deleted after an update: the row as it was deleted; anything else: the later change wins.
            earlier.op, earlier.after = change.op, change.after
            earlier.before = change.before if change.op == "delete" or earlier.before is None else earlier.before
    return result


def begin(session: AsyncSession, actor: Actor, action: str, *, record_empty: bool) -> None:
    """Record what this session's unit of work changes on behalf of `actor` (once per session)."""
    if RECORDER_KEY in session.info:
        return
    recorder = Recorder(actor, action, record_empty=record_empty)
    session.info[RECORDER_KEY] = recorder
    sync_session = session.sync_session
    event.listen(sync_session, "after_flush", recorder.after_flush)
    event.listen(sync_session, "do_orm_execute", recorder.on_execute)

    async def _write() -> None:
        await recorder.write(session)

    before_commit(session, _write)


def recorder_of(session: AsyncSession) -> Recorder | None:
    recorder = session.info.get(RECORDER_KEY)
    return recorder if isinstance(recorder, Recorder) else None


async def _actor_name(session: AsyncSession, actor: Actor) -> str:
    if actor.name:
        return actor.name
    if actor.user_id is None:
        return "unknown"
    users = AuditEntry.metadata.tables["users"]
    email = await session.scalar(select(users.c.email).where(users.c.id == actor.user_id))
    return str(email) if email else f"user {actor.user_id}"


async def _org_path(
    session: AsyncSession, table: str, row: Mapping[str, Any], cache: dict[tuple[str, Any], dict[str, Any] | None]
) -> str | None:
    """Follow ORG_LINKS from `row` of `table` to an organization's path (None when the chain breaks)."""
    for _ in range(len(ORG_LINKS) + 1):
        if table == "organizations":
            path = row.get("path")
            return path if isinstance(path, str) else None
        link = ORG_LINKS.get(table)
        if link is None or row.get(link[0]) is None:
            return None
        column, parent = link
        key = (parent, row[column])
        if key not in cache:
            parent_table = AuditEntry.metadata.tables[parent]
            found = (await session.execute(select(parent_table).where(parent_table.c.id == row[column]))).mappings()
            first = found.first()
            cache[key] = dict(first) if first is not None else None
        found_row = cache[key]
        if found_row is None:
            return None
        table, row = parent, found_row
    return None


def common_ancestor(paths: Sequence[str]) -> str | None:
    """The deepest organization path containing every one of `paths` ("/1/5/9/" and "/1/5/" → "/1/5/")."""
    split = [[part for part in path.split("/") if part] for path in paths]
    if not split:
        return None
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/" + "".join(f"{part}/" for part in common) if common else None


async def _entry_org(session: AsyncSession, changes: Sequence[Change], actor: Actor) -> tuple[int | None, str]:
    cache: dict[tuple[str, Any], dict[str, Any] | None] = {}
    paths: list[str] = []
    for change in changes:
        for row in change.refs:
            path = await _org_path(session, change.entity, row, cache)
            if path:
                paths.append(path)
    path = common_ancestor(paths)
    if path is None and actor.org_path is not None:
        return actor.org_id, actor.org_path
    if path is None:
        # At the shell, work that names no organization belongs to the root (its Owners see everything).
        organizations = AuditEntry.metadata.tables["organizations"]
        root = (
            await session.execute(
                select(organizations.c.id, organizations.c.path)
                .where(organizations.c.parent_id.is_(None))
                .order_by(organizations.c.id)
                .limit(1)
            )
        ).first()
        return (root.id, root.path) if root is not None else (None, "/")
    last = path.strip("/").split("/")[-1]
    return (int(last) if last.isdigit() else None), path


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_template(request: Request) -> str:
    """The matched route as declared with every prefix, e.g. `/console/org/{org_id}/rename` (the request's path
    when no route matched)."""
    template = scope_route_template(request.scope)
    if template is not None:
        return template
    return str(request.scope.get("path", request.url.path)).removeprefix(str(request.scope.get("root_path", "")))


def begin_request(request: Request, session: AsyncSession, principal: Principal, channel: Channel) -> None:
    """Record a write request's unit of work on behalf of the signed-in `principal` (API token or console
    session). The action names the route as declared (`PUT /api/v1/project/{project_id}`), so entries of one
    kind of change share it whatever ids they touched."""
    if request.method in READ_METHODS:
        return
    template = route_template(request)
    trusted = request.app.state.context.settings.trusted_proxies
    peer = request.client.host if request.client else "unknown"
    actor = Actor(
        channel=channel,
        user_id=principal.user_id,
        name=None,
        org_id=principal.org_id,
        org_path=principal.org_path,
        address=forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted),
        user_agent=request.headers.get("user-agent"),
    )
    begin(session, actor, f"{request.method} {template}", record_empty=channel is Channel.API)


def cli_command() -> str:
    """`ihub template import`: the running command's path (whatever the program was called), or the first
    two words of the program's arguments outside a command."""
    import importlib
    import sys

    # Typer runs commands on its own copy of click (typer._click); plain click is the fallback.
    for module in ("typer._click.globals", "click.globals"):
        try:
            context = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if context is not None:
            return " ".join(["ihub", *str(context.command_path).split()[1:]])
    words = [arg for arg in sys.argv[1:3] if not arg.startswith("-")]
    return " ".join(["ihub", *words])


def begin_cli(session: AsyncSession) -> None:
    """Record what a CLI command changes, as the operating-system user at this host (the shell has no hub
    user: whoever runs `ihub` holds the database itself). A command that changes nothing leaves no entry."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a bare container)
        user = "unknown"
    host = socket.gethostname()
    actor = Actor(Channel.CLI, None, f"{user}@{host}", None, None, address=host, user_agent=None)
    begin(session, actor, cli_command(), record_empty=False)
