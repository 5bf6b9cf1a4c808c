#!/usr/bin/env python
"""What event webhooks add to a run's finish when nobody (or only another organization) listens.

    PYTHONPATH=src .venv/bin/python bench/event_emit.py [--runs 2000]

On a fresh SQLite file: N runs, each finished in its own transaction as the engine does (lifecycle.finish), first
without the events hook (the baseline), then with `outbox.emit_run_event` after it as the engine calls it (no
endpoint at all), then with 20 endpoints in a sibling organization (they do not match: the lookup still returns
nothing). The added cost is one indexed SELECT in the finishing transaction. Prints µs per finish
and the ratio to the baseline measured in the same run; absolute numbers depend on the machine, the ratio less so.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine as create_sync_engine

from ihub.db.engine import create_engine, create_sessionmaker
from ihub.db.registry import metadata
from ihub.events import outbox
from ihub.events.models import EventEndpoint
from ihub.flows.models import Flow
from ihub.projects.models import Project
from ihub.runs import lifecycle
from ihub.runs.models import Run
from ihub.runs.status import RunStatus
from ihub.templates.models import Template
from ihub.tenancy.models import Organization

OWNER = "bench"
ROUNDS = 10


async def measure(url: str, runs: int) -> None:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add_all(
            [
                Organization(id=1, name="root", parent_id=None, path="/1/"),
                Organization(id=2, name="tenant", parent_id=1, path="/1/2/"),
                Organization(id=3, name="sibling", parent_id=1, path="/1/3/"),
            ]
        )
        await session.flush()
        session.add(Template(id=1, org_id=2, name="t", definition={}))
        await session.flush()
        session.add(Project(id=1, org_id=2, template_id=1, name="p"))
        await session.flush()
        session.add(Flow(id=1, project_id=1, key="f"))
        await session.flush()
        session.add_all(
            Run(
                project_id=1,
                flow_id=1,
                status=RunStatus.RUNNING.value,
                trigger_type="manual",
                trigger={},
                lease_owner=OWNER,
            )
            for _ in range(runs * 4 + 2 * ROUNDS)
        )

    next_run = 1

    async def finish_batch(size: int, emit: bool) -> float:
        """µs per finish over `size` runs."""
        nonlocal next_run
        first, next_run = next_run, next_run + size
        started = time.perf_counter()
        for run_id in range(first, first + size):
            async with sessions() as session, session.begin():
                await lifecycle.finish(session, run_id, OWNER, RunStatus.FAILED, error="boom")
                if emit:
                    # As the engine calls it: the facts it loaded with the run, so only the endpoint lookup runs.
                    facts = outbox.RunFacts(run_id, "failed", 2, "/1/2/", 1, 1, "f", 1, "boom")
                    await outbox.emit_run_event(session, outbox.EventType.RUN_FAILED, facts)
        return (time.perf_counter() - started) / size * 1e6

    async def compare(label: str) -> None:
        # Interleaved rounds, medians: a shared machine's load drifts, and both sides see the same drift.
        size = max(runs // ROUNDS, 1)
        base, hooked = [], []
        for _ in range(ROUNDS):
            base.append(await finish_batch(size, emit=False))
            hooked.append(await finish_batch(size, emit=True))
        b, h = statistics.median(base), statistics.median(hooked)
        print(f"{label:34} baseline {b:8.1f} µs/run   with events {h:8.1f} µs/run   {h / b:.2f}x")

    await compare("no endpoint anywhere")
    async with sessions() as session, session.begin():
        session.add_all(
            EventEndpoint(org_id=3, url=f"https://x{i}.example/h", event_types=["run.failed"], secret_sealed="-")
            for i in range(20)
        )
    await compare("20 endpoints in a sibling org")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        sync = create_sync_engine(url)
        metadata.create_all(sync)
        sync.dispose()
        asyncio.run(measure(url, args.runs))


if __name__ == "__main__":
    main()
