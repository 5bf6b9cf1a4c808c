"""Connection health: each connection's status (ihub.projects.status), when it was last refreshed and used,
the check behind `POST /project/{id}/connection/{slot}/test`, and the reconnect that resumes parked runs.

Every write here leaves `connections.updated_at` alone on purpose: that column is the change stamp of what the
engine caches per process (config and decrypted secrets, ihub.projects.runtime), and a status change or a
"last used" tick changes neither, so it must not make every worker rebuild the project's connections.

For the OAuth2 code (which refreshes and reconnects connections):
- a refresh succeeded: `record_refreshed(session, connection_id)`;
- a person (re)connected the slot, tokens stored: `mark_reconnected(session, project_id, slot_id)` (status
  connected, and the runs parked on it queued again);
- a refresh was refused or the grant revoked: raise `ConnectionError_(message, kind="needs_reconnect")` from the
  auth preparation; the engine parks the run and marks the connection (`record_status`) in one transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import bad_request, not_found
from ihub.db.base import utcnow
from ihub.db.unit_of_work import after_commit
from ihub.egress import (
    DeadlineExceeded,
    EgressRefused,
    FetchedResponse,
    FetchLimits,
    ResponseTooLarge,
    egress_client,
    fetch,
    policy_from_settings,
)
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.flows.connections import (
    ConnectionError_,
    TokenCache,
    build_url,
    fields_of,
    prepare_auth,
    redact_text,
    secret_values,
)
from ihub.projects import service
from ihub.projects.models import Connection, Project
from ihub.projects.status import ConnectionStatus
from ihub.runs import lifecycle
from ihub.templates import connection_types
from ihub.tenancy.permissions import Principal

if TYPE_CHECKING:
    from ihub.common.context import AppContext

log = logging.getLogger("ihub.projects.health")

# `last_used_at` is for people ("used 3 minutes ago"): one write a minute per connection is plenty.
USED_RESOLUTION = timedelta(minutes=1)
# The ConnectionError_ kind the OAuth2 code raises when only a person can make the connection work again.
NEEDS_RECONNECT = "needs_reconnect"
# A message longer than this is cut: it is shown in lists, and a provider may answer with a whole page.
MAX_STATUS_MESSAGE = 500


def _unstamped(values: dict[str, Any]) -> dict[str, Any]:
    # Setting updated_at to itself keeps its onupdate from firing (see the module docstring).
    return {**values, "updated_at": Connection.updated_at}


def _one(connection_id: int) -> ColumnElement[bool]:
    return Connection.id == connection_id


async def record_status(
    session: AsyncSession, connection_id: int, status: ConnectionStatus, message: str | None = None
) -> None:
    """Set a connection's status; `message` (the provider's words, already redacted) only for error and
    needs_reconnect, cleared otherwise."""
    kept = message[:MAX_STATUS_MESSAGE] if message and status in _WITH_MESSAGE else None
    before = None
    if status is ConnectionStatus.NEEDS_RECONNECT:
        # Only the change to needs_reconnect is an event (a person must act), not every refusal that follows it.
        before = (
            await session.execute(
                select(Connection.status, Connection.slot_id, Connection.project_id, Project.org_id)
                .join(Project, Project.id == Connection.project_id)
                .where(_one(connection_id))
            )
        ).first()
    await session.execute(
        update(Connection)
        .where(_one(connection_id))
        .values(_unstamped({"status": status.value, "status_message": kept}))
        .execution_options(synchronize_session=False)
    )
    if before is not None and before.status != status.value:
        data = {
            "connectionId": str(connection_id),
            "connection": before.slot_id,
            "projectId": str(before.project_id),
            "orgId": str(before.org_id),
            "message": kept,
        }
        await outbox.emit_for_org(session, EventType.CONNECTION_NEEDS_RECONNECT, before.org_id, data)


_WITH_MESSAGE = frozenset({ConnectionStatus.ERROR, ConnectionStatus.NEEDS_RECONNECT})


async def record_refreshed(session: AsyncSession, connection_id: int, *, now: datetime | None = None) -> None:
    """A refresh succeeded: the connection is connected again, refreshed now."""
    await session.execute(
        update(Connection)
        .where(_one(connection_id))
        .values(
            _unstamped(
                {
                    "status": ConnectionStatus.CONNECTED.value,
                    "status_message": None,
                    "last_refreshed_at": now or utcnow(),
                }
            )
        )
        .execution_options(synchronize_session=False)
    )


async def record_used(session: AsyncSession, project_id: int, slot_id: str, *, now: datetime | None = None) -> bool:
    """A run used the connection: `last_used_at` moves, at most once per USED_RESOLUTION (the guard is in the
    UPDATE, so many workers using one connection write it once a minute between them). True if written."""
    now = now or utcnow()
    result = await session.execute(
        update(Connection)
        .where(
            Connection.project_id == project_id,
            Connection.slot_id == slot_id,
            or_(Connection.last_used_at.is_(None), Connection.last_used_at < now - USED_RESOLUTION),
        )
        .values(_unstamped({"last_used_at": now}))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


class UseThrottle:
    """Per process: which connections had `record_used` written lately, so a busy worker does not even try
    (the database guard is what makes it correct; this only saves the statements)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: dict[tuple[str, int, str], float] = {}

    def due(self, database: str, project_id: int, slot_id: str) -> bool:
        key = (database, project_id, slot_id)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < USED_RESOLUTION.total_seconds():
            return False
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[key] = now
        return True

    def clear(self) -> None:
        self._seen.clear()


