"""Start and stop the executor with the app (create_app calls `install`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ihub.common.context import AppContext


def install(app: Any) -> None:
    app.state.lifecycle.append((start, stop))


async def start(app: Any) -> None:
    context: AppContext = app.state.context
    settings = context.settings
    if settings.executor == "procrastinate":
        from ihub.executors.procrastinate_executor import ProcrastinateExecutor

        # API nodes and workers alike defer jobs. With worker processes (the default), `serve` executes them
        # there, never on the API's event loop; IHUB_WORKERS=0 keeps execution in this process (tests).
        in_process = app.state.run_worker and settings.workers == 0
        executor = ProcrastinateExecutor(context, run_worker=in_process)
        await executor.start()
        context.executor = executor
        if app.state.run_worker and settings.workers > 0:
            from ihub.executors.supervisor import WorkerSupervisor

            supervisor = WorkerSupervisor(settings, workers=settings.workers)
            await supervisor.start()
            context.supervisor = supervisor
        return
    if not app.state.run_worker:
        return
    if settings.workers > 0:
        from ihub.executors.supervisor import WorkerSupervisor

        # Flows execute in worker processes: nothing a flow does can hold the API's event loop.
        supervisor = WorkerSupervisor(settings, workers=settings.workers)
        await supervisor.start()
        context.executor = supervisor
        return
    from ihub.executors.local import LocalExecutor

    # IHUB_WORKERS=0 (tests, debugging): flows execute on the API's own event loop.
    local = LocalExecutor(
        context,
        concurrency=settings.worker_concurrency,
        poll_interval=settings.poll_interval,
        lease_seconds=settings.run_lease_seconds,
    )
    await local.start()
    context.executor = local


async def stop(app: Any) -> None:
    context: AppContext = app.state.context
    supervisor, context.supervisor = context.supervisor, None
    if supervisor is not None:
        await supervisor.stop()
    executor, context.executor = context.executor, None
    if executor is not None:
        await executor.stop()
