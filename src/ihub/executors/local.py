"""The local executor: an asyncio worker pool inside `ihub serve` (placeholder until the engine lands)."""

from __future__ import annotations

from typing import Any


class LocalExecutor:
    def __init__(self, context: Any, *, concurrency: int = 8) -> None:
        self.context = context
        self.concurrency = concurrency

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, run_id: int) -> None:
        return None
