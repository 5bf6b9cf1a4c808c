"""Fixtures for console sign-in: users of each role in two sibling organizations, their principals, a unit of work
like a request's, and a clock the accounts service reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.bootstrap import initialize
from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.db.unit_of_work import unit_of_work
from ihub.tenancy.models import Organization, User
from ihub.tenancy.permissions import Principal, Role

T = TypeVar("T")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override with `@pytest.mark.parametrize("settings_overrides", [{...}])` to change settings for a test."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update=settings_overrides) if settings_overrides else settings


class Work:
    """Runs a function in one unit of work, as a request does: committed on success, rolled back on error."""

    def __init__(self, app: Any) -> None:
        self.sessions = app.state.context.sessions

    async def __call__(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with unit_of_work(self.sessions) as session:
            return await work(session)


@pytest.fixture
def work(app: Any) -> Work:
    return Work(app)


@dataclass
class People:
    root_owner: Principal
    owner_a: Principal  # an Owner of org A
    admin_a: Principal
    member_a: Principal
    admin_b: Principal  # an Admin of org B, A's sibling: A is outside B's subtree
    emails: dict[int, str]


def _principal(user: User, org: Organization) -> Principal:
    return Principal(user_id=user.id, org_id=org.id, org_path=org.path, role=Role(user.role))


@pytest.fixture
async def people(app: Any, work: Work) -> People:
    async def setup(session: AsyncSession) -> People:
        first = await initialize(session, app.state.context.box)
        assert first is not None
        root = await session.get(Organization, first.org_id)
        owner = await session.get(User, first.user_id)
        assert root is not None and owner is not None
        orgs = {}
        for name in ("A", "B"):
            org = Organization(name=name, parent_id=root.id, path="")
            session.add(org)
            await session.flush()
            org.path = f"{root.path}{org.id}/"
            orgs[name] = org
        users = {
            key: User(org_id=orgs[org].id, name=key, email=f"{key}@example.com", role=role.value)
            for key, org, role in (
                ("owner-a", "A", Role.OWNER),
                ("admin-a", "A", Role.ADMIN),
                ("member-a", "A", Role.MEMBER),
                ("admin-b", "B", Role.ADMIN),
            )
        }
        session.add_all(users.values())
        await session.flush()
        a, b = orgs["A"], orgs["B"]
        everyone = [owner, *users.values()]
        return People(
            root_owner=_principal(owner, root),
            owner_a=_principal(users["owner-a"], a),
            admin_a=_principal(users["admin-a"], a),
            member_a=_principal(users["member-a"], a),
            admin_b=_principal(users["admin-b"], b),
            emails={user.id: user.email for user in everyone},
        )

    return await work(setup)


class AccountsClock:
    """Moves the time the accounts service reads (its module's `utcnow`), so lifetimes pass in no real time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta()
        monkeypatch.setattr("ihub.accounts.service.utcnow", self.now)

    def now(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def accounts_clock(monkeypatch: pytest.MonkeyPatch) -> AccountsClock:
    return AccountsClock(monkeypatch)
