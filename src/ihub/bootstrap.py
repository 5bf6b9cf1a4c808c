"""First start: schema, root organization, first Owner, that Owner's secret key and console sign-in link."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.accounts.service import IssuedLink, LinkPurpose, create_link
from ihub.common.crypto import SecretBox
from ihub.config import Settings
from ihub.provisioning.service import generate_key
from ihub.tenancy.models import User
from ihub.tenancy.permissions import Role
from ihub.tenancy.service import ensure_root

DEFAULT_OWNER_EMAIL = "owner@ihub.local"


@dataclass(frozen=True)
class FirstOwner:
    org_id: int
    user_id: int
    email: str
    secret: str
    # The one-time link with which the Owner chooses a console password (only when `initialize` got settings).
    signin: IssuedLink | None = None


async def initialize(
    session: AsyncSession,
    box: SecretBox,
    *,
    owner_email: str = DEFAULT_OWNER_EMAIL,
    owner_name: str = "Owner",
    settings: Settings | None = None,
) -> FirstOwner | None:
    """Create the root org and first Owner on an empty hub; None when the hub already has users. With `settings`,
    also an invitation link for the console. Flushes only: the caller commits."""
    root, _ = await ensure_root(session)
    if await session.scalar(select(func.count()).select_from(User)):
        return None  # the caller's commit keeps a root that ensure_root had to create
    owner = User(org_id=root.id, name=owner_name, email=owner_email.lower(), role=Role.OWNER.value)
    session.add(owner)
    await session.flush()
    issued = await generate_key(session, box, owner.id)
    signin = None if settings is None else await create_link(session, settings, None, owner.id, LinkPurpose.INVITE)
    return FirstOwner(org_id=root.id, user_id=owner.id, email=owner.email, secret=issued.secret, signin=signin)
