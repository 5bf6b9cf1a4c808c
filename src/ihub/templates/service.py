"""Templates: validation of a definition (connection slots + flows), the inheritance rule, CRUD.

A template belongs to one organization and is usable (readable) there, in every organization below
it, and from below: a caller sees the templates of their own subtree and of their org's ancestors.
Only the subtree is writable, by Owners and Admins.

Every save stores an immutable `TemplateVersion` (1..n; `Template.version` is the latest number and
`Template.definition` a copy of its definition). Projects pin a version and move only by an explicit
upgrade (ihub.projects.service.upgrade_project), so saving a template changes no project.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError, conflict, forbidden, not_found
from ihub.db.unique import name_taken, on_conflict
from ihub.flows.definition import validate_flows
from ihub.templates import connection_types
from ihub.templates.models import Template, TemplateVersion
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal, Role, require_admin
from ihub.tenancy.service import ancestor_ids, visible_org


class TemplateUsers(Protocol):
    """The projects made from templates, which follow a template's changes and keep it from being deleted.

    Dependencies point one way (tenancy <- templates <- projects): templates does not import projects, which
    implements this (the `ihub.projects.service` module itself conforms); the composition root hands it over
    with `use_template_users` (ihub/wiring.py).
    """

    async def count_projects_using_template(self, session: AsyncSession, template_id: int) -> int: ...


_template_users: TemplateUsers | None = None


def use_template_users(users: TemplateUsers) -> None:
    global _template_users
    _template_users = users


def template_users() -> TemplateUsers:
    if _template_users is None:
        # Loud: a template change that projects did not follow would leave them on stale flows and slots.
        raise RuntimeError("templates: TemplateUsers is not wired (ihub.wiring.connect_domains)")
    return _template_users


SLOT_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MAX_SLOTS = 50
DEFINITION_KEYS = {"connections", "flows", "version", "description"}
SLOT_KEYS = {"id", "type", "name", "description", "fields"}


def _invalid(path: str, message: str) -> ApiError:
    return ApiError(400, f"{path}: {message}", "invalid_definition")


# -- definition ----------------------------------------------------------------------------------


def _validate_slot(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid(path, "must be an object {id, type, name, fields}")
    unknown = sorted(set(raw) - SLOT_KEYS)
    if unknown:
        raise _invalid(f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(SLOT_KEYS))})")
    slot_id = raw.get("id")
    if not isinstance(slot_id, str) or not SLOT_ID.match(slot_id):
        raise _invalid(f"{path}.id", "must match [A-Za-z0-9_-]{1,100}")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{path}.type", f"required, one of {', '.join(connection_types.TYPES)}")
    if not connection_types.is_known(kind):
        raise _invalid(f"{path}.type", f"unknown connection type {kind!r}")
    name = raw.get("name", slot_id)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise _invalid(f"{path}.name", "must be a non-empty string of at most 200 characters")
    fields = raw.get("fields", [])
    if not isinstance(fields, list):
        raise _invalid(f"{path}.fields", "must be a list of field names")
    known = connection_types.get_type(kind).field_names
    for index, field in enumerate(fields):
        if field not in known:
            raise _invalid(
                f"{path}.fields[{index}]", f"{field!r} is not a field of type {kind!r} (fields: {', '.join(known)})"
            )
    slot: dict[str, Any] = {"id": slot_id, "type": kind, "name": name.strip(), "fields": list(dict.fromkeys(fields))}
    if "description" in raw:
        if not isinstance(raw["description"], str):
            raise _invalid(f"{path}.description", "must be a string")
        slot["description"] = raw["description"]
    return slot


def validate_definition(definition: Any, path: str = "definition") -> dict[str, Any]:
    """The normalized definition, or ApiError 400 naming the JSON path of the first bad field."""
    if not isinstance(definition, dict):
        raise _invalid(path, "must be an object {connections, flows}")
    unknown = sorted(set(definition) - DEFINITION_KEYS)
    if unknown:
        raise _invalid(f"{path}.{unknown[0]}", "unknown key (allowed: connections, flows, version, description)")
    raw_slots = definition.get("connections")
    raw_slots = [] if raw_slots is None else raw_slots
    if not isinstance(raw_slots, list):
        raise _invalid(f"{path}.connections", "must be a list of connection slots")
    if len(raw_slots) > MAX_SLOTS:
        raise _invalid(f"{path}.connections", f"at most {MAX_SLOTS} connection slots")
    slots: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_slots):
        slot = _validate_slot(raw, f"{path}.connections[{index}]")
        if any(existing["id"] == slot["id"] for existing in slots):
            raise _invalid(f"{path}.connections[{index}].id", f"duplicate connection slot id {slot['id']!r}")
        slots.append(slot)
    flows = validate_flows(definition.get("flows"), {s["id"]: s["type"] for s in slots}, path=f"{path}.flows")
    normalized: dict[str, Any] = {"connections": slots, "flows": flows}
    for key in ("version", "description"):
        if key in definition:
            normalized[key] = definition[key]
    return normalized


def slots_of(template: Template) -> list[dict[str, Any]]:
    return list((template.definition or {}).get("connections") or [])


def flows_of(template: Template) -> list[dict[str, Any]]:
    return list((template.definition or {}).get("flows") or [])


def flow_keys(template: Template) -> list[str]:
    return [flow["key"] for flow in flows_of(template) if isinstance(flow, dict) and "key" in flow]


# -- visibility ----------------------------------------------------------------------------------


async def _org_path(session: AsyncSession, org_id: int) -> str:
    return await session.scalar(select(Organization.path).where(Organization.id == org_id)) or ""


def _readable(principal: Principal, org_id: int, org_path: str) -> bool:
    """In the caller's subtree, or an ancestor of the caller's org (inherited templates)."""
    return principal.sees(org_path) or f"/{org_id}/" in principal.org_path


async def get_template(session: AsyncSession, template_id: int) -> Template | None:
    return await session.get(Template, template_id)


async def readable_template(session: AsyncSession, principal: Principal, template_id: int) -> Template:
    template = await session.get(Template, template_id)
    if template is None or not _readable(principal, template.org_id, await _org_path(session, template.org_id)):
        raise not_found("template", template_id)
    return template


async def writable_template(session: AsyncSession, principal: Principal, template_id: int, action: str) -> Template:
    template = await readable_template(session, principal, template_id)
    if not principal.sees(await _org_path(session, template.org_id)):
        raise forbidden(f"template {template.id} belongs to an organization above yours; it is read-only to you")
    require_admin(principal, action)
    return template


async def can_write(session: AsyncSession, principal: Principal, template: Template) -> bool:
    """May the caller change or delete this template (an Owner or Admin, the template in their subtree)?
    For showing or hiding controls; `writable_template` enforces the same rule."""
    return principal.role is not Role.MEMBER and principal.sees(await _org_path(session, template.org_id))


async def available_in_org(session: AsyncSession, template: Template, org_id: int) -> bool:
    """May a project in `org_id` use this template (it belongs to that org or one of its ancestors)?"""
    return template.org_id in await ancestor_ids(session, org_id)


async def templates_for_org(session: AsyncSession, principal: Principal, org_id: int) -> Sequence[Template]:
    """The org's own templates and those inherited from its ancestors, nearest org first."""
    org = await visible_org(session, principal, org_id)
    chain = await ancestor_ids(session, org.id)
    rows = (await session.scalars(select(Template).where(Template.org_id.in_(chain)))).all()
    depth = {org_id: index for index, org_id in enumerate(chain)}
    return sorted(rows, key=lambda t: (depth[t.org_id], t.name, t.id))


