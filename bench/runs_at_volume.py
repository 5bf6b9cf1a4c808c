#!/usr/bin/env python
"""Runs at volume: every filter of the runs list and the failure inbox, timed with millions of runs.

    PYTHONPATH=src .venv/bin/python bench/runs_at_volume.py [--runs 10000000] [--db sqlite|postgresql|both]
        [--repeat 50] [--json]

Makes a fresh database from the migrations (a SQLite file in a temporary directory; a database of its own on the
PostgreSQL server at IHUB_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres, dropped at
the end), then bulk-loads `--runs` runs (executemany on SQLite, COPY on PostgreSQL; the runs table's secondary
indexes are dropped for the load and rebuilt after, as a restore would) with a realistic spread:

- an organization tree of 1 root, 20 customers and 5 branches each (121 organizations), 2 projects each (242),
  skewed so that a few projects hold many runs (Zipf-like weights);
- 4 templates with 3 flows each; every project uses one template;
- 96 % succeeded, 3 % failed (each failure in one of 4 failure groups of its flow, counted in `failure_groups`
  as the engine does), 0.9 % cancelled, 0.1 % waiting_for_connection (the rare status);
- created over 180 days, ids growing with time.

Each query shape then runs `--repeat` times through the hub's own services (`ihub.runs.service.page_runs`,
`ihub.runs.inbox`), as the API and the console call them, with parameters varied per repetition. Printed per
shape: p50 and p99 in milliseconds, and the p50 as a ratio against the baseline measured in the same run (a
primary-key lookup of one run through the same session). The target is under 50 ms per shape.
The machine's load changes the absolute numbers; the ratios and the plans are what carry over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.db.engine import create_engine, create_sessionmaker, sync_url
from ihub.db.migrate import upgrade
from ihub.db.plans import capture, explain
from ihub.db.registry import metadata
from ihub.runs import failures, inbox, service
from ihub.runs.models import Run
from ihub.runs.service import UNION_LIMIT, RunFilter, page_runs

TARGET_MS = 50.0
CUSTOMERS, BRANCHES, PROJECTS_PER_ORG = 20, 5, 2
TEMPLATES, FLOWS = 4, ("sync-contacts", "import-orders", "notify")
DAYS = 180
RARE = "waiting_for_connection"
DB_TIME = "%Y-%m-%d %H:%M:%S.%f"
ERRORS = (
    "HTTP 401 unauthorized: token expired",
    "HTTP 422 record {n} rejected",
    "HTTP 503 upstream unavailable after {n} ms",
    "timed out after {n} s",
)


class World:
    """The organizations, projects and flows made before the runs, and what the queries pick from."""

    def __init__(self) -> None:
        self.orgs: list[tuple[int, int | None, str]] = []  # id, parent, path
        self.projects: list[tuple[int, int, int]] = []  # id, org id, template id
        self.flows: dict[int, list[int]] = {}  # project id -> its flow ids (in FLOWS order)
        self.flow_key: dict[int, str] = {}
        self.failure_keys: list[str] = []
        self.first_id = 1
        self.last_id = 0
        self.start = datetime(2026, 1, 1, tzinfo=UTC)


def build_world() -> World:
    world = World()
    world.orgs.append((1, None, "/1/"))
    next_org = 2
    for _ in range(CUSTOMERS):
        customer = next_org
        world.orgs.append((customer, 1, f"/1/{customer}/"))
        next_org += 1
        for _ in range(BRANCHES):
            world.orgs.append((next_org, customer, f"/1/{customer}/{next_org}/"))
            next_org += 1
    project_id, flow_id = 1, 1
    for org_id, _parent, _path in world.orgs:
        for n in range(PROJECTS_PER_ORG):
            template_id = 1 + (org_id + n) % TEMPLATES
            world.projects.append((project_id, org_id, template_id))
            world.flows[project_id] = []
            for key in FLOWS:
                world.flows[project_id].append(flow_id)
                world.flow_key[flow_id] = key
                flow_id += 1
            project_id += 1
    return world


def load_structure(url: str, world: World) -> None:
    """Organizations, templates, projects and flows through SQLAlchemy Core (a few hundred rows)."""
    engine = create_sync_engine(sync_url(url))
    now = datetime.now(UTC)
    t = metadata.tables
    with engine.begin() as conn:
        conn.execute(
            t["organizations"].insert(),
            [
                {"id": i, "name": f"org {i}", "parent_id": p, "path": path, "created_at": now}
                for i, p, path in world.orgs
            ],
        )
        definition = {"connections": [], "flows": [{"key": k, "trigger": "manual", "steps": []} for k in FLOWS]}
        conn.execute(
            t["templates"].insert(),
            [
                {"id": i, "org_id": 1, "name": f"template {i}", "definition": definition, "created_at": now}
                | {"updated_at": now, "description": "", "version": 1}
                for i in range(1, TEMPLATES + 1)
            ],
        )
        conn.execute(
            t["projects"].insert(),
            [
                {"id": p, "org_id": o, "template_id": tpl, "name": f"project {p}", "description": "", "settings": {}}
                | {"created_at": now, "updated_at": now, "template_version": 1}
                for p, o, tpl in world.projects
            ],
        )
        conn.execute(
            t["flows"].insert(),
            [
                {"id": f, "project_id": p, "key": world.flow_key[f], "active": True, "created_at": now}
                for p, flows in world.flows.items()
                for f in flows
            ],
        )
        if engine.dialect.name == "postgresql":
            for table in ("organizations", "templates", "projects", "flows"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
    engine.dispose()


def run_rows(
    world: World, count: int, groups: Counter[tuple[int, str]], seen: dict[tuple[int, str], Any], zone: str
) -> Iterator[tuple[Any, ...]]:
    """The rows of COLUMNS; created_at as text, with `zone` appended (SQLite stores UTC without one)."""
    rng = random.Random(7)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(world.projects))]
    rng.shuffle(weights)
    org_of = {p: o for p, o, _t in world.projects}
    template_of = {p: t for p, _o, t in world.projects}
    described: dict[tuple[int, int, str, int], failures.Failure] = {}
    span = timedelta(days=DAYS).total_seconds()
    chunk = 10_000
    for first in range(0, count, chunk):
        projects = rng.choices([p for p, _o, _t in world.projects], weights=weights, k=min(chunk, count - first))
        for offset, project in enumerate(projects):
            index = first + offset
            created = world.start + timedelta(seconds=span * index / count)
            roll = rng.random()
            flow = world.flows[project][rng.randrange(len(FLOWS))]
            error = failed_step = failure_key = None
            if roll < 0.96:
                status = "succeeded"
            elif roll < 0.99:
                status = "failed"
                org = org_of[project]
                kind = rng.randrange(len(ERRORS))
                cache_key = (org, template_of[project], world.flow_key[flow], kind)
                failure = described.get(cache_key)
                if failure is None:
                    failure = described[cache_key] = failures.describe(
                        org_id=org,
                        template_id=template_of[project],
                        flow_key=world.flow_key[flow],
                        path="each[0].create",
                        error=ERRORS[kind].format(n=1),
                    )
                error, failed_step, failure_key = ERRORS[kind].format(n=index), failure.step, failure.key
                groups[(org, failure.key)] += 1
                seen.setdefault((org, failure.key), [failure, created, created])[2] = created
            elif roll < 0.999:
                status = "cancelled"
            else:
                status = RARE
            yield (
                index + 1,
                str(uuid.UUID(int=rng.getrandbits(128))),
                project,
                flow,
                status,
                "manual",
                '{"body": {}}',
                error,
                failed_step,
                failure_key,
                created.strftime(DB_TIME) + zone,
                1,
                0,
                False,
            )


COLUMNS = (
    "id, uid, project_id, flow_id, status, trigger_type, trigger, error, failed_step, failure_key, created_at,"
    " flow_version, attempt, cancel_requested"
)


def runs_indexes() -> list[Index]:
    return sorted(metadata.tables["runs"].indexes, key=lambda index: index.name or "")


def load_runs(url: str, world: World, count: int) -> float:
    """Bulk-load the runs and their failure groups; returns the seconds it took."""
    started = time.perf_counter()
    groups: Counter[tuple[int, str]] = Counter()
    seen: dict[tuple[int, str], Any] = {}
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        for index in runs_indexes():
            index.drop(conn)
    engine.dispose()
    sqlite = make_url(url).get_backend_name() == "sqlite"
    rows = run_rows(world, count, groups, seen, "" if sqlite else "+00:00")
    if sqlite:
        db = sqlite3.connect(make_url(url).database or "")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-400000")
        placeholders = ", ".join("?" * len(COLUMNS.split(",")))
        db.executemany(
            f"INSERT INTO runs ({COLUMNS}) VALUES ({placeholders})",
            rows,
        )
        db.commit()
        db.close()
    else:
        import psycopg

        plain = make_url(sync_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain) as pg, pg.cursor() as cursor:
            with cursor.copy(f"COPY runs ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs))")
    world.last_id = count
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA cache_size=-400000"))
        for index in runs_indexes():
            index.create(conn)
        conn.execute(
            metadata.tables["failure_groups"].insert(),
            [
                {
                    "org_id": org,
                    "failure_key": key,
                    "template_id": failure.template_id,
                    "flow_key": failure.flow_key,
                    "step": failure.step,
                    "signature": failure.signature,
                    "sample_error": failure.error,
                    "count": total,
                    "first_seen": first,
                    "last_seen": last,
                }
                for (org, key), total in groups.items()
                for failure, first, last in [seen[(org, key)]]
            ],
        )
        world.failure_keys = sorted({key for _org, key in groups})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


Shape = Callable[[AsyncSession, random.Random], Awaitable[Any]]


def shapes(world: World) -> dict[str, Shape]:
    """Each query shape of the runs list, the console and the inbox, as the services are called."""
    projects = [p for p, _o, _t in world.projects]
    customers = [o for o, parent, _path in world.orgs if parent == 1]
    path_of = {o: path for o, _p, path in world.orgs}
    span = world.last_id - world.first_id

    def past_day(rng: random.Random) -> tuple[datetime, datetime]:
        since = world.start + timedelta(days=rng.randrange(10, DAYS - 10))
        return since, since + timedelta(days=1)

    def middle_id(rng: random.Random) -> int:
        return world.first_id + span // 4 + rng.randrange(max(1, span // 2))

    async def baseline(s: AsyncSession, rng: random.Random) -> Any:
        return await s.get(Run, middle_id(rng), populate_existing=True)

    async def project_first_page(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(), project_id=rng.choice(projects))

    async def project_rare_status(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(status=RARE), project_id=rng.choice(projects))

    async def project_flow(s: AsyncSession, rng: random.Random) -> Any:
        project = rng.choice(projects)
        return await page_runs(s, RunFilter(flow=str(rng.choice(world.flows[project]))), project_id=project)

    async def project_flow_failed(s: AsyncSession, rng: random.Random) -> Any:
        project = rng.choice(projects)
        flow = str(rng.choice(world.flows[project]))
        return await page_runs(s, RunFilter(flow=flow, status="failed"), project_id=project)

    async def project_past_day(s: AsyncSession, rng: random.Random) -> Any:
        since, until = past_day(rng)
        return await page_runs(s, RunFilter(since=since, until=until), project_id=rng.choice(projects))

    async def project_past_day_failed(s: AsyncSession, rng: random.Random) -> Any:
        since, until = past_day(rng)
        return await page_runs(s, RunFilter(status="failed", since=since, until=until), project_id=rng.choice(projects))

    async def deep_page(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(), project_id=rng.choice(projects), before=middle_id(rng))

    async def subtree_first_page(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(), org_path=path_of[rng.choice(customers)])

    async def subtree_rare_status(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(status=RARE), org_path=path_of[rng.choice(customers)])

    async def subtree_flow_key(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(flow=rng.choice(FLOWS)), org_path=path_of[rng.choice(customers)])

    async def subtree_past_day(s: AsyncSession, rng: random.Random) -> Any:
        since, until = past_day(rng)
        return await page_runs(s, RunFilter(since=since, until=until), org_path=path_of[rng.choice(customers)])

    async def subtree_deep_page(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(), org_path=path_of[rng.choice(customers)], before=middle_id(rng))

    async def root_first_page(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(), org_path="/1/")

    async def root_failed(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(status="failed"), org_path="/1/", before=middle_id(rng))

    async def root_rare_status(s: AsyncSession, rng: random.Random) -> Any:
        return await page_runs(s, RunFilter(status=RARE), org_path="/1/", before=middle_id(rng))

    async def as_union(call: Callable[[], Awaitable[Any]]) -> Any:
        """`call` with the root's projects under UNION_LIMIT: what the union costs with that many arms."""
        original = service.UNION_LIMIT
        service.UNION_LIMIT = len(projects)
        try:
            return await call()
        finally:
            service.UNION_LIMIT = original

    async def root_union_first_page(s: AsyncSession, rng: random.Random) -> Any:
        return await as_union(lambda: page_runs(s, RunFilter(), org_path="/1/"))

    async def root_union_rare_status(s: AsyncSession, rng: random.Random) -> Any:
        return await as_union(lambda: page_runs(s, RunFilter(status=RARE), org_path="/1/", before=middle_id(rng)))

    async def inbox_root(s: AsyncSession, rng: random.Random) -> Any:
        return await inbox.groups(s, "/1/", inbox.InboxFilter())

    async def inbox_customer(s: AsyncSession, rng: random.Random) -> Any:
        return await inbox.groups(s, path_of[rng.choice(customers)], inbox.InboxFilter())

    async def group_runs_customer(s: AsyncSession, rng: random.Random) -> Any:
        path = path_of[rng.choice(customers)]
        page = await inbox.groups(s, path, inbox.InboxFilter(), limit=5)
        key = rng.choice(page.groups).key if page.groups else world.failure_keys[0]
        return await inbox.group_runs(s, path, key)

    async def group_runs_root(s: AsyncSession, rng: random.Random) -> Any:
        return await inbox.group_runs(s, "/1/", rng.choice(world.failure_keys), before=middle_id(rng))

    return {
        "baseline: run by primary key": baseline,
        "project, first page": project_first_page,
        f"project + status {RARE}": project_rare_status,
        "project + flow": project_flow,
        "project + flow + status failed": project_flow_failed,
        "project + one day 10-170 days ago": project_past_day,
        "project + one day ago + failed": project_past_day_failed,
        "project, deep keyset page (middle)": deep_page,
        "customer subtree (12 projects), first page": subtree_first_page,
        f"customer subtree + status {RARE}": subtree_rare_status,
        "customer subtree + flow key": subtree_flow_key,
        "customer subtree + one day ago": subtree_past_day,
        "customer subtree, deep keyset page": subtree_deep_page,
        f"root subtree ({len(projects)} projects > {UNION_LIMIT}: one query), first page": root_first_page,
        "root subtree + failed, deep page": root_failed,
        f"root subtree + {RARE}, deep page": root_rare_status,
        f"root subtree as a union of {len(projects)}, first page": root_union_first_page,
        f"root subtree as a union of {len(projects)} + {RARE}, deep page": root_union_rare_status,
        "failure inbox of the root": inbox_root,
        "failure inbox of a customer": inbox_customer,
        "a group's runs in a customer subtree (incl. inbox read)": group_runs_customer,
        "a group's runs at the root, deep page": group_runs_root,
    }


