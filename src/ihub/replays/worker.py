"""The bulk replay worker: every hub process with a worker (`ihub serve`) runs one; batches are shared by lease.

Invariants:

- A batch is worked on by one process at a time: a worker claims it (a guarded UPDATE setting `lease_owner`
  and `lease_expires_at`), and every page begins by renewing that lease under the same guard. A worker that
  stops (crash, shutdown, a stalled event loop) loses the batch when its lease expires; another one claims it.
- A page is one transaction: renew the lease, read the next runs after the cursor (oldest first), create their
  replays and one `replay_items` row each, move the cursor and the counts. A crash before the commit leaves
  nothing of the page; after it, everything. So a resumed batch goes on exactly after its last committed page:
  no run replayed twice, none left out.
- The primary key (batch_id, run_id) of `replay_items` is the backstop: should two workers ever write the same
  page (a bug, a lease misjudged), the second commit fails and rolls its page back, replays included.
- Rate: a page holds at most `rate` runs (and at most PAGE_CAP), and the worker waits until the page's replays
  took 1/rate second each before the next page. `rate` is the batch's, capped by IHUB_REPLAY_MAX_RATE as it is
  now: lowering the setting slows batches already under way. The clock and the sleep are injected (tests move time).
- The executor hears of a page's replays after its commit (`dispatch`), as the single replay does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from ihub.common.errors import ApiError
from ihub.db.base import utcnow
from ihub.db.unit_of_work import after_commit, unit_of_work
from ihub.executors import dispatch
from ihub.flows.service import LoadedFlow
from ihub.replays import service
from ihub.replays.models import ReplayBatch, ReplayItem
from ihub.replays.service import BatchStatus, Outcome
from ihub.runs.service import create_replay, replay_flow

if TYPE_CHECKING:
    from ihub.common.context import AppContext

log = logging.getLogger("ihub.replays")

# Most runs in one page (one transaction): a page holds SQLite's write lock while it creates its replays.
PAGE_CAP = 50


@dataclass(frozen=True)
class Page:
    replayed: int
    rate: int
    done: bool


class ReplayWorker:
    def __init__(
        self,
        context: AppContext,
        *,
        owner: str | None = None,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.context = context
        settings = context.settings
        self.owner = owner or f"replay:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = settings.replay_lease_seconds
        self.poll_interval = settings.replay_poll_interval
        self.concurrency = concurrency
        self.clock, self.sleep, self.now = clock, sleep, now
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- one page, one batch ----------------------------------------------------------------------------------

    async def page(self, batch_id: int) -> Page | None:
        """Replay the batch's next page; None when the batch is no longer ours to work on (paused, cancelled,
        taken over)."""
        async with unit_of_work(self.context.sessions) as session:
            now = self.now()
            if not await service.renew(session, batch_id, self.owner, now, self.lease_seconds):
                return None
            batch = await session.get(ReplayBatch, batch_id, populate_existing=True)
            if batch is None:
                return None
            # The hub's current ceiling binds batches started before it was lowered (a resumed one too).
            rate = max(1, min(batch.rate, self.context.settings.replay_max_rate))
            runs = await service.next_runs(session, batch, min(rate, PAGE_CAP))
            if not runs:
                batch.status = BatchStatus.DONE
                batch.finished_at = now
                batch.lease_owner = None
                batch.lease_expires_at = None
                return Page(0, rate, done=True)
            reasons = await service.skip_reasons(session, [run.id for run in runs])
            replayed: list[int] = []
            # Added after the loop: one multi-row INSERT, where adding each as it comes made every replay's
            # queries flush the previous item on its own.
            items: list[ReplayItem] = []
            # The flow a replay runs is the same for all runs of one flow and version: loaded once per page.
            flows: dict[tuple[int, int], LoadedFlow] = {}
            for run in runs:
                reason = reasons.get(run.id)
                if reason is not None:
                    items.append(ReplayItem(batch_id=batch.id, run_id=run.id, outcome=Outcome.SKIPPED, detail=reason))
                    batch.skipped += 1
                    continue
                try:
                    loaded = flows.get((run.flow_id, run.flow_version))
                    if loaded is None:
                        loaded = await replay_flow(session, run, batch.version)
                        flows[(run.flow_id, run.flow_version)] = loaded
                    replay = await create_replay(session, run, loaded)
                except ApiError as error:
                    # Its flow left the template, or that version no longer defines it: counted, and the batch
                    # goes on with the others.
                    detail = service.error_detail(error)
                    items.append(ReplayItem(batch_id=batch.id, run_id=run.id, outcome=Outcome.FAILED, detail=detail))
                    batch.failed += 1
                    batch.last_error = f"run {run.id}: {detail}"
                    continue
                items.append(
                    ReplayItem(batch_id=batch.id, run_id=run.id, outcome=Outcome.REPLAYED, replay_run_id=replay.id)
                )
                batch.replayed += 1
                replayed.append(replay.id)
                after_commit(session, partial(dispatch, self.context, replay.id))
            session.add_all(items)
            batch.cursor = runs[-1].id
            return Page(len(replayed), rate, done=False)

    async def work_on(self, batch_id: int) -> None:
        """Page after page at the batch's rate, until it is done or no longer ours."""
        while True:
            started = self.clock()
            try:
                page = await self.page(batch_id)
            except ApiError as error:
                # A page that broke the (batch, run) uniqueness rolled back: someone else wrote it. Leave the
                # batch; its lease expires and a claim looks again from the committed cursor.
                log.warning("replay %s: page rolled back: %s", batch_id, error.message)
                return
            if page is None or page.done:
                return
            wait = page.replayed / page.rate - (self.clock() - started)
            if wait > 0:
                await self.sleep(wait)

    async def claim_next(self) -> int | None:
        """Take a batch to work on: its id, or None when none is free."""
        now = self.now()
        async with self.context.readers() as session:
            candidates = [i for i in await service.claimable(session, now) if i not in self.tasks]
        for batch_id in candidates:
            async with unit_of_work(self.context.sessions) as session:
                if await service.claim(session, batch_id, self.owner, now, self.lease_seconds):
                    return batch_id
        return None

    async def run_until_idle(self) -> None:
        """Claim and finish batches one after the other until none is left to claim (tests, one-off use)."""
        while (batch_id := await self.claim_next()) is not None:
            await self.work_on(batch_id)

    # -- in the background, with the app ----------------------------------------------------------------------

    def wake(self) -> None:
        """A batch was started or resumed: look now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._poll(), name="replay-worker")

    async def stop(self) -> None:
        tasks = [task for task in (self._loop, *self.tasks.values()) if task is not None]
        for task in tasks:
            task.cancel()
        # A cancelled page rolls back (its session closes without a commit): the cursor stays where it was.
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        try:
            async with unit_of_work(self.context.sessions) as session:
                await service.release(session, self.owner)
        except Exception:  # noqa: BLE001 - the lease expires by itself; shutting down must not fail on it
            log.warning("could not release replay batches of %s", self.owner, exc_info=True)

    async def _poll(self) -> None:
        while True:
            try:
                while len(self.tasks) < self.concurrency and (batch_id := await self.claim_next()) is not None:
                    task = asyncio.create_task(self.work_on(batch_id), name=f"replay-{batch_id}")
                    self.tasks[batch_id] = task
                    task.add_done_callback(partial(self._finished, batch_id))
            except Exception:  # noqa: BLE001 - a database hiccup: the next poll tries again
                log.warning("looking for replay batches failed", exc_info=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _finished(self, batch_id: int, task: asyncio.Task[None]) -> None:
        self.tasks.pop(batch_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("replay %s stopped on an error", batch_id, exc_info=task.exception())
        # Its slot is free: another batch may be waiting.
        self._wake.set()


def install(app: Any) -> None:
    """Start a worker with the app when it runs workers (not under `ihub serve --no-worker`)."""
    app.state.lifecycle.append((start, stop))


async def start(app: Any) -> None:
    state = app.state
    if not state.run_worker:
        return
    worker = ReplayWorker(state.context)
    await worker.start()
    state.replay_worker = worker


async def stop(app: Any) -> None:
    state = app.state
    worker: ReplayWorker | None = getattr(state, "replay_worker", None)
    state.replay_worker = None
    if worker is not None:
        await worker.stop()
