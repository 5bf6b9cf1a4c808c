"""What every domain's command group shares: the `--json` flag and a database session for one command.

Domain CLIs (`templates/cli.py`, `runs/cli.py`, ...) import this, never `ihub.cli`: the root command wires
them in with explicit imports, so there is no import cycle and no command group is skipped silently.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from ihub.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.common.crypto import SecretBox

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

T = TypeVar("T")


async def with_session(work: Callable[[AsyncSession, SecretBox], Awaitable[T]]) -> T:
    """Run `work` as one unit of work on the hub's database, with its secret box: committed when `work`
    returns, rolled back when it raises (services only flush; see db/unit_of_work.py). A uniqueness conflict
    comes out as the same ApiError (409) an API client gets. The engine is disposed after."""
    from ihub.audit.recorder import begin_cli
    from ihub.common.crypto import SecretBox
    from ihub.db.engine import create_engine, create_sessionmaker
    from ihub.db.unit_of_work import unit_of_work

    settings = get_settings()
    engine = create_engine(settings.resolved_database_url, pool=False)
    try:
        async with unit_of_work(create_sessionmaker(engine)) as session:
            # What the command changes is recorded in the audit log as the operator's at this shell.
            begin_cli(session)
            return await work(session, SecretBox(settings.resolved_secret_key()))
    finally:
        await engine.dispose()


def fail(message: str, as_json: bool) -> NoReturn:
    """End the command with exit code 1: `{"error": message}` on stdout with --json, a red line on stderr
    without (so a script that parses stdout never gets prose)."""
    if as_json:
        print(json.dumps({"error": message}))
    else:
        Console(stderr=True).print(f"[red]error:[/] {message}")
    raise typer.Exit(1)


def run_work(work: Callable[[AsyncSession, SecretBox], Awaitable[T]], as_json: bool) -> T:
    """`with_session(work)` for a command; an ApiError (not found, conflict, ...) ends it through `fail`."""
    from ihub.common.errors import ApiError

    try:
        return asyncio.run(with_session(work))
    except ApiError as error:
        fail(error.message, as_json)