async def measure(url: str, world: World, repeat: int, plans: bool) -> list[dict[str, Any]]:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    results = []
    try:
        for name, shape in shapes(world).items():
            rng = random.Random(name)
            times = []
            async with sessions() as session:
                if plans:
                    with capture(engine) as captured:
                        await shape(session, random.Random(name))
                    print(f"-- {name}", file=sys.stderr)
                    for statement, parameters in captured.statements:
                        if statement.lstrip().upper().startswith("SELECT"):
                            plan = await explain(session, statement, parameters)
                            print("   " + statement.replace("\n", " ")[:200], file=sys.stderr)
                            print("     " + plan.replace("\n", "\n     "), file=sys.stderr)
                for n in range(repeat + 3):
                    started = time.perf_counter()
                    await shape(session, rng)
                    elapsed = (time.perf_counter() - started) * 1000
                    if n >= 3:  # warm-up: the first calls compile and cache the statements
                        times.append(elapsed)
                    session.expunge_all()
            times.sort()
            results.append(
                {
                    "shape": name,
                    "p50_ms": round(statistics.median(times), 2),
                    "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
                }
            )
    finally:
        await engine.dispose()
    base = results[0]["p50_ms"] or 0.01
    for result in results:
        result["ratio"] = round(result["p50_ms"] / base, 1)
    return results