# -- changes -------------------------------------------------------------------------------------


async def _name_taken(session: AsyncSession, org_id: int, name: str, except_id: int | None = None) -> bool:
    return await name_taken(session, Template.org_id, org_id, Template.name, name, except_id)


async def _flush(session: AsyncSession, name: str) -> None:
    on_conflict(session, f"a template named {name!r} already exists in this organization", "name_taken")
    await session.flush()


def _add_version(session: AsyncSession, template: Template, created_by: int | None) -> None:
    """Store the template's current definition as its version `template.version`, in the caller's transaction
    (the unique (template_id, version) is the backstop: a version is never overwritten)."""
    session.add(
        TemplateVersion(
            template_id=template.id,
            version=template.version,
            definition=template.definition,
            created_by=created_by,
        )
    )


async def _insert(
    session: AsyncSession, org_id: int, name: str, description: str, definition: Any, created_by: int | None = None
) -> Template:
    normalized = validate_definition(definition)
    if await _name_taken(session, org_id, name):
        raise conflict(f"organization {org_id} already has a template named {name!r}", "name_taken")
    template = Template(org_id=org_id, name=name, description=description, definition=normalized, version=1)
    session.add(template)
    await _flush(session, name)
    _add_version(session, template, created_by)
    await session.flush()
    await session.refresh(template)
    return template


async def _apply_update(
    session: AsyncSession,
    template: Template,
    name: str | None,
    description: str | None,
    definition: Any | None,
    created_by: int | None = None,
) -> Template:
    if definition is not None:
        normalized = validate_definition(definition)
    if name is not None and name != template.name:
        if await _name_taken(session, template.org_id, name, except_id=template.id):
            raise conflict(f"organization {template.org_id} already has a template named {name!r}", "name_taken")
        template.name = name
    if description is not None:
        template.description = description
    if definition is not None:
        template.definition = normalized
    # Every save is a new version (as before versions were stored), even one that changes only the name or
    # description: a version number always names one stored definition. Projects stay on theirs until upgraded.
    await _flush(session, template.name)
    # Incremented by the database, not from the value read earlier: two saves racing on PostgreSQL get
    # consecutive numbers (the second waits for the first's row lock) instead of the same one.
    bumped = await session.execute(
        update(Template)
        .where(Template.id == template.id)
        .values(version=Template.version + 1)
        .returning(Template.version)
        .execution_options(synchronize_session=False)
    )
    template.version = bumped.scalar_one()
    _add_version(session, template, created_by)
    await session.flush()
    await session.refresh(template)
    return template


