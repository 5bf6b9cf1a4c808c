"""Projects and their connections.

A project is made from a template visible from its org (the org's own or an ancestor's) and is pinned
to one of the template's versions (the latest when created). It gets one connection per slot and one
flow row per flow key of that version; saving the template changes no project, `upgrade_project` moves
one to another version (up or down) and re-syncs its flows and connections. Connection secrets are
sealed with AES-GCM (bound to the connection's id) and leave this module only through
`connection_runtime`, for the flow engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.crypto import SecretBox
from ihub.common.errors import ApiError, bad_request, conflict, not_found
from ihub.db.base import utcnow
from ihub.db.unique import name_taken, on_conflict
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.flows.models import Flow
from ihub.projects.models import Connection, Project
from ihub.projects.schemas import (
    ConnectionOut,
    FlowOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    TemplateConnectionOut,
)
from ihub.runs.models import Run
from ihub.templates import connection_types
from ihub.templates import service as templates
from ihub.templates.models import Template, TemplateVersion
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal
from ihub.tenancy.service import visible_org

if TYPE_CHECKING:
    from ihub.common.context import AppContext


async def count_projects_in_org(session: AsyncSession, org_id: int) -> int:
    return await session.scalar(select(func.count()).select_from(Project).where(Project.org_id == org_id)) or 0


async def count_projects_using_template(session: AsyncSession, template_id: int) -> int:
    query = select(func.count()).select_from(Project).where(Project.template_id == template_id)
    return await session.scalar(query) or 0


async def templates_stranded_by_move(session: AsyncSession, subtree_prefix: str, new_parent_path: str) -> list[int]:
    """Projects in a subtree being moved may only keep templates that stay in their ancestry: inside the
    subtree itself or above the new parent. Returns the ids of the projects that would lose theirs."""
    from ihub.tenancy.models import Organization

    project_org = Organization.__table__.alias("project_org")
    template_org = Organization.__table__.alias("template_org")
    rows = await session.execute(
        select(Project.id, template_org.c.path)
        .join(project_org, project_org.c.id == Project.org_id)
        .join(Template, Template.id == Project.template_id)
        .join(template_org, template_org.c.id == Template.org_id)
        .where(project_org.c.path.startswith(subtree_prefix))
    )
    return [
        project_id
        for project_id, template_path in rows
        if not template_path.startswith(subtree_prefix) and not new_parent_path.startswith(template_path)
    ]


def seal_context(connection: Connection) -> str:
    return f"connection:{connection.id}"


# -- reading -------------------------------------------------------------------------------------


async def visible_project(session: AsyncSession, principal: Principal, project_id: int) -> Project:
    row = (
        await session.execute(
            select(Project, Organization.path)
            .join(Organization, Organization.id == Project.org_id)
            .where(Project.id == project_id)
        )
    ).first()
    if row is None or not principal.sees(row.path):
        raise not_found("project", project_id)
    project, _path = row  # unpacking keeps the Row's column types; row.Project would be Any
    return project


async def list_projects(session: AsyncSession, principal: Principal, org_id: int) -> Sequence[Project]:
    org = await visible_org(session, principal, org_id)
    return (await session.scalars(select(Project).where(Project.org_id == org.id).order_by(Project.id))).all()


def _slots(definition: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((definition or {}).get("connections") or [])


def _slot_map(definition: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {slot["id"]: slot for slot in _slots(definition)}


async def pinned_definition(session: AsyncSession, project: Project) -> dict[str, Any] | None:
    """The definition of the template version the project is pinned to."""
    return await templates.version_definition(session, project.template_id, project.template_version)


def _missing(connection: Connection, slot: dict[str, Any] | None) -> list[str]:
    # Presence is all that matters here, so secrets are not decrypted: their names are enough.
    present = dict.fromkeys(connection.secret_fields or [], True)
    extra = tuple(slot.get("fields") or ()) if slot else ()
    return connection_types.missing_required(connection.type, connection.config or {}, present, extra)


def _connection_out(connection: Connection | None, slot: dict[str, Any]) -> ConnectionOut:
    if connection is None or connection.type != slot["type"]:
        missing = connection_types.missing_required(slot["type"], {}, {}, tuple(slot.get("fields") or ()))
        return ConnectionOut(
            id=slot["id"],
            type=slot["type"],
            name=slot["name"],
            configured=False,
            config={},
            secrets_set=[],
            missing=missing,
        )
    missing = _missing(connection, slot)
    return ConnectionOut(
        id=slot["id"],
        type=connection.type,
        name=slot["name"],
        configured=not missing,
        config=dict(connection.config or {}),
        secrets_set=sorted(connection.secret_fields or []),
        missing=missing,
        status=connection.status,
        status_message=connection.status_message,
        last_refreshed_at=connection.last_refreshed_at,
        last_used_at=connection.last_used_at,
    )


async def project_views(session: AsyncSession, projects: Sequence[Project]) -> list[ProjectOut]:
    """The API shape of each project: its template's slots, its connections (no secrets) and flows."""
    if not projects:
        return []
    ids = [p.id for p in projects]
    pins = {(p.template_id, p.template_version) for p in projects}
    version_rows = await session.execute(
        select(TemplateVersion.template_id, TemplateVersion.version, TemplateVersion.definition).where(
            or_(*(and_(TemplateVersion.template_id == t, TemplateVersion.version == v) for t, v in pins))
        )
    )
    by_pin = {(template_id, version): definition for template_id, version, definition in version_rows.all()}
    connections: dict[int, dict[str, Connection]] = {}
    for row in (await session.scalars(select(Connection).where(Connection.project_id.in_(ids)))).all():
        connections.setdefault(row.project_id, {})[row.slot_id] = row
    flows: dict[int, list[Flow]] = {}
    flow_rows = await session.scalars(
        select(Flow).where(Flow.project_id.in_(ids), Flow.active.is_(True)).order_by(Flow.id)
    )
    for flow in flow_rows.all():
        flows.setdefault(flow.project_id, []).append(flow)
    views = []
    for project in projects:
        definition = by_pin.get((project.template_id, project.template_version))
        slots = _slots(definition)
        specs = {spec["key"]: spec for spec in (definition or {}).get("flows") or []}
        own = connections.get(project.id, {})
        flow_views = []
        for flow in flows.get(project.id, []):
            spec = specs.get(flow.key)
            if spec is None:
                continue
            flow_views.append(
                FlowOut(
                    id=flow.id,
                    key=flow.key,
                    name=spec.get("name", flow.key),
                    trigger=spec.get("trigger") or {},
                    mode=spec.get("mode", "async"),
                )
            )
        views.append(
            ProjectOut(
                id=project.id,
                name=project.name,
                description=project.description or "",
                org_id=project.org_id,
                template_id=project.template_id,
                template_version=project.template_version,
                settings=dict(project.settings or {}),
                template_connections=[
                    TemplateConnectionOut(
                        id=s["id"], type=s["type"], name=s["name"], fields=list(s.get("fields") or [])
                    )
                    for s in slots
                ],
                connections=[_connection_out(own.get(s["id"]), s) for s in slots],
                flows=flow_views,
                created_at=project.created_at,
                updated_at=project.updated_at,
            )
        )
    return views


