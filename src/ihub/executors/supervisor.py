"""The worker supervisor of `ihub serve`: flows execute in child processes, never on the API's event loop.

A flow can compute for as long as its budgets allow (expression and run time budgets, see
`ihub.flows.expressions` and `ihub.flows.engine`); in the API process that time would be taken from every
tenant's API calls. So on the embedded default (IHUB_EXECUTOR=local) `ihub serve` starts IHUB_WORKERS processes
(`ihub.executors.worker_process`), each running the local executor's loop, and the API process only writes runs
and wakes a worker:

- `submit(run_id)` writes the id to one worker's stdin pipe (round robin): the worker starts it at once. A lost
  write costs latency only: every worker also polls the database (IHUB_POLL_INTERVAL) for due runs.
- A worker that exits while the hub is running is restarted after a backoff (0.5 s doubling to 30 s, reset
  after a minute of uptime); its claimed runs are picked up when their leases expire, or at once if it managed
  to hand them back.
- `stop()` closes the pipes: each worker hands its unfinished runs back (queued, due now) and exits; one that
  does not within STOP_GRACE is terminated, then killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

from pydantic import SecretBytes, SecretStr

log = logging.getLogger("ihub.executors.supervisor")

STOP_GRACE = 15.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# A worker that ran this long before exiting is treated as healthy: its restart backoff starts over.
HEALTHY_UPTIME = 60.0


class WorkerSupervisor:
    def __init__(self, settings: Any, *, workers: int) -> None:
        self.settings = settings
        self.count = workers
        self.processes: list[asyncio.subprocess.Process | None] = [None] * workers
        self.restarts = 0
        self._monitors: list[asyncio.Task[None]] = []
        self._stopping = False
        self._next = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.returncode is None]

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)
        self._monitors = [
            asyncio.create_task(self._monitor(index), name=f"ihub-supervise-{index}") for index in range(self.count)
        ]

    async def _spawn(self, index: int) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ihub.executors.worker_process",
            str(index),
            stdin=asyncio.subprocess.PIPE,
            # Logs go where the API's go (inherited stdout/stderr).
        )
        assert process.stdin is not None
        process.stdin.write(settings_line(self.settings))
        self.processes[index] = process
        log.info("started worker %d (pid %d)", index, process.pid)

    async def _monitor(self, index: int) -> None:
        failures = 0
        while True:
            process = self.processes[index]
            assert process is not None
            started = time.monotonic()
            code = await process.wait()
            if self._stopping:
                return
            failures = 1 if time.monotonic() - started > HEALTHY_UPTIME else failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1f s", index, process.pid, code, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(index)
                self.restarts += 1
            except Exception:  # noqa: BLE001 - try again after the next backoff
                log.exception("could not restart worker %d", index)
                await asyncio.sleep(BACKOFF_MAX)

    async def submit(self, run_id: int) -> None:
        """Wake a worker for a committed run (never blocks on execution; duplicates are harmless)."""
        for _ in range(self.count):
            process = self.processes[self._next % self.count]
            self._next += 1
            if process is None or process.returncode is not None or process.stdin is None:
                continue
            try:
                process.stdin.write(f"{run_id}\n".encode())
                return
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                continue
        # No live worker: the run is committed; a restarted worker's poll will find it.

    async def stop(self) -> None:
        self._stopping = True
        for task in self._monitors:
            task.cancel()
        for task in self._monitors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        live = [p for p in self.processes if p is not None and p.returncode is None]
        for process in live:
            # End of file: the worker hands its runs back and exits.
            if process.stdin is not None:
                with contextlib.suppress(Exception):
                    process.stdin.close()
        await asyncio.gather(*(self._reap(process) for process in live))

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
            return
        except TimeoutError:
            log.warning("worker pid %d did not stop in %.0f s; terminating it", process.pid, STOP_GRACE)
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def settings_line(settings: Any) -> bytes:
    """The worker's first line: every setting, so that it runs exactly the hub the API serves."""
    return json.dumps(settings.model_dump(), default=_plain).encode() + b"\n"


def _plain(value: Any) -> Any:
    # Secret fields travel in clear (the pipe is private to the two processes); JSON mode would mask them.
    if isinstance(value, SecretStr | SecretBytes):
        return _plain(value.get_secret_value())
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