async def create_template(
    session: AsyncSession, principal: Principal, org_id: int, name: str, description: str, definition: Any
) -> Template:
    org = await visible_org(session, principal, org_id)
    require_admin(principal, "create templates")
    return await _insert(session, org.id, name, description, definition, principal.user_id)


async def update_template(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    name: str | None,
    description: str | None,
    definition: Any | None,
) -> Template:
    template = await writable_template(session, principal, template_id, "change templates")
    return await _apply_update(session, template, name, description, definition, principal.user_id)


async def delete_template(session: AsyncSession, principal: Principal, template_id: int) -> Template:
    template = await writable_template(session, principal, template_id, "delete templates")
    used_by = await template_users().count_projects_using_template(session, template.id)
    if used_by:
        raise conflict(
            f"template {template.id} is used by {used_by} project(s); delete or move them first", "template_in_use"
        )
    # Its versions go with it (ON DELETE CASCADE): no project pins one, since none uses the template.
    await session.delete(template)
    await session.flush()
    return template


async def import_template(
    session: AsyncSession, org_id: int, name: str, description: str | None, definition: Any
) -> tuple[Template, bool]:
    """The operator's `ihub template import`: create, or update the template of that name in the org.
    Returns (template, created)."""
    if await session.get(Organization, org_id) is None:
        raise not_found("organization", org_id)
    existing = await session.scalar(select(Template).where(Template.org_id == org_id, Template.name == name))
    if existing is None:
        return await _insert(session, org_id, name, description or "", definition), True
    return await _apply_update(session, existing, None, description, definition), False


async def import_template_as(
    session: AsyncSession, principal: Principal, org_id: int, name: str, description: str | None, definition: Any
) -> tuple[Template, bool]:
    """`import_template` on behalf of a signed-in Owner or Admin (the console's upload): create the template in
    an org of their subtree, or update the one of that name there. Returns (template, created)."""
    org = await visible_org(session, principal, org_id)
    require_admin(principal, "import templates")
    existing = await session.scalar(select(Template).where(Template.org_id == org.id, Template.name == name))
    if existing is None:
        return await create_template(session, principal, org.id, name, description or "", definition), True
    return await update_template(session, principal, existing.id, None, description, definition), False


def template_document(data: Any, source: str) -> dict[str, Any]:
    """A template file's content (YAML or JSON, already parsed): `{name, description, definition}` checked at the
    top level; the definition itself is checked when it is stored. ValueError naming `source` otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with name, description and definition")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise ValueError(f"{source}: name: required, a non-empty string of at most 200 characters")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise ValueError(f"{source}: description: must be a string")
    if "definition" not in data:
        raise ValueError(f"{source}: definition: required ({{connections, flows}})")
    return {"name": name.strip(), "description": description, "definition": data["definition"]}


# -- versions ------------------------------------------------------------------------------------


def definition_flow_keys(definition: dict[str, Any] | None) -> list[str]:
    flows = (definition or {}).get("flows") or []
    return [flow["key"] for flow in flows if isinstance(flow, dict) and "key" in flow]


async def find_version(session: AsyncSession, template_id: int, version: int | None = None) -> TemplateVersion | None:
    """Version `version` of a template (its latest when None), or None when there is no such version."""
    query = select(TemplateVersion).where(TemplateVersion.template_id == template_id)
    if version is None:
        query = query.order_by(TemplateVersion.version.desc()).limit(1)
    else:
        query = query.where(TemplateVersion.version == version)
    return await session.scalar(query)


async def version_definition(session: AsyncSession, template_id: int, version: int) -> dict[str, Any] | None:
    definition = await session.scalar(
        select(TemplateVersion.definition).where(
            TemplateVersion.template_id == template_id, TemplateVersion.version == version
        )
    )
    return dict(definition) if definition is not None else None


async def list_versions(session: AsyncSession, principal: Principal, template_id: int) -> Sequence[TemplateVersion]:
    """Every version of a template the caller may read, oldest first."""
    template = await readable_template(session, principal, template_id)
    query = select(TemplateVersion).where(TemplateVersion.template_id == template.id).order_by(TemplateVersion.version)
    return (await session.scalars(query)).all()


async def readable_version(
    session: AsyncSession, principal: Principal, template_id: int, version: int
) -> TemplateVersion:
    template = await readable_template(session, principal, template_id)
    found = await find_version(session, template.id, version)
    if found is None:
        raise ApiError(404, f"template {template.id} has no version {version}", "not_found")
    return found