def postgres_database() -> tuple[str, Callable[[], None]]:
    import psycopg

    admin = make_url(os.environ.get("IHUB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    name = f"ihub_bench_{os.getpid()}"
    plain = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin.set(database=name).render_as_string(hide_password=False), drop


def bench(backend: str, runs: int, repeat: int, plans: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ihub-runs-bench-") as folder:
        drop: Callable[[], None] = lambda: None  # noqa: E731
        if backend == "sqlite":
            url = f"sqlite:///{Path(folder) / 'ihub.db'}"
        else:
            url, drop = postgres_database()
        try:
            upgrade(url)
            world = build_world()
            load_structure(url, world)
            print(f"[{backend}] loading {runs:,} runs ...", file=sys.stderr, flush=True)
            seconds = load_runs(url, world, runs)
            print(f"[{backend}] loaded in {seconds:.0f} s; measuring", file=sys.stderr, flush=True)
            results = asyncio.run(measure(url, world, repeat, plans))
        finally:
            drop()
    return {"backend": backend, "runs": runs, "load_seconds": round(seconds), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--plans", action="store_true", help="print each shape's query plans on stderr")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    reports = [bench(backend, args.runs, args.repeat, args.plans) for backend in backends]
    if args.json:
        print(json.dumps(reports, indent=2))
        return
    for report in reports:
        print(f"\n{report['backend']}: {report['runs']:,} runs (loaded in {report['load_seconds']} s)")
        print(f"{'query shape':<62} {'p50 ms':>8} {'p99 ms':>8} {'x base':>7}")
        for result in report["results"]:
            flag = "" if result["p50_ms"] <= TARGET_MS else "  over target"
            print(f"{result['shape']:<62} {result['p50_ms']:>8} {result['p99_ms']:>8} {result['ratio']:>7}{flag}")


if __name__ == "__main__":
    main()