USES = UseThrottle()


async def mark_reconnected(
    session: AsyncSession,
    project_id: int,
    slot_id: str,
    *,
    context: AppContext | None = None,
    now: datetime | None = None,
) -> list[int]:
    """A person reconnected the slot (new tokens are stored in this same unit of work): status connected,
    refreshed now, and every run of the project parked on this slot queued again, due now. Returns their ids;
    with `context`, the executor is told once the unit of work commits (otherwise its poller finds them)."""
    now = now or utcnow()
    await session.execute(
        update(Connection)
        .where(and_(Connection.project_id == project_id, Connection.slot_id == slot_id))
        .values(
            _unstamped({"status": ConnectionStatus.CONNECTED.value, "status_message": None, "last_refreshed_at": now})
        )
        .execution_options(synchronize_session=False)
    )
    resumed = await lifecycle.resume(session, project_id, slot_id, now=now)
    if resumed and context is not None:
        from ihub.executors import dispatch  # executors are wired above projects; imported on use

        for run_id in resumed:
            after_commit(session, partial(dispatch, context, run_id))
    if resumed:
        log.info("project %s: connection %r reconnected; %d parked runs resumed", project_id, slot_id, len(resumed))
    return resumed


# -- the check: POST /project/{id}/connection/{slot}/test --------------------------------------------------------

PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class CheckResult:
    status: ConnectionStatus
    message: str | None


async def test_connection(
    session: AsyncSession, context: AppContext, principal: Principal, project_id: int, slot_id: str
) -> Project:
    """Check a connection now with its type's probe request, through the auth preparation and egress policy a
    step uses, and record the outcome as its status. Whoever may edit the project may (any role in its
    subtree, like PUT /project); an unknown or invisible project is a 404 and nothing is recorded."""
    project = await service.visible_project(session, principal, project_id)
    slot = await service.pinned_slot(session, project, slot_id)
    if slot is None:
        raise not_found("connection", slot_id)
    connection = await session.scalar(
        select(Connection).where(Connection.project_id == project.id, Connection.slot_id == slot_id)
    )
    # Not configured (or unreadable): a 400 saying what is missing; the status is about credentials that exist.
    runtime = await service.connection_runtime(session, context.box, project.id, slot_id)
    assert connection is not None  # connection_runtime refused a missing row
    probe = connection_types.get_type(connection.type).probe
    if probe.requires and not fields_of(runtime).get(probe.requires) and not _set(connection, probe.requires):
        raise bad_request(
            f"connection {slot_id!r} cannot be checked without {probe.requires!r} (checking it would send a message)",
            "connection_not_testable",
        )
    connection_id = connection.id
    # The one exception to "services only flush": the checks above wrote nothing, and the probe waits on the
    # provider for up to PROBE_TIMEOUT. On SQLite a write transaction holds the database's only write lock, so it
    # ends here instead of blocking every writer (and the token refresh below, which locks the connection row in
    # its own transaction) while the provider answers. The status is recorded in a new transaction.
    await session.commit()
    from ihub.oauth.refresh import AuthorizationCodeTokens  # oauth is wired above projects; imported on use

    tokens = TokenCache(AuthorizationCodeTokens(context))
    http = egress_client(policy_from_settings(context.settings), timeout=PROBE_TIMEOUT)
    try:
        result = await probe_connection(http, runtime, probe, context.settings.http_max_response_bytes, tokens)
    finally:
        await http.aclose()
    await record_status(session, connection_id, result.status, result.message)
    return await service.visible_project(session, principal, project_id)


