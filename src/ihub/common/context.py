"""What every request needs from the running app: settings, the database and the secret box."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ihub.common.crypto import SecretBox
from ihub.common.proxies import forwarded_client
from ihub.config import Settings
from ihub.db.unit_of_work import unit_of_work

if TYPE_CHECKING:
    # For the fields' types only: those domains import this module, so a runtime import would be a cycle.
    from ihub.executors import Executor
    from ihub.executors.supervisor import WorkerSupervisor
    from ihub.incoming.access import IncomingState
    from ihub.incoming.webhook import RunWriter


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    master_key: str = field(repr=False)
    # Read-only work (GET requests, pollers): on SQLite, connections that never take the write lock
    # (db/engine.py create_read_engine). Defaults to the write sessions.
    read_sessions: async_sessionmaker[AsyncSession] | None = None
    read_engine: AsyncEngine | None = None
    # Filled by the domains that own them, at start-up or on first use; None until then.
    # Where runs go once committed (executors/lifecycle.py; `dispatch` does nothing while it is None, and the
    # reconciler finds the queued runs). Under `serve` with worker processes it is the WorkerSupervisor.
    executor: Executor | None = None
    # `serve`'s worker processes under procrastinate: the queue wakes them, so they are not the executor.
    supervisor: WorkerSupervisor | None = None
    # This process's access-token keys and client/JWKS caches (incoming/access.py incoming_state).
    incoming: IncomingState | None = None
    # The webhook's group-committing run inserter (incoming/webhook.py run_writer).
    run_writer: RunWriter | None = None

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
    """The request's one session: its unit of work (db/unit_of_work.py), shared by the handler and by the
    `Authorization` dependency (FastAPI caches a dependency per request).

    GET/HEAD/OPTIONS get a read-only connection (they must not write), so reading never waits behind SQLite's
    single writer and commits nothing. Any other method gets the write connection in a unit of work: it commits
    when the handler returned without error and rolls back when it raised. `Session` declares this dependency
    with `scope="function"`, so the commit happens before the response is sent: a failed commit is an error
    response, never a 2xx for data that was not stored.
    """
    context: AppContext = request.app.state.context
    if request.method in READ_METHODS:
        async with context.readers() as session:
            yield session
        return
    # The body is read from the network before the first statement: on SQLite that statement (the caller's
    # token lookup) takes the write lock (BEGIN IMMEDIATE), and a slow client must not hold it while it sends.
    # Starlette keeps the bytes, so the body dependencies parse them without reading again.
    await received(request)
    async with unit_of_work(context.sessions) as session:
        yield session


async def received(request: Request) -> None:
    """Wait until the whole body has arrived. A route with form fields (the console) has had FastAPI parse the
    form before its dependencies run, which consumed the stream: the body has arrived then, too."""
    # RuntimeError "Stream consumed": read by the form parser, which keeps the parsed form.
    with suppress(RuntimeError):
        await request.body()


Context = Annotated[AppContext, Depends(get_context)]
# scope="function": the dependency's exit (commit or rollback) runs before the response is sent, not after.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_address(request: Request) -> str:
    """The caller's address for limits and logs: the peer, or behind a trusted proxy its X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    trusted = request.app.state.context.settings.trusted_proxies
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)
