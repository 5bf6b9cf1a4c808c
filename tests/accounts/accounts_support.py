"""Small steps the accounts tests share: give a user a password through a link, count rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ihub.accounts import service as accounts
from ihub.accounts.models import ConsoleSession, SigninLink
from ihub.config import Settings

PASSWORD = "correct horse battery"


async def give_password(work: Any, settings: Settings, user_id: int, password: str = PASSWORD) -> None:
    link = await work(lambda s: accounts.create_link(s, settings, None, user_id, accounts.LinkPurpose.INVITE))
    await work(lambda s: accounts.redeem_link(s, settings, link.token, password))


async def count_links(work: Any, user_id: int) -> int:
    return await work(
        lambda s: s.scalar(select(func.count()).select_from(SigninLink).where(SigninLink.user_id == user_id))
    )


async def count_sessions(work: Any, user_id: int) -> int:
    return await work(
        lambda s: s.scalar(select(func.count()).select_from(ConsoleSession).where(ConsoleSession.user_id == user_id))
    )


async def start(work: Any, settings: Settings, user_id: int) -> accounts.StartedSession:
    return await work(lambda s: accounts.start_session(s, settings, user_id, "127.0.0.1", "pytest"))
