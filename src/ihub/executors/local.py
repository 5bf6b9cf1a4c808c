"""The local executor: an asyncio worker pool, run by each worker process of `ihub serve` (`worker_process`).

A poller (the reconciler) reads due runs from the database — queued runs whose time has come and running runs
whose lease expired — so every unfinished run is picked up at start and after a crash; `submit` wakes it at once.
The same loop fires schedule triggers, purges old runs and sends trigger key expiry notices (hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ihub.audit.service import purge_audit_log
from ihub.db.base import utcnow
from ihub.flows.engine import Engine
from ihub.incoming.expiry import notify_expiring_keys
from ihub.runs.service import due_run_ids, next_wakeup, purge_runs
from ihub.runs.status import RunStatus

log = logging.getLogger("ihub.executors.local")

SCHEDULE_INTERVAL = 15.0
RETENTION_INTERVAL = 3600.0
# The first hourly pass (purges, trigger key notices) comes this long after start, not at once: a process that
# restarts often still does it, and a start does not begin with a write that holds SQLite's writer gate while
# the first requests arrive.
FIRST_HOUSEKEEPING_DELAY = 60.0


class LocalExecutor:
    def __init__(
        self,
        context: Any,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        owner: str | None = None,
        lease_seconds: float | None = None,
        scheduler: bool = True,
    ) -> None:
        self.context = context
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.engine = Engine(context, owner, **({"lease_seconds": lease_seconds} if lease_seconds else {}))
        self.scheduler = scheduler
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._pending: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.executed = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"ihub-worker-{i}") for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._poller(), name="ihub-poller"))
        if self.scheduler:
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="ihub-housekeeping"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        # The cancelled workers write nothing more: their runs can be handed back at once.
        try:
            await self.engine.release_all()
        except Exception:  # noqa: BLE001 - their leases expire instead
            log.warning("could not release runs at shutdown", exc_info=True)
        await self.engine.close()

    async def submit(self, run_id: int) -> None:
        """Queue a run id for execution now (never blocks; duplicates are dropped)."""
        if run_id not in self._pending:
            self._pending.add(run_id)
            self._queue.put_nowait(run_id)

    def wake(self) -> None:
        self._wake.set()

    async def _worker(self) -> None:
        while True:
            run_id = await self._queue.get()
            try:
                outcome = await self.engine.execute(run_id)
                if outcome is not None:
                    self.executed += 1
                    if outcome.status == RunStatus.QUEUED:
                        self.wake()  # the poller recomputes its sleep to this run's next_attempt_at
            except asyncio.CancelledError:
                raise
            except Exception:
                # The run stays claimed until its lease expires; then the poller retries it.
                log.exception("run %s: executor error", run_id)
            finally:
                self._pending.discard(run_id)

    async def _poller(self) -> None:
        while True:
            wait = self.poll_interval
            try:
                # Read-only: the due-run poll must not take the write lock the API's writes queue on.
                async with self.context.readers() as session:
                    free = max(self.concurrency * 4 - len(self._pending), 0)
                    ids = await due_run_ids(session, limit=free, exclude=self._pending) if free else []
                    upcoming = await next_wakeup(session)
                for run_id in ids:
                    await self.submit(run_id)
                if upcoming is not None:
                    wait = min(wait, max(0.01, (upcoming - utcnow()).total_seconds()))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poller failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _housekeeping(self) -> None:
        from ihub.flows.schedule import schedule_tick

        # (Counted from now, not from 0.0: the monotonic clock counts from boot.)
        next_pass = time.monotonic() + FIRST_HOUSEKEEPING_DELAY
        while True:
            try:
                for run_id in await schedule_tick(self.context.sessions, readers=self.context.readers):
                    await self.submit(run_id)
                if time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + RETENTION_INTERVAL
                    async with self.context.sessions() as session:
                        purged = await purge_runs(session, older_than_days=self.context.settings.run_retention_days)
                        await session.commit()
                    if purged:
                        log.info("purged %d runs older than %d days", purged, self.context.settings.run_retention_days)
                    await purge_audit_log(self.context)
                    await notify_expiring_keys(self.context.sessions, self.context.settings)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed; retrying")
            await asyncio.sleep(SCHEDULE_INTERVAL)
