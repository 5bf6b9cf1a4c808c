"""Executors carry run ids to the flow engine; the database holds everything else.

Contract used by other domains (incoming triggers, the run API):

    executor = app.state.context.executor                  # None on `ihub serve --no-worker` without a queue
    await executor.submit(run_id)                          # after the run row is committed

`submit` never waits for execution and is safe to call more than once for the same run: the engine claims a
run atomically, so a duplicate submission finds nothing to do. When no executor is present, queued runs are
picked up by the reconciler of whichever worker (`ihub serve` or `ihub worker`) polls the database next.
Use `dispatch(context, run_id)` to do the right thing in both cases.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ihub.common.context import AppContext

log = logging.getLogger("ihub.executors")


@runtime_checkable
class Executor(Protocol):
    """LocalExecutor, ProcrastinateExecutor, and WorkerSupervisor (which forwards to its worker processes)."""

    async def submit(self, run_id: int) -> None: ...

    async def stop(self) -> None: ...


def get_executor(context: AppContext) -> Executor | None:
    return context.executor


async def dispatch(context: AppContext, run_id: int) -> None:
    """Hand a committed run to the executor; a lost hand-off is repaired by the reconciler, so never raise."""
    executor = get_executor(context)
    if executor is None:
        return
    try:
        await executor.submit(run_id)
    except Exception:  # noqa: BLE001 - the run is durable; the reconciler will find it
        log.warning("could not submit run %s; the reconciler will pick it up", run_id, exc_info=True)
