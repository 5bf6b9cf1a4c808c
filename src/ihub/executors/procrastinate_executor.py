"""The procrastinate executor (PostgreSQL): jobs carry run ids; `ihub worker` processes execute them.

- `submit(run_id)` defers an `ihub.run` job with `queueing_lock=run-<id>` (one waiting job per run at most).
- A worker executes the job with the same engine as the local executor; a retry or a long delay defers a new
  job scheduled at the run's `next_attempt_at`.
- A reconciler loop in every worker re-defers runs whose dispatch was lost (queued and overdue) or whose lease
  expired (their worker died); a duplicate job is harmless because the engine's claim is atomic.
- Schedule triggers and retention run as procrastinate periodic tasks (deduplicated across workers by
  procrastinate itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from ihub.audit.service import purge_audit_log
from ihub.db.base import utcnow
from ihub.flows.engine import Engine
from ihub.incoming.expiry import notify_expiring_keys
from ihub.runs.service import due_run_ids, purge_runs
from ihub.runs.status import RunStatus

log = logging.getLogger("ihub.executors.procrastinate")

QUEUE = "ihub"
# A queued run this overdue has lost its job (or the job is stuck behind a backlog; re-deferring is harmless).
LOST_AFTER = timedelta(seconds=10)
SCHEMA_LOCK = 74_211_003


def libpq_url(database_url: str) -> str:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise RuntimeError("IHUB_EXECUTOR=procrastinate needs PostgreSQL (IHUB_DATABASE_URL=postgresql://...)")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def ensure_schema(conninfo: str) -> None:
    """Apply procrastinate's schema once (an advisory lock keeps concurrent starters from racing)."""
    import psycopg
    from procrastinate.schema import SchemaManager

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=False) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        present = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
        if present and present[0] is None:
            await conn.execute(SchemaManager.get_schema())
        await conn.commit()


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ProcrastinateExecutor:
    def __init__(self, context: Any, *, run_worker: bool, concurrency: int | None = None) -> None:
        self.context = context
        settings = context.settings
        self.run_worker = run_worker
        self.concurrency = concurrency or settings.worker_concurrency
        self.conninfo = libpq_url(settings.resolved_database_url)
        self.name = worker_name()
        self.engine: Engine | None = None
        self.poll_interval = settings.poll_interval
        self._tasks: list[asyncio.Task[Any]] = []
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.conninfo, min_size=1, max_size=max(4, self.concurrency + 2)
            )
        )
        self.run_task = self.app.task(name="ihub.run", queue=QUEUE, pass_context=False)(self._execute)
        schedule = self.app.task(name="ihub.schedule", queue=QUEUE, pass_context=False)(self._schedule)
        self.app.periodic(cron="* * * * *", periodic_id="ihub-schedule")(schedule)
        purge = self.app.task(name="ihub.purge", queue=QUEUE, pass_context=False)(self._purge)
        self.app.periodic(cron="17 * * * *", periodic_id="ihub-purge")(purge)

    async def start(self) -> None:
        await ensure_schema(self.conninfo)
        await self.app.open_async()
        if self.run_worker:
            self.engine = Engine(self.context, self.name, lease_seconds=self.context.settings.run_lease_seconds)
            self._tasks.append(asyncio.create_task(self._worker(), name="ihub-procrastinate-worker"))
            self._tasks.append(asyncio.create_task(self._reconciler(), name="ihub-reconciler"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.engine is not None:
            try:
                # Their jobs died with the worker task: defer new ones so that other workers continue at once.
                for run_id in await self.engine.release_all():
                    await self.submit(run_id)
            except Exception:  # noqa: BLE001 - their leases expire instead
                log.warning("could not release runs at shutdown", exc_info=True)
            await self.engine.close()
        await self.app.close_async()

    async def submit(self, run_id: int, *, at: Any = None) -> None:
        """Defer a job for the run (never blocks on execution; a job already waiting makes this a no-op)."""
        options: dict[str, Any] = {"queueing_lock": f"run-{run_id}"}
        if at is not None:
            options["schedule_at"] = at
        with contextlib.suppress(AlreadyEnqueued):
            await self.run_task.configure(**options).defer_async(run_id=run_id)

    async def _worker(self) -> None:
        await self.app.run_worker_async(
            queues=[QUEUE],
            name=self.name,
            concurrency=self.concurrency,
            install_signal_handlers=False,
            wait=True,
            delete_jobs="successful",
            listen_notify=True,
            fetch_job_polling_interval=self.poll_interval,
            shutdown_graceful_timeout=5,
        )

    async def _execute(self, run_id: int) -> None:
        assert self.engine is not None
        outcome = await self.engine.execute(run_id)
        if outcome is not None and outcome.status == RunStatus.QUEUED:
            await self.submit(run_id, at=outcome.next_attempt_at)

    async def _reconciler(self) -> None:
        while True:
            try:
                async with self.context.readers() as session:
                    ids = await due_run_ids(session, limit=200, older_than=utcnow() - LOST_AFTER)
                for run_id in ids:
                    await self.submit(run_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler failed; retrying")
            await asyncio.sleep(max(self.poll_interval * 2, 2.0))

    async def _schedule(self, timestamp: int) -> None:
        from ihub.flows.schedule import schedule_tick

        for run_id in await schedule_tick(self.context.sessions, readers=self.context.readers):
            await self.submit(run_id)

    async def _purge(self, timestamp: int) -> None:
        async with self.context.sessions() as session:
            await purge_runs(session, older_than_days=self.context.settings.run_retention_days)
            await session.commit()
        await purge_audit_log(self.context)
        await notify_expiring_keys(self.context.sessions, self.context.settings)
