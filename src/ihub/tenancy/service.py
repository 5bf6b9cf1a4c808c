"""Organizations and users: the tree, the subtree rule and the all-or-nothing bulk create."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError, bad_request, conflict, forbidden, not_found
from ihub.db.unique import name_taken, on_conflict
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.tenancy.models import Organization, User
from ihub.tenancy.permissions import (
    Principal,
    Role,
    require_owner,
    require_user_manager,
)
from ihub.tenancy.schemas import OrgCreate, OrgUpdate, UserCreate, UserUpdate

ROOT_ORG_ID = 1


class OrgContents(Protocol):
    """What the domains above tenancy keep in an organization, asked before one is moved or deleted.

    Dependencies point one way (tenancy <- templates <- projects): tenancy does not import projects, which
    implements this (the `ihub.projects.service` module itself conforms); the composition root hands it over
    with `use_org_contents` (ihub/wiring.py).
    """

    async def count_projects_in_org(self, session: AsyncSession, org_id: int) -> int: ...

    async def templates_stranded_by_move(
        self, session: AsyncSession, subtree_prefix: str, new_parent_path: str
    ) -> list[int]: ...


_org_contents: OrgContents | None = None


def use_org_contents(contents: OrgContents) -> None:
    global _org_contents
    _org_contents = contents


def org_contents() -> OrgContents:
    if _org_contents is None:
        # Loud: a move or delete that skipped the project checks would strand or drop projects.
        raise RuntimeError("tenancy: OrgContents is not wired (ihub.wiring.connect_domains)")
    return _org_contents


# -- organizations -------------------------------------------------------------------------------


async def get_org(session: AsyncSession, org_id: int) -> Organization | None:
    return await session.get(Organization, org_id)


async def lock_org_for_limit(session: AsyncSession, org_id: int) -> None:
    """Serialize "count, then add if under the limit" per organization: two concurrent creations cannot both
    pass a per-organization limit (PostgreSQL; SQLite serializes writing transactions anyway). FOR NO KEY UPDATE,
    not FOR UPDATE: it excludes another such lock but not the foreign-key checks of rows added to the
    organization meanwhile (a project, a user)."""
    await session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update(key_share=True))


def tenant_prefix(path: str) -> tuple[int, str | None]:
    """The tenant an organization belongs to, for limits that must hold per tenant: the organization directly
    under the root that `path` lies in, with its subtree's path prefix (the root alone: its id, None). A tenant's
    Owner may add sub-organizations at will, so a limit per organization would be one per sub-organization."""
    ids = path.strip("/").split("/")
    if len(ids) == 1:
        return int(ids[0]), None
    return int(ids[1]), f"/{ids[0]}/{ids[1]}/"


async def visible_org(session: AsyncSession, principal: Principal, org_id: int) -> Organization:
    org = await session.get(Organization, org_id)
    if org is None or not principal.sees(org.path):
        raise not_found("organization", org_id)
    return org


async def ancestor_ids(session: AsyncSession, org_id: int) -> list[int]:
    """The org itself and every ancestor, nearest first."""
    org = await session.get(Organization, org_id)
    if org is None:
        return []
    return [int(part) for part in reversed(org.path.strip("/").split("/"))]


async def list_orgs(session: AsyncSession, principal: Principal) -> Sequence[Organization]:
    result = await session.scalars(
        select(Organization).where(Organization.path.startswith(principal.org_path)).order_by(Organization.id)
    )
    return result.all()


async def _name_taken(session: AsyncSession, parent_id: int | None, name: str, except_id: int | None = None) -> bool:
    return await name_taken(session, Organization.parent_id, parent_id, Organization.name, name, except_id)


async def create_org(session: AsyncSession, principal: Principal, data: OrgCreate) -> Organization:
    # Visibility first, as everywhere: a parent outside the subtree is 404 whatever the caller's role.
    parent = await visible_org(session, principal, data.parent_id or principal.org_id)
    require_owner(principal, "create organizations")
    if await _name_taken(session, parent.id, data.name):
        raise conflict(f"organization {parent.id} already has a sub-organization named {data.name!r}")
    on_conflict(session, f"organization {parent.id} already has a sub-organization named {data.name!r}")
    org = Organization(name=data.name, parent_id=parent.id, path="")
    session.add(org)
    # The id is needed for the path; a concurrent twin can already violate (parent_id, name) here.
    await session.flush()
    org.path = f"{parent.path}{org.id}/"
    await session.flush()
    return org


async def update_org(session: AsyncSession, principal: Principal, org_id: int, data: OrgUpdate) -> Organization:
    org = await visible_org(session, principal, org_id)
    require_owner(principal, "change organizations")
    name = data.name if data.name is not None else org.name
    new_parent: Organization | None = None
    if data.parent_id is not None and data.parent_id != org.parent_id:
        if org.parent_id is None:
            raise bad_request("the root organization cannot be moved")
        new_parent = await visible_org(session, principal, data.parent_id)
        if new_parent.path.startswith(org.path):
            raise bad_request(f"moving organization {org.id} under {new_parent.id} would create a cycle", "cycle")
        stranded = await org_contents().templates_stranded_by_move(session, org.path, new_parent.path)
        if stranded:
            raise conflict(
                f"projects {', '.join(map(str, stranded))} use templates that would no longer be inherited "
                f"under organization {new_parent.id}; move or re-create them first",
                "in_use",
            )
    parent_id = new_parent.id if new_parent is not None else org.parent_id
    # Checked before anything is written, so a refused request leaves nothing behind in the transaction.
    if await _name_taken(session, parent_id, name, except_id=org.id):
        raise conflict(f"organization {parent_id} already has a sub-organization named {name!r}")
    if new_parent is not None:
        # The org and every descendant swap the old path prefix for the new one, in one statement.
        old_prefix, new_prefix = org.path, f"{new_parent.path}{org.id}/"
        await session.execute(
            update(Organization)
            .where(Organization.path.startswith(old_prefix))
            .values(path=new_prefix + func.substr(Organization.path, len(old_prefix) + 1))
            .execution_options(synchronize_session=False)
        )
        org.path = new_prefix
    org.name, org.parent_id = name, parent_id
    on_conflict(session, f"an organization named {name!r} already exists there")
    await session.flush()
    await session.refresh(org)
    return org


async def delete_org(session: AsyncSession, principal: Principal, org_id: int, cascade: bool) -> Organization:
    org = await visible_org(session, principal, org_id)
    require_owner(principal, "delete organizations")
    if org.parent_id is None:
        raise forbidden("the root organization cannot be deleted")
    if org.id == principal.org_id:
        raise forbidden("you cannot delete your own organization")
    if not cascade:
        contents = {
            "sub-organizations": await session.scalar(
                select(func.count()).select_from(Organization).where(Organization.parent_id == org.id)
            ),
            "users": await session.scalar(select(func.count()).select_from(User).where(User.org_id == org.id)),
            "projects": await org_contents().count_projects_in_org(session, org.id),
        }
        held = [f"{count} {what}" for what, count in contents.items() if count]
        if held:
            raise conflict(
                f"organization {org.id} still has {', '.join(held)}; delete them first or pass ?cascade=true",
                "not_empty",
            )
    # One statement for the whole subtree: foreign keys cascade to users, templates, projects and
    # everything below them, and the parent links are checked once the statement is done.
    # Something outside the subtree may still point into it (say a project, moved elsewhere, whose template
    # lives here); the database refuses, and so do we, without a 500.
    on_conflict(
        session, f"organization {org.id} cannot be deleted: something outside it still refers to its contents", "in_use"
    )
    await session.execute(
        delete(Organization).where(Organization.path.startswith(org.path)).execution_options(synchronize_session=False)
    )
    return org


async def ensure_root(session: AsyncSession, name: str = "Root") -> tuple[Organization, bool]:
    root = await session.get(Organization, ROOT_ORG_ID)
    if root is not None:
        return root, False
    root = Organization(id=ROOT_ORG_ID, name=name, parent_id=None, path=f"/{ROOT_ORG_ID}/")
    session.add(root)
    await session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # An explicit id does not advance PostgreSQL's sequence; without this the next org would get id 1 too.
        await session.execute(
            text("SELECT setval(pg_get_serial_sequence('organizations', 'id'), (SELECT MAX(id) FROM organizations))")
        )
    return root, True


# -- users ---------------------------------------------------------------------------------------


async def visible_user(session: AsyncSession, principal: Principal, user_id: int) -> User:
    row = (
        await session.execute(
            select(User, Organization.path).join(Organization, Organization.id == User.org_id).where(User.id == user_id)
        )
    ).first()
    if row is None or not principal.sees(row.path):
        raise not_found("user", user_id)
    user, _path = row  # unpacking keeps the Row's column types; row.User would be Any
    return user


async def list_users(session: AsyncSession, principal: Principal, org_id: int) -> Sequence[User]:
    org = await visible_org(session, principal, org_id)
    return (await session.scalars(select(User).where(User.org_id == org.id).order_by(User.id))).all()


async def _emails_taken(session: AsyncSession, emails: list[str]) -> set[str]:
    if not emails:
        return set()
    return set((await session.scalars(select(User.email).where(User.email.in_(emails)))).all())


async def create_users(
    session: AsyncSession, principal: Principal, org_id: int, entries: list[UserCreate]
) -> list[User]:
    """All or nothing: the first bad entry (by index) refuses the whole request."""
    org = await visible_org(session, principal, org_id)
    if not entries:
        raise bad_request("send at least one user")
    for index, entry in enumerate(entries):
        try:
            require_user_manager(principal, entry.role, "create")
        except ApiError as error:
            error.message = f"users[{index}].role: {error.message}"
            raise
    emails = [entry.email.lower() for entry in entries]
    for index, email in enumerate(emails):
        if email in emails[:index]:
            raise bad_request(f"users[{index}].email: {email} appears twice in this request", "duplicate_email")
    taken = await _emails_taken(session, emails)
    for index, email in enumerate(emails):
        if email in taken:
            raise conflict(f"users[{index}].email: a user with email {email} already exists", "email_taken")
    users = [
        User(org_id=org.id, name=e.name, email=email, role=e.role.value)
        for e, email in zip(entries, emails, strict=True)
    ]
    session.add_all(users)
    on_conflict(session, "a user with one of these emails already exists")
    await session.flush()
    for user in users:
        await outbox.emit(session, EventType.USER_CREATED, org.path, _user_event(user, principal))
    return users


def _user_event(user: User, principal: Principal) -> dict[str, Any]:
    # No email: receivers learn that a user came or went and where, not personal data they may not need.
    return {"userId": str(user.id), "orgId": str(user.org_id), "role": user.role, "byUserId": str(principal.user_id)}


async def update_user(session: AsyncSession, principal: Principal, user_id: int, data: UserUpdate) -> User:
    user = await visible_user(session, principal, user_id)
    require_user_manager(principal, Role(user.role), "change")
    if data.role is not None:
        if user.id == principal.user_id and data.role.value != user.role:
            raise forbidden("you cannot change your own role")
        require_user_manager(principal, data.role, "make a user")
        user.role = data.role.value
    if data.email is not None and data.email.lower() != user.email:
        if await _emails_taken(session, [data.email.lower()]):
            raise conflict(f"a user with email {data.email.lower()} already exists", "email_taken")
        user.email = data.email.lower()
    if data.name is not None:
        user.name = data.name
    on_conflict(session, "a user with that email already exists")
    await session.flush()
    return user


async def delete_user(session: AsyncSession, principal: Principal, user_id: int) -> User:
    user = await visible_user(session, principal, user_id)
    require_user_manager(principal, Role(user.role), "delete")
    if user.id == principal.user_id:
        raise forbidden("you cannot delete yourself")
    data = _user_event(user, principal)
    await session.delete(user)
    await session.flush()
    await outbox.emit_for_org(session, EventType.USER_DELETED, user.org_id, data)
    return user