# -- changes -------------------------------------------------------------------------------------


async def _name_taken(session: AsyncSession, org_id: int, name: str, except_id: int | None = None) -> bool:
    return await name_taken(session, Project.org_id, org_id, Project.name, name, except_id)


async def _flush(session: AsyncSession, name: str) -> None:
    on_conflict(session, f"a project named {name!r} already exists in this organization", "name_taken")
    await session.flush()


async def create_project(session: AsyncSession, principal: Principal, org_id: int, data: ProjectCreate) -> Project:
    """Any role may create projects in its subtree."""
    org = await visible_org(session, principal, org_id)
    template = await templates.get_template(session, data.template_id)
    if template is None:
        raise not_found("template", data.template_id)
    if not await templates.available_in_org(session, template, org.id):
        # Whether the caller may know of it or not, it is not usable here: say so without details.
        readable = True
        try:
            await templates.readable_template(session, principal, template.id)
        except ApiError:
            readable = False
        if not readable:
            raise not_found("template", data.template_id)
        raise bad_request(
            f"templateId: template {template.id} belongs to organization {template.org_id}, which is not "
            f"organization {org.id} or one of its ancestors",
            "template_not_available",
        )
    if await _name_taken(session, org.id, data.name):
        raise conflict(f"organization {org.id} already has a project named {data.name!r}", "name_taken")
    latest = await templates.find_version(session, template.id)
    if latest is None:  # every save stores a version; only a row written around the service lacks one
        raise conflict(f"template {template.id} has no stored version", "template_without_version")
    project = Project(
        org_id=org.id,
        template_id=template.id,
        template_version=latest.version,
        name=data.name,
        description=data.description,
        settings=data.settings or {},
    )
    session.add(project)
    await _flush(session, data.name)
    await _sync_project(session, project, latest.definition)
    await session.flush()
    await session.refresh(project)
    await outbox.emit_for_org(session, EventType.PROJECT_CREATED, org.id, _project_event(project, principal))
    return project