def _user_authorized(runtime: dict[str, Any]) -> bool:
    return fields_of(runtime).get("authType") == "oauth2_authorization_code"


def _runtime_tokens(runtime: dict[str, Any]) -> list[str]:
    return [str(v) for v in (runtime.get("secrets") or {}).values() if isinstance(v, str) and v]


def _set(connection: Connection, name: str) -> bool:
    return name in (connection.secret_fields or []) or (connection.config or {}).get(name) is not None


async def probe_connection(
    http: httpx.AsyncClient,
    runtime: dict[str, Any],
    probe: connection_types.Probe,
    max_bytes: int,
    tokens: TokenCache | None = None,
) -> CheckResult:
    """Send `probe` with the connection's auth and say what the answer means for its status."""
    fields = fields_of(runtime)
    path = str(fields.get("probePath") or probe.path)
    method = "GET" if fields.get("probePath") else probe.method
    any_answer = probe.any_answer and not fields.get("probePath")
    secrets = secret_values(runtime)
    limits = FetchLimits(PROBE_TIMEOUT, min(max_bytes, 64 * 1024 * 1024))
    try:
        url = build_url(fields, path or None, None)
    except ConnectionError_ as error:
        return CheckResult(ConnectionStatus.ERROR, redact_text(str(error), secrets))
    tokens = tokens or TokenCache()
    for attempt in (1, 2):
        try:
            auth = await prepare_auth(http, tokens, runtime, url, limits)
        except ConnectionError_ as error:
            status = ConnectionStatus.NEEDS_RECONNECT if error.kind == NEEDS_RECONNECT else ConnectionStatus.ERROR
            return CheckResult(status, redact_text(str(error), [*secrets, *_runtime_tokens(runtime)]))
        secrets = [*secrets, *auth.secrets]
        try:
            response = await fetch(
                http,
                method,
                url,
                deadline=limits.deadline,
                max_bytes=limits.max_bytes,
                params=auth.params or None,
                headers={**auth.headers, "Accept": "application/json"},
            )
        except EgressRefused as error:
            return CheckResult(ConnectionStatus.ERROR, redact_text(f"not sent: {error}", secrets))
        except DeadlineExceeded:
            return CheckResult(ConnectionStatus.ERROR, f"no answer within {PROBE_TIMEOUT:g}s")
        except ResponseTooLarge as error:
            return CheckResult(ConnectionStatus.ERROR, redact_text(str(error), secrets))
        except httpx.InvalidURL:
            return CheckResult(ConnectionStatus.ERROR, "not a valid URL")
        except httpx.HTTPError as error:
            text = f"cannot connect: {type(error).__name__}: {error}"
            return CheckResult(ConnectionStatus.ERROR, redact_text(text, secrets))
        if response.status_code == 401 and attempt == 1 and _user_authorized(runtime) and tokens.user_tokens:
            # As a step does: an access token that ended early (or was revoked) is refreshed once, and the
            # probe asks again; a refused refresh means only a person can fix it.
            try:
                await tokens.user_tokens.access_token(http, runtime, limits, force=True)
            except ConnectionError_ as error:
                status = ConnectionStatus.NEEDS_RECONNECT if error.kind == NEEDS_RECONNECT else ConnectionStatus.ERROR
                return CheckResult(status, redact_text(str(error), secrets))
            continue
        break

    def said(text: str) -> str:
        return redact_text(text, secrets)

    code = response.status_code
    if code in (401, 403):
        return CheckResult(ConnectionStatus.ERROR, said(f"HTTP {code}: {_provider_message(response)}".rstrip(": ")))
    body = _json(response)
    if 200 <= code < 300 and isinstance(body, dict) and body.get("ok") is False:
        # Slack's Web API answers 200 with {"ok": false, "error": "invalid_auth"}.
        return CheckResult(ConnectionStatus.ERROR, said(f"{body.get('error') or 'refused'}"))
    if 200 <= code < 300 or (any_answer and code < 500):
        return CheckResult(ConnectionStatus.CONNECTED, None)
    return CheckResult(ConnectionStatus.ERROR, said(f"HTTP {code}: {_provider_message(response)}".rstrip(": ")))


def _json(response: FetchedResponse) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _provider_message(response: FetchedResponse) -> str:
    """What the provider said, from the usual JSON error shapes, or the start of its text."""
    body = _json(response)
    if isinstance(body, dict):
        for key in ("error_description", "message", "error", "errorMessages", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, list):
                value = "; ".join(str(item) for item in value[:3])
            if value:
                return str(value)[:200]
    return " ".join(response.text.split())[:200]
