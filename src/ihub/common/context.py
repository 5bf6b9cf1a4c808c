"""What every request needs from the running app: settings, the database and the secret box."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ihub.common.crypto import SecretBox
from ihub.common.proxies import forwarded_client
from ihub.config import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    master_key: str = field(repr=False)
    # Filled by other domains at start-up (executor, key caches, ...).
    extras: dict[str, Any] = field(default_factory=dict)
    # Read-only work (GET requests, pollers): on SQLite, connections that never take the write lock
    # (db/engine.py create_read_engine). Defaults to the write sessions.
    read_sessions: async_sessionmaker[AsyncSession] | None = None
    read_engine: AsyncEngine | None = None

    def __post_init__(self) -> None:
        if self.read_sessions is None:
            self.read_sessions = self.sessions

    @property
    def readers(self) -> async_sessionmaker[AsyncSession]:
        return self.read_sessions or self.sessions


def get_context(request: Request) -> AppContext:
    # Starlette's app.state holds untyped attributes; create_app sets `context` to the AppContext.
    context: AppContext = request.app.state.context
    return context


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for the request: read-only connections for GET/HEAD (they must not write), so reading never
    waits behind SQLite's single writer; the write connection otherwise."""
    context: AppContext = request.app.state.context
    sessions = context.readers if request.method in READ_METHODS else context.sessions
    async with sessions() as session:
        yield session


Context = Annotated[AppContext, Depends(get_context)]
Session = Annotated[AsyncSession, Depends(get_session)]


def client_address(request: Request) -> str:
    """The caller's address for limits and logs: the peer, or behind a trusted proxy its X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    trusted = request.app.state.context.settings.trusted_proxies
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)