def _project_event(project: Project, principal: Principal) -> dict[str, Any]:
    return {
        "projectId": str(project.id),
        "orgId": str(project.org_id),
        "name": project.name,
        "templateId": str(project.template_id),
        "byUserId": str(principal.user_id),
    }


def _parse_connection_entries(
    entries: list[Any], slots: dict[str, dict[str, Any]], project_id: int
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """[(slot, config changes, secret changes)] for each entry; 400 naming the entry's index on the first error.

    An entry is `{"id": slot, "details": {"type": ..., fields}}` (the seed's sample client) or
    `{"id": slot, "type": ..., fields}`; both forms may be mixed, `details` winning.
    """
    parsed = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"connections[{index}]"
        if not isinstance(entry, dict):
            raise bad_request(f"{where}: must be an object {{id, details: {{type, ...fields}}}}", "invalid_connection")
        slot_id = entry.get("id")
        if isinstance(slot_id, int) and not isinstance(slot_id, bool):
            slot_id = str(slot_id)
        if not isinstance(slot_id, str) or not slot_id:
            raise bad_request(
                f"{where}.id: required, the id of one of the template's connections", "invalid_connection"
            )
        slot = slots.get(slot_id)
        if slot is None:
            known = ", ".join(repr(s) for s in slots) or "none"
            raise bad_request(
                f"{where}.id: project {project_id} has no connection {slot_id!r} (its template's connections: {known})",
                "unknown_connection",
            )
        if slot_id in seen:
            raise bad_request(f"{where}.id: connection {slot_id!r} appears twice in this request", "invalid_connection")
        seen.add(slot_id)
        details = entry.get("details")
        if details is not None and not isinstance(details, dict):
            raise bad_request(f"{where}.details: must be an object {{type, ...fields}}", "invalid_connection")
        config: dict[str, Any] = {}
        secrets: dict[str, Any] = {}
        sources = [(where, {k: v for k, v in entry.items() if k not in ("id", "details")})]
        if details is not None:
            sources.append((f"{where}.details", details))
        for path, values in sources:
            values = dict(values)
            kind = values.pop("type", None)
            if kind is not None and kind != slot["type"]:
                raise bad_request(
                    f"{path}.type: connection {slot_id!r} has type {slot['type']!r} in the template, not {kind!r}",
                    "connection_type_mismatch",
                )
            values.pop("name", None)  # the slot's name comes from the template; echoing it back is harmless
            more_config, more_secrets = connection_types.validate_fields(slot["type"], values, path)
            config.update(more_config)
            secrets.update(more_secrets)
        parsed.append((slot, config, secrets))
    return parsed


def _merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


# Sealed payload: {"format": 2, "target": <where the secrets go>, "secrets": {...}}. The target is inside the
# authenticated ciphertext, so editing the row's config (or any other column) cannot move the secrets elsewhere.
# Format 1 (before binding) is the bare secrets object; it is bound to the row's target when next written.
SEALED_FORMAT = 2


def _open_sealed(box: SecretBox, connection: Connection) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(secrets, the target they were entered for); the target is None for a format-1 payload."""
    if not connection.secrets_sealed:
        return {}, None
    payload = json.loads(box.open(connection.secrets_sealed, seal_context(connection)))
    if isinstance(payload, dict) and payload.get("format") == SEALED_FORMAT:
        return dict(payload["secrets"]), dict(payload["target"])
    return dict(payload), None


def _store_secrets(box: SecretBox, connection: Connection, secrets: dict[str, Any]) -> None:
    """Seal `secrets` bound to the connection's current target (its config must already be set)."""
    secrets = {name: value for name, value in secrets.items() if value is not None}
    payload = {
        "format": SEALED_FORMAT,
        "target": connection_types.target(connection.type, connection.config or {}, secrets),
        "secrets": secrets,
    }
    connection.secrets_sealed = box.seal(json.dumps(payload), seal_context(connection)) if secrets else None
    connection.secret_fields = sorted(secrets)


def _update_connection(box: SecretBox, connection: Connection, config: dict[str, Any], secrets: dict[str, Any]) -> None:
    """Apply one request's changes to a connection. Credential binding: when the change moves the connection's
    target (`connection_types.target`: base URL, token URL, auth placement), no stored secret is kept; only the
    secrets given in this same request are, bound to the new target. Who may do this is who may edit the
    project (any role in its subtree): a new target can be entered, an old secret can never be carried to it."""
    try:
        stored, bound_to = _open_sealed(box, connection)
    except ValueError:
        stored, bound_to = {}, None  # unreadable with this key: useless anyway, and replaced below
    current_config = connection.config or {}
    before = bound_to if bound_to is not None else connection_types.target(connection.type, current_config, stored)
    merged_config = _merge(current_config, config)
    merged_secrets = _merge(stored, secrets)
    if connection_types.target(connection.type, merged_config, merged_secrets) != before:
        merged_secrets = {name: value for name, value in secrets.items() if value is not None}
    connection.config = merged_config
    _store_secrets(box, connection, merged_secrets)


async def _connection_rows(session: AsyncSession, project_id: int) -> dict[str, Connection]:
    rows = await session.scalars(select(Connection).where(Connection.project_id == project_id))
    return {row.slot_id: row for row in rows.all()}


async def update_project(
    session: AsyncSession, box: SecretBox, principal: Principal, project_id: int, data: ProjectUpdate
) -> Project:
    """Rename, describe, set settings, fill in connections: all checked before anything is written."""
    project = await visible_project(session, principal, project_id)
    definition = await pinned_definition(session, project)
    parsed = _parse_connection_entries(data.connections or [], _slot_map(definition), project.id)
    if data.name is not None and data.name != project.name:
        if await _name_taken(session, project.org_id, data.name, except_id=project.id):
            raise conflict(f"organization {project.org_id} already has a project named {data.name!r}", "name_taken")
        project.name = data.name
    if data.description is not None:
        project.description = data.description
    if data.settings is not None:
        project.settings = data.settings
    if parsed:
        rows = await _connection_rows(session, project.id)
        for slot, config, secrets in parsed:
            connection = rows.get(slot["id"])
            if connection is None:
                connection = Connection(project_id=project.id, slot_id=slot["id"], type=slot["type"], config={})
                session.add(connection)
                await session.flush()  # its id is part of the sealing context
            _update_connection(box, connection, config, secrets)
            connection.configured = not _missing(connection, slot)
    # Touch the row so updated_at moves even when only connections changed.
    project.updated_at = utcnow()
    await _flush(session, project.name)
    await session.refresh(project)
    return project


async def delete_project(session: AsyncSession, principal: Principal, project_id: int) -> ProjectOut:
    """Delete a project with its connections and flows; returns how it looked."""
    project = await visible_project(session, principal, project_id)
    (view,) = await project_views(session, [project])
    data = _project_event(project, principal)
    await _lock_runs(session, project.id)
    # The database cascades to connections, flows and their runs.
    await session.execute(delete(Project).where(Project.id == project.id))
    await outbox.emit_for_org(session, EventType.PROJECT_DELETED, project.org_id, data)
    return view


async def _lock_runs(session: AsyncSession, project_id: int) -> None:
    """Lock the project's runs in id order before the cascade deletes them. The engine locks the runs of a
    batch of claims or finishes in id order too (flows.engine.Engine); the cascade alone locks them in index
    order, and on PostgreSQL a delete racing a batch that finished two of its runs deadlocked (one side aborted,
    a 503 to the client). SQLite: a no-op, its one write lock already orders transactions."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(Run.id).where(Run.project_id == project_id).order_by(Run.id).with_for_update())


# -- following the template ----------------------------------------------------------------------


async def _sync_project(session: AsyncSession, project: Project, definition: dict[str, Any]) -> None:
    """Flow rows for the pinned version's flow keys (inactive for keys it lacks) and a connection per slot.
    Connections of slots the version lacks are kept (unused): a downgrade followed by an upgrade finds them."""
    await sync_project_flows(session, project.id, templates.definition_flow_keys(definition))
    rows = await _connection_rows(session, project.id)
    for slot in _slots(definition):
        connection = rows.get(slot["id"])
        if connection is None:
            session.add(
                Connection(project_id=project.id, slot_id=slot["id"], type=slot["type"], config={}, configured=False)
            )
            continue
        if connection.type != slot["type"]:
            # A different type means different fields: the old values mean nothing for it.
            connection.type = slot["type"]
            connection.config = {}
            connection.secrets_sealed = None
            connection.secret_fields = []
        connection.configured = not _missing(connection, slot)
    await session.flush()


async def sync_project_flows(session: AsyncSession, project_id: int, keys: Sequence[str]) -> None:
    """Add flow rows for new keys, deactivate rows of removed keys, reactivate re-added ones.
    Rows are never deleted: run history points at them."""
    rows = {flow.key: flow for flow in (await session.scalars(select(Flow).where(Flow.project_id == project_id)))}
    wanted = set(keys)
    for key in keys:
        row = rows.get(key)
        if row is None:
            session.add(Flow(project_id=project_id, key=key, active=True))
        elif not row.active:
            row.active = True
    for key, row in rows.items():
        if key not in wanted and row.active:
            row.active = False
    await session.flush()


async def pin_version(session: AsyncSession, project: Project, version: int | None) -> Project:
    """Pin the project to `version` of its template (the latest when None), up or down, and re-sync its flows
    and connections to that version. 404 when the template has no such version."""
    target = await templates.find_version(session, project.template_id, version)
    if target is None:
        wanted = "any version" if version is None else f"version {version}"
        raise ApiError(404, f"template {project.template_id} has no {wanted}", "version_not_found")
    project.template_version = target.version
    await _sync_project(session, project, target.definition)
    project.updated_at = utcnow()
    await session.flush()
    await session.refresh(project)
    return project


async def upgrade_project(session: AsyncSession, principal: Principal, project_id: int, version: int | None) -> Project:
    """Move a project to another version of its template. Allowed to whoever may edit the project (any role
    in its subtree, like PUT /project): choosing the version is configuring the project, as is filling in
    its connections. Runs already started keep the version they recorded."""
    project = await visible_project(session, principal, project_id)
    return await pin_version(session, project, version)


async def upgrade_and_refresh(
    session: AsyncSession, context: AppContext, principal: Principal, project_id: int, version: int | None
) -> Project:
    """`upgrade_project`, then drop this process's cached webhook client state so the next webhook run starts on
    the new version here (other processes follow within the cache's TTL). What `/api/v1` and the console call."""
    from ihub.incoming.access import incoming_state  # incoming is wired above projects; imported on use

    project = await upgrade_project(session, principal, project_id, version)
    incoming_state(context).clients.invalidate()
    return project


# -- for the flow engine -------------------------------------------------------------------------


async def connection_runtime(session: AsyncSession, box: SecretBox, project_id: int, slot_id: str) -> dict[str, Any]:
    """`{"type": "http", "sourceType", "config", "secrets"}` of a project's connection, decrypted and
    expanded to plain `http`; ApiError 400 when the connection is unknown or not configured."""
    project = await session.get(Project, project_id)
    connection = await session.scalar(
        select(Connection).where(Connection.project_id == project_id, Connection.slot_id == slot_id)
    )
    definition = await pinned_definition(session, project) if project else None
    slot = _slot_map(definition).get(slot_id)
    if project is None or connection is None or slot is None or connection.type != slot["type"]:
        raise ApiError(400, f"project {project_id} has no connection {slot_id!r}", "unknown_connection")
    missing = _missing(connection, slot)
    if missing:
        raise ApiError(
            400,
            f"connection {slot_id!r} of project {project_id} is not configured: missing {', '.join(missing)}",
            "connection_not_configured",
        )
    try:
        secrets, bound_to = _open_sealed(box, connection)
    except ValueError as error:
        raise ApiError(
            400, f"connection {slot_id!r} of project {project_id}: {error}", "connection_unreadable"
        ) from None
    if bound_to is not None:
        now = connection_types.target(connection.type, connection.config or {}, secrets)
        if now != bound_to:
            # Only a write that bypassed update_project gets here: refuse rather than follow it.
            moved = sorted(name for name in {*now, *bound_to} if now.get(name) != bound_to.get(name))
            raise ApiError(
                400,
                f"connection {slot_id!r} of project {project_id}: its secrets were entered for another target "
                f"(changed: {', '.join(moved)}); enter them again",
                "connection_target_changed",
            )
    config, secrets = connection_types.expand(connection.type, connection.config or {}, secrets)
    # Which row the tokens come from, for a connection whose tokens the engine refreshes (ihub.oauth.refresh).
    ref = {"projectId": project_id, "slot": slot_id}
    return {"type": "http", "sourceType": connection.type, "config": config, "secrets": secrets, "ref": ref}


async def project_settings(session: AsyncSession, project_id: int) -> dict[str, Any]:
    """The project's settings (`config` in flow expressions); {} for an unknown project."""
    project = await session.get(Project, project_id)
    return dict(project.settings or {}) if project else {}


# -- for connections a person authorizes (ihub.oauth) -----------------------------------------------------


async def pinned_slot(session: AsyncSession, project: Project, slot_id: str) -> dict[str, Any] | None:
    """The slot `slot_id` of the template version the project is pinned to; None when it has none."""
    return _slot_map(await pinned_definition(session, project)).get(slot_id)


async def connection_row(
    session: AsyncSession, project_id: int, slot_id: str, *, lock: bool = False
) -> Connection | None:
    """The connection row; with `lock`, `SELECT ... FOR UPDATE` (PostgreSQL's row lock; on SQLite the write
    transaction the session already holds serializes writers, and the clause is left out)."""
    query = select(Connection).where(Connection.project_id == project_id, Connection.slot_id == slot_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


def obtained_secrets(box: SecretBox, connection: Connection) -> dict[str, Any]:
    """The connection's stored secrets, decrypted (for the refresh that replaces its tokens); {} if unreadable."""
    try:
        secrets, _ = _open_sealed(box, connection)
    except ValueError:
        return {}
    return secrets


def store_obtained(box: SecretBox, connection: Connection, values: dict[str, Any], slot: dict[str, Any]) -> None:
    """Store what Connect or a refresh obtained (tokens) beside the connection's other secrets, bound to its
    current target like any secret. A None value removes the field."""
    merged = _merge(obtained_secrets(box, connection), values)
    _store_secrets(box, connection, merged)
    connection.configured = not _missing(connection, slot)
    # updated_at moves (onupdate) with the sealed column: the runtime cache's stamp sees the new tokens.
    connection.updated_at = utcnow()
