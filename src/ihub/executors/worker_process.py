"""One worker process of `ihub serve`: the local executor's loop, outside the API's event loop.

Started by the supervisor (`ihub.executors.supervisor`) as `python -m ihub.executors.worker_process`. Its stdin is
the only channel from the API process:

- the first line is the hub's settings as JSON (a pipe, not the environment or argv, so the master key and the
  database password never show in `ps` or `/proc/<pid>/environ`);
- every further line is a run id the API just committed: submitted at once (the database poll is the fallback);
- end of file means the supervisor is gone or stopping: unfinished runs are handed back and the process exits.
  So a worker never outlives its `ihub serve`, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ihub.executors import Executor

log = logging.getLogger("ihub.executors.worker")


async def serve_pipe(reader: asyncio.StreamReader, executor: Executor) -> None:
    """Submit every run id read from the supervisor until the pipe closes."""
    while line := await reader.readline():
        text = line.strip()
        if text.isdigit():
            await executor.submit(int(text))


async def run(settings_json: str, index: int) -> None:
    from ihub.app import build_context
    from ihub.common.gcpause import freeze_startup_objects
    from ihub.config import Settings
    from ihub.executors.local import LocalExecutor

    settings = Settings(**json.loads(settings_json))
    context = build_context(settings)
    executor: Any
    if settings.executor == "procrastinate":
        from ihub.executors.procrastinate_executor import ProcrastinateExecutor

        # The queue wakes this worker; the pipe only carries the settings and the end of file.
        executor = ProcrastinateExecutor(context, run_worker=True)
    else:
        executor = LocalExecutor(
            context,
            concurrency=settings.worker_concurrency,
            poll_interval=settings.poll_interval,
            lease_seconds=settings.run_lease_seconds,
            # One process fires schedule triggers and purges old runs; the others only execute.
            scheduler=index == 0,
        )
    context.executor = executor
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stopping = asyncio.Event()
    # SIGTERM straight to a worker stops it cleanly too (the supervisor restarts it).
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await executor.start()
    freeze_startup_objects()
    log.info("worker %d (pid %d) executing runs (concurrency %d)", index, os.getpid(), settings.worker_concurrency)
    pipe = asyncio.create_task(serve_pipe(reader, executor))
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({pipe, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pipe, stop):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await executor.stop()
        await context.engine.dispose()


def read_first_line() -> str:
    """The settings line, read byte by byte: a buffered read could swallow run ids sent right after it."""
    data = bytearray()
    while not data.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        data += byte
    return data.decode()


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the supervisor decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    index = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    settings_json = read_first_line()
    if not settings_json.strip():
        sys.exit(0)  # the supervisor went away before sending anything
    from ihub.config import Settings
    from ihub.logs import configure_logging

    settings = Settings(**json.loads(settings_json))
    configure_logging(settings.log_level)
    from ihub.observability import metrics

    # Before any count: this process's counters go to the directory `serve` scrapes (PROMETHEUS_MULTIPROC_DIR).
    metrics.set_enabled(settings.metrics_enabled)
    if settings.metrics_enabled:
        metrics.adopt_inherited_directory()
    # Flows yield the CPU to the API: on a machine with as many busy workers as cores, API requests would
    # otherwise wait for a time slice behind flow computation (bench/isolation.py: cpu-* rows).
    os.nice(settings.worker_niceness)
    asyncio.run(run(settings_json, index))


if __name__ == "__main__":
    main()
