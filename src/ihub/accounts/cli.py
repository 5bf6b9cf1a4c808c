"""`ihub user invite` and `ihub user reset-password`: sign-in links made from the server's shell (no principal),
for the first Owner, a locked-out Owner, or anyone before the console has users who can send links."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from ihub.common.cli_support import JsonFlag, fail, run_work
from ihub.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.accounts.service import IssuedLink, LinkPurpose
    from ihub.common.crypto import SecretBox

EmailOption = Annotated[str, typer.Option("--email", help="Email of an existing user.")]


def invite(email: EmailOption, as_json: JsonFlag = False) -> None:
    """Print a one-time link with which the user chooses a console password (older links stop working)."""
    from ihub.accounts.service import LinkPurpose

    _issue(email, LinkPurpose.INVITE, as_json)


def reset_password(email: EmailOption, as_json: JsonFlag = False) -> None:
    """Remove the user's console password, sign them out everywhere and print a one-time link to choose a new one."""
    from ihub.accounts.service import LinkPurpose

    _issue(email, LinkPurpose.RESET, as_json)


def _issue(email: str, purpose: LinkPurpose, as_json: bool) -> None:
    from sqlalchemy import select

    from ihub.accounts.service import create_link, link_url
    from ihub.tenancy.models import User

    settings = get_settings()
    address = email.strip().lower()

    async def work(session: AsyncSession, _box: SecretBox) -> IssuedLink | None:
        user_id = await session.scalar(select(User.id).where(User.email == address))
        if user_id is None:
            return None
        return await create_link(session, settings, None, user_id, purpose)

    link = run_work(work, as_json)
    if link is None:
        fail(f"no user with email {address}; `ihub user list` shows every user", as_json)
    url = link_url(settings, link)
    if as_json:
        print(
            json.dumps(
                {"userId": str(link.user_id), "email": link.email, "url": url, "expiresAt": link.expires_at.isoformat()}
            )
        )
        return
    # The URL alone on stdout (a script can take it); the explanation on stderr.
    print(url)
    Console(stderr=True).print(
        f"one-time sign-in link for user {link.user_id} ({link.email}), valid until "
        f"{link.expires_at:%Y-%m-%d %H:%M} UTC; older links of this user no longer work"
    )
