"""`ihub worker`: execute runs from the procrastinate queue (PostgreSQL), on any number of machines."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer
from rich.console import Console

from ihub.config import get_settings

console = Console(stderr=True)


async def run_worker(concurrency: int | None) -> None:
    from ihub.app import build_context
    from ihub.executors.procrastinate_executor import ProcrastinateExecutor
    from ihub.replays.worker import ReplayWorker

    settings = get_settings()
    context = build_context(settings)
    executor = ProcrastinateExecutor(context, run_worker=True, concurrency=concurrency)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopping.set)
    await executor.start()
    context.executor = executor
    # Bulk replays go on here too: with `ihub serve --no-worker` beside it, no API process runs them.
    replays = ReplayWorker(context)
    await replays.start()
    console.print(f"ihub worker {executor.name}: executing runs (concurrency {executor.concurrency})")
    try:
        await stopping.wait()
    finally:
        await replays.stop()
        await executor.stop()
        await context.engine.dispose()


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Runs executed at once (default IHUB_WORKER_CONCURRENCY).", min=1, max=256)
    ] = None,
) -> None:
    """Execute runs from the PostgreSQL job queue (procrastinate); pair with `ihub serve --no-worker`."""
    from ihub.db.engine import is_sqlite
    from ihub.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    if is_sqlite(settings.resolved_database_url):
        console.print("ihub worker needs PostgreSQL: set IHUB_DATABASE_URL=postgresql://... (SQLite runs in `serve`)")
        raise typer.Exit(2)
    asyncio.run(run_worker(concurrency))
