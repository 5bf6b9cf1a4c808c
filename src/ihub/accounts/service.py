"""Console sign-in: one-time links that let a user choose a password, email + password sign-in with rate-limited
failures, and console sessions with an idle and an absolute timeout.

No HTTP here: the console's routes call these and turn an `ApiError` into a page. Every token (link, session
cookie) is stored and looked up only as its sha256 digest.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, Update, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.accounts.models import ConsoleSession, SigninLink, UserPassword
from ihub.accounts.passwords import check_password_policy, decoy_off_loop, hash_off_loop, verify_off_loop
from ihub.common.crypto import constant_time_equals, sha256_hex
from ihub.common.errors import ApiError, not_found
from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.ratelimit import service as ratelimit
from ihub.tenancy.models import Organization, User
from ihub.tenancy.permissions import Principal, Role, require_user_manager
from ihub.tenancy.service import visible_user

LINK_PATH = "/console/password/"
INVALID_LINK = "this link is invalid, used or expired; ask an Owner or Admin for a new one"
WRONG_CREDENTIALS = "wrong email or password"
# Writing last_seen_at on every page view would make every console read a write; once a minute is enough for
# an idle timeout counted in minutes.
TOUCH_INTERVAL = timedelta(seconds=60)
USER_AGENT_MAX = 300
ADDRESS_MAX = 100


# -- sign-in links -------------------------------------------------------------------------------


class LinkPurpose(StrEnum):
    INVITE = "invite"
    RESET = "reset"


@dataclass(frozen=True)
class IssuedLink:
    token: str
    user_id: int
    email: str
    purpose: LinkPurpose
    expires_at: datetime

    def path(self) -> str:
        return LINK_PATH + self.token


def link_url(settings: Settings, link: IssuedLink) -> str:
    return settings.public_url.rstrip("/") + link.path()


@dataclass(frozen=True)
class LinkTarget:
    user_id: int
    email: str
    name: str
    purpose: LinkPurpose


async def create_link(
    session: AsyncSession, settings: Settings, principal: Principal | None, user_id: int, purpose: LinkPurpose
) -> IssuedLink:
    """A new link for the user; any older link of theirs stops working. `principal` None is the server's shell.

    A RESET also removes the user's password and ends their sessions at once: an admin resets an account that
    may be in someone else's hands, and that someone must not stay signed in until the link is used.
    """
    user = await _user_to_link(session, principal, user_id)
    await _lock_user(session, user.id)
    # Only the newest link works: one that went to the wrong inbox is dead as soon as a new one is made.
    await session.execute(delete(SigninLink).where(SigninLink.user_id == user.id))
    if purpose is LinkPurpose.RESET:
        await session.execute(delete(UserPassword).where(UserPassword.user_id == user.id))
        await end_all_sessions(session, user.id)
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(hours=settings.signin_link_ttl_hours)
    session.add(
        SigninLink(
            user_id=user.id,
            digest=sha256_hex(token),
            purpose=purpose.value,
            created_by=principal.user_id if principal is not None else None,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return IssuedLink(token=token, user_id=user.id, email=user.email, purpose=purpose, expires_at=expires_at)


async def _user_to_link(session: AsyncSession, principal: Principal | None, user_id: int) -> User:
    if principal is None:
        user = await session.get(User, user_id)
        if user is None:
            raise not_found("user", user_id)
        return user
    # Visibility first, as in the API: a user outside the caller's subtree is 404 whatever the caller's role.
    user = await visible_user(session, principal, user_id)
    require_user_manager(principal, Role(user.role), "send sign-in links to")
    return user


async def _lock_user(session: AsyncSession, user_id: int) -> None:
    """Serialize link creation per user on PostgreSQL, so two admins at once cannot leave two working links
    (SQLite's single writer already does)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def _valid_link(session: AsyncSession, token: str) -> tuple[SigninLink, User] | None:
    row = (
        await session.execute(
            select(SigninLink, User)
            .join(User, User.id == SigninLink.user_id)
            .where(
                SigninLink.digest == sha256_hex(token),
                SigninLink.used_at.is_(None),
                SigninLink.expires_at > utcnow(),
            )
        )
    ).first()
    if row is None:
        return None
    link, user = row
    return link, user


async def peek_link(session: AsyncSession, token: str) -> LinkTarget | None:
    """Whom a link is for, or None when it is unknown, used or expired. Reads only (safe on a GET)."""
    found = await _valid_link(session, token)
    if found is None:
        return None
    link, user = found
    return LinkTarget(user_id=user.id, email=user.email, name=user.name, purpose=LinkPurpose(link.purpose))


async def redeem_link(session: AsyncSession, settings: Settings, token: str, password: str) -> int:
    """Set the user's password through a link, once; returns the user id. Ends all of the user's sessions."""
    found = await _valid_link(session, token)
    if found is None:
        raise _invalid_link()
    link, user = found
    check_password_policy(settings, password, user.email)
    new_hash = await hash_off_loop(password)
    # The guard decides a race between two redeems of one link: the second UPDATE finds used_at set (on
    # PostgreSQL it waits for the first to commit, then re-reads the row) and changes nothing.
    used = update(SigninLink).where(
        SigninLink.id == link.id, SigninLink.used_at.is_(None), SigninLink.expires_at > utcnow()
    )
    if await _rowcount(session, used.values(used_at=utcnow())) != 1:
        raise _invalid_link()
    await _store_password(session, user.id, new_hash)
    await end_all_sessions(session, user.id)
    await session.flush()
    return user.id


def _invalid_link() -> ApiError:
    # One message for unknown, used and expired: the page cannot tell a guesser which tokens once existed.
    return ApiError(400, INVALID_LINK, "invalid_link")


# -- passwords and sign-in -----------------------------------------------------------------------


def _failure_limits(settings: Settings, email: str, address: str) -> ratelimit.FailureLimits:
    # The numbers of /api/v1/token, counted apart: failing one does not slow the other.
    return ratelimit.failure_limits(
        "signin-fail",
        email,
        address,
        per_pair=settings.token_failures_per_user_and_client,
        per_address=settings.token_failures_per_client,
        per_subject=settings.token_failures_per_user,
        window=settings.token_failure_window_seconds,
    )


async def sign_in(session: AsyncSession, settings: Settings, email: str, password: str, address: str) -> int:
    """The user id for a right email and password; one 401 for every wrong combination."""
    email = email.strip().lower()
    limits = _failure_limits(settings, email, address)
    # Before any hashing: a refused guess costs the hub one indexed read, not 64 MiB of argon2.
    wait = await limits.retry_after(session)
    if wait is not None:
        raise ApiError(
            429,
            f"too many failed sign-ins; retry in {wait} s",
            "too_many_requests",
            headers={"Retry-After": str(wait)},
        )
    row = (
        await session.execute(
            select(User.id, UserPassword.hash)
            .outerjoin(UserPassword, UserPassword.user_id == User.id)
            .where(User.email == email)
        )
    ).first()
    user_id, stored_hash = row if row is not None else (None, None)
    if user_id is None or stored_hash is None:
        # Unknown email, or a user who has not chosen a password: the same argon2 work as a wrong password.
        await decoy_off_loop(password)
        raise await _failed_sign_in(session, limits)
    verification = await verify_off_loop(stored_hash, password)
    if not verification.matches:
        raise await _failed_sign_in(session, limits)
    if verification.rehashed is not None:
        await _store_password(session, user_id, verification.rehashed)
    await session.flush()
    return user_id


async def _failed_sign_in(session: AsyncSession, limits: ratelimit.FailureLimits) -> ApiError:
    # The one commit in this service, an exception to the unit of work (docs/architecture.md) as in
    # provisioning's `exchange`: the failure must be counted although the caller rolls back on the error.
    await limits.record(session)
    await session.commit()
    return ApiError(401, WRONG_CREDENTIALS, "invalid_credentials")


async def change_password(
    session: AsyncSession, settings: Settings, user_id: int, current: str, new: str, keep_session_id: int | None
) -> None:
    """Replace a signed-in user's password; every other session of theirs ends (this one stays signed in)."""
    user = await session.get(User, user_id)
    stored = await session.get(UserPassword, user_id)
    if user is None or stored is None:
        await decoy_off_loop(current)
        raise _wrong_password()
    if not (await verify_off_loop(stored.hash, current)).matches:
        raise _wrong_password()
    check_password_policy(settings, new, user.email)
    await _store_password(session, user_id, await hash_off_loop(new))
    await end_all_sessions(session, user_id, except_id=keep_session_id)
    await session.flush()


def _wrong_password() -> ApiError:
    return ApiError(400, "the current password is wrong", "wrong_password")


async def has_password(session: AsyncSession, user_ids: list[int]) -> set[int]:
    if not user_ids:
        return set()
    found = await session.scalars(select(UserPassword.user_id).where(UserPassword.user_id.in_(user_ids)))
    return set(found.all())


async def _store_password(session: AsyncSession, user_id: int, password_hash: str) -> None:
    """Insert or replace in one statement, so two writers at once (a link and a change) cannot collide."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    statement = insert(UserPassword).values(user_id=user_id, hash=password_hash, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=["user_id"], set_={"hash": password_hash, "updated_at": now}
    )
    await session.execute(statement)


# -- sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartedSession:
    id: int
    token: str
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    id: int
    user_id: int
    principal: Principal
    csrf: str
    name: str
    email: str
    created_at: datetime
    last_seen_at: datetime
    # last_seen_at is over TOUCH_INTERVAL old: the caller should call `touch_session` in a write transaction.
    stale: bool

    def csrf_matches(self, submitted: str) -> bool:
        return constant_time_equals(self.csrf, submitted)


@dataclass(frozen=True)
class SessionInfo:
    id: int
    created_at: datetime
    last_seen_at: datetime
    address: str
    user_agent: str


async def start_session(
    session: AsyncSession, settings: Settings, user_id: int, address: str, user_agent: str
) -> StartedSession:
    """A new session after a successful sign-in: always a fresh token, so a cookie planted before sign-in is
    worth nothing after it."""
    now = utcnow()
    await _drop_dead_sessions(session, settings, user_id, now)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=settings.console_session_max_hours)
    row = ConsoleSession(
        digest=sha256_hex(token),
        user_id=user_id,
        csrf=csrf,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
        address=address[:ADDRESS_MAX],
        user_agent=user_agent[:USER_AGENT_MAX],
    )
    session.add(row)
    await session.flush()
    return StartedSession(id=row.id, token=token, csrf=csrf, expires_at=expires_at)


async def _drop_dead_sessions(session: AsyncSession, settings: Settings, user_id: int, now: datetime) -> None:
    # Ended sessions are useless; drop this user's as new ones are made (as provisioning does with tokens).
    await session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.user_id == user_id,
            or_(ConsoleSession.expires_at <= now, ConsoleSession.last_seen_at <= now - _idle(settings)),
        )
    )


def _idle(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.console_session_idle_minutes)


async def find_session(
    session: AsyncSession, settings: Settings, token: str, now: datetime | None = None
) -> ActiveSession | None:
    """The live session behind a cookie, or None (unknown, idle too long, past its absolute end, user gone).
    Reads only, so a console GET can use a read-only session."""
    now = utcnow() if now is None else now
    row = (
        await session.execute(
            select(ConsoleSession, User.name, User.email, User.org_id, User.role, Organization.path)
            .join(User, User.id == ConsoleSession.user_id)
            .join(Organization, Organization.id == User.org_id)
            .where(
                ConsoleSession.digest == sha256_hex(token),
                ConsoleSession.expires_at > now,
                ConsoleSession.last_seen_at > now - _idle(settings),
            )
        )
    ).first()
    if row is None:
        return None
    found: ConsoleSession = row[0]
    principal = Principal(user_id=found.user_id, org_id=row.org_id, org_path=row.path, role=Role(row.role))
    return ActiveSession(
        id=found.id,
        user_id=found.user_id,
        principal=principal,
        csrf=found.csrf,
        name=row.name,
        email=row.email,
        created_at=found.created_at,
        last_seen_at=found.last_seen_at,
        stale=now - found.last_seen_at > TOUCH_INTERVAL,
    )


async def touch_session(session: AsyncSession, session_id: int) -> None:
    """Restart the idle timeout; the absolute end (expires_at) never moves."""
    await _rowcount(
        session, update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=utcnow())
    )


async def end_session(session: AsyncSession, session_id: int) -> None:
    await _rowcount(session, delete(ConsoleSession).where(ConsoleSession.id == session_id))


async def end_all_sessions(session: AsyncSession, user_id: int, except_id: int | None = None) -> int:
    """End the user's sessions (all but `except_id`); returns how many ended."""
    statement = delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
    if except_id is not None:
        statement = statement.where(ConsoleSession.id != except_id)
    return await _rowcount(session, statement)


async def list_sessions(session: AsyncSession, user_id: int) -> list[SessionInfo]:
    """The user's sessions before their absolute end, most recently used first. (Idle ones are dropped at the
    user's next sign-in; `find_session` refuses them already.)"""
    rows = await session.scalars(
        select(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.expires_at > utcnow())
        .order_by(ConsoleSession.last_seen_at.desc(), ConsoleSession.id.desc())
    )
    return [
        SessionInfo(
            id=row.id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            address=row.address,
            user_agent=row.user_agent,
        )
        for row in rows
    ]


async def _rowcount(session: AsyncSession, statement: Update | Delete) -> int:
    result = await session.execute(statement.execution_options(synchronize_session=False))
    # An UPDATE or DELETE returns a CursorResult (it has rowcount); Session.execute is typed as the base Result.
    return cast("CursorResult[Any]", result).rowcount
