"""Start and stop the executor with the app (create_app calls `install`)."""

from __future__ import annotations

from typing import Any

from ihub.executors import EXECUTOR_KEY


def install(app: Any) -> None:
    app.state.lifecycle.append((start, stop))


async def start(app: Any) -> None:
    context = app.state.context
    settings = context.settings
    if settings.executor == "procrastinate":
        from ihub.executors.procrastinate_executor import start_dispatcher

        # API nodes and workers alike defer jobs; only workers (or `serve` with a worker) run them.
        context.extras[EXECUTOR_KEY] = await start_dispatcher(context, run_worker=app.state.run_worker)
        return
    if not app.state.run_worker:
        return
    from ihub.executors.local import LocalExecutor

    executor = LocalExecutor(context, concurrency=settings.worker_concurrency)
    await executor.start()
    context.extras[EXECUTOR_KEY] = executor


async def stop(app: Any) -> None:
    executor = app.state.context.extras.pop(EXECUTOR_KEY, None)
    if executor is not None and hasattr(executor, "stop"):
        await executor.stop()
