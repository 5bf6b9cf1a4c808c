"""The runs list at volume (ihub.runs.service.page_runs): every filter reads an index that ends in the id, so a
page costs a page of index entries however rare the matches are. Asserted on the databases' own plans (SQLite
`EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`), not on timings; and the answers are exact: time ranges at their
boundaries, a subtree's union of per-project pages with a status, both ways through the keyset pages."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from failure_seed import BASE, seed
from ihub.db.plans import capture, explain
from ihub.runs import inbox, service
from ihub.runs.models import Run
from ihub.runs.service import RunFilter, page_runs

pytestmark = pytest.mark.anyio

START = datetime(2026, 4, 1, tzinfo=UTC)
STATUSES = ("succeeded",) * 8 + ("failed", "cancelled")
COUNT = 1500


async def world(app: Any, client: Any, auth: dict[str, str], filler: int = 0) -> dict[str, Any]:
    """The failure seed's organizations and projects, and COUNT runs a minute apart over its three projects
    (b's holding most); then `filler` more runs of b's, created after them, written in one statement."""
    seeded = await seed(app, client, auth)
    projects = [seeded.projects[name] for name in ("a", "a_child", "b")]
    rows = []
    rng = random.Random(5)
    async with app.state.context.sessions() as session:
        for index in range(COUNT):
            # b holds most runs: a's subtree is a small share, as most tenants' are at volume.
            project = projects[rng.choices((0, 1, 2), weights=(1, 1, 8))[0]]
            flows = [int(f["id"]) for f in project["flows"]]
            status = rng.choice(STATUSES) if rng.random() > 0.01 else "waiting_for_connection"
            run = Run(
                project_id=int(project["id"]),
                flow_id=flows[rng.randrange(2)],
                status=status,
                trigger_type="manual",
                trigger={"body": {}},
                created_at=START + timedelta(minutes=index),
            )
            rows.append(run)
        session.add_all(rows)
        await session.commit()
        runs = [(r.id, r.project_id, r.flow_id, r.status, r.created_at) for r in rows]
        if filler:
            await add_filler(session, seeded.projects["b"], filler)
        await session.execute(text("ANALYZE"))
        await session.commit()
    return {"seeded": seeded, "runs": runs, "projects": projects}


async def add_filler(session: Any, project: dict[str, Any], count: int) -> None:
    """`count` succeeded runs of `project`, a millisecond apart after the others (ids keep growing with time)."""
    flow = int(project["flows"][0]["id"])
    values = {"project": int(project["id"]), "flow": flow, "count": count}
    if session.get_bind().dialect.name == "sqlite":
        numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
        created = "strftime('%Y-%m-%d %H:%M:%f000', '2026-05-01', '+' || (i / 1000.0) || ' seconds')"
        source = "FROM n"
    else:
        numbers = ""
        created = "TIMESTAMPTZ '2026-05-01 00:00:00+00' + i * INTERVAL '1 millisecond'"
        source = "FROM generate_series(1, :count) AS i"
    await session.execute(
        text(
            numbers
            + "INSERT INTO runs (uid, project_id, flow_id, flow_version, status, trigger_type, trigger, attempt,"
            f" cancel_requested, created_at) SELECT 'filler-' || i, :project, :flow, 1, 'succeeded', 'manual', '{{}}',"
            f" 0, false, {created} {source}"
        ),
        values,
    )


async def plans_of(app: Any, call: Any) -> list[str]:
    """The plans of the SELECTs on runs that `call(session)` makes."""
    context = app.state.context
    async with context.sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            # A table of a few thousand rows fits in a few pages, where reading it all (or a bitmap of it) and
            # sorting is cheapest; with those priced out, the planner shows which index gives each page in id
            # order, as it chooses with millions of rows.
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                await session.execute(text(f"SET {setting} = off"))
        # This session's statements only: the app's background work runs on the same engine meanwhile.
        with capture(context.engine, connection=await session.connection()) as captured:
            await call(session)
        return [await explain(session, sql, params) for sql, params in captured.reading("runs")]


def reads(plan: str, index: str, times: int = 1) -> bool:
    """Whether `plan` reads `index` (`times` times: a union's arms). PostgreSQL may instead walk the primary key
    newest first for a project's unfiltered page when the project holds a large share of a small table (a few
    rows per match, all in cache): that plan is bounded by the page's LIMIT too, and at volume the planner picks
    the project's index (bench/runs_at_volume.py --plans shows it)."""
    found = plan.count(f" {index} ") + plan.count(f" {index}\n") + plan.endswith(f" {index}")
    if index == "ix_runs_project_created" and "Index Scan" in plan:
        found += plan.count("Index Scan Backward using pk_runs")
    return found >= times


def by_primary_key(plan: str) -> bool:
    """Whether `plan` reads runs by their ids only (the page's rows, once the page's ids are chosen)."""
    return "USING INTEGER PRIMARY KEY" in plan or ("pk_runs" in plan and "Seq Scan" not in plan)


async def test_each_filter_reads_its_index(app, client, auth) -> None:  # noqa: ANN001
    data = await world(app, client, auth, filler=50_000)
    seeded = data["seeded"]
    project = int(data["projects"][0]["id"])
    flow = str(data["projects"][0]["flows"][0]["id"])
    a_path = f"/1/{seeded.a}/"
    since, until = START + timedelta(days=0, minutes=300), START + timedelta(minutes=600)
    shapes = {
        "ix_runs_project_created": lambda s: page_runs(s, RunFilter(), project_id=project, before=900),
        "ix_runs_project_status": lambda s: page_runs(
            s, RunFilter(status="waiting_for_connection"), project_id=project
        ),
        "ix_runs_flow": lambda s: page_runs(s, RunFilter(flow=flow), project_id=project),
        "ix_runs_flow_status": lambda s: page_runs(s, RunFilter(flow=flow, status="cancelled"), project_id=project),
        "ix_runs_created_at": lambda s: page_runs(s, RunFilter(since=since, until=until), project_id=project),
        "ix_runs_failure_project": lambda s: inbox.group_runs(s, a_path, seeded.shared),
    }
    for index, call in shapes.items():
        plans = await plans_of(app, call)
        assert plans and any(reads(plan, index) for plan in plans), (index, plans)
        assert not any("SCAN runs\n" in plan + "\n" or "Seq Scan on runs" in plan for plan in plans), (index, plans)
    # A subtree of two projects is a union of two per-project pages, each on its index.
    for status, index in ((None, "ix_runs_project_created"), ("failed", "ix_runs_project_status")):
        plans = await plans_of(app, lambda s, st=status: page_runs(s, RunFilter(status=st), org_path=a_path))
        # Then the page's rows by primary key (their payloads' sizes are read first: service.PAGE_PAYLOAD_CHARS).
        assert len(plans) == 2 and reads(plans[0], index, times=2) and by_primary_key(plans[1]), plans
    # A time range composes with the others: its id range bounds the status index.
    plans = await plans_of(
        app, lambda s: page_runs(s, RunFilter(status="failed", since=since, until=until), org_path=a_path)
    )
    # (Each arm on one of the project's indexes, with the id bounds: PostgreSQL reads a narrow id range of the
    # project's runs rather than all its failed ones when that is fewer entries.)
    page, rows = plans[-2], plans[-1]
    arms = page.count("ix_runs_project_status") + page.count("ix_runs_project_created")
    assert any("ix_runs_created_at" in plan for plan in plans[:-2]) and arms >= 2 and by_primary_key(rows), plans


async def test_time_ranges_and_subtree_status_are_exact(app, client, auth) -> None:  # noqa: ANN001
    data = await world(app, client, auth)
    seeded, runs = data["seeded"], data["runs"]
    a_projects = {int(data["projects"][0]["id"]), int(data["projects"][1]["id"])}
    a_path = f"/1/{seeded.a}/"

    async def every(filters: RunFilter, **scope: Any) -> tuple[list[int], list[int]]:
        """All pages older-wards, then newer-wards back from the last page."""
        async with app.state.context.sessions() as session:
            older: list[int] = []
            page = await page_runs(session, filters, limit=7, **scope)
            older += [r.id for r in page.runs]
            while page.older is not None:
                page = await page_runs(session, filters, limit=7, before=page.older, **scope)
                older += [r.id for r in page.runs]
            newer = [r.id for r in page.runs]
            while page.newer is not None:
                page = await page_runs(session, filters, limit=7, after=page.newer, **scope)
                newer = [r.id for r in page.runs] + newer
            return older, newer

    # Boundaries on exact creation times: since is inclusive, until exclusive.
    since, until = START + timedelta(minutes=100), START + timedelta(minutes=160)
    expected = [i for i, p, _f, _s, at in reversed(runs) if since <= at < until and p in a_projects]
    older, newer = await every(RunFilter(since=since, until=until), org_path=a_path)
    assert older == expected == newer and len(expected) > 5
    # Between two runs' times, and past the last run / before the first.
    created = {run_id: at for run_id, _p, _f, _s, at in runs}
    between = created[expected[-1]] + timedelta(seconds=30)  # just after the subtree's first run of the range
    older, _ = await every(RunFilter(since=between, until=until), org_path=a_path)
    assert older == expected[:-1]
    older, _ = await every(RunFilter(since=since, until=created[expected[0]]), org_path=a_path)
    assert older == expected[1:]  # until the last one's exact time: it is left out
    assert (await every(RunFilter(since=START + timedelta(days=30)), org_path=a_path))[0] == []
    assert (await every(RunFilter(until=BASE), org_path=a_path))[0] == []  # before the seed's first run

    # A subtree with a status, through the union of its projects' pages: every match once, in order.
    expected = [i for i, p, _f, s, _at in reversed(runs) if s == "cancelled" and p in a_projects]
    older, newer = await every(RunFilter(status="cancelled"), org_path=a_path)
    assert older == expected == newer and len(expected) > 7
    # ... and with a time range and a flow key too.
    flow_ids = {int(f["id"]) for p in data["projects"][:2] for f in p["flows"] if f["key"] == "sync"}
    expected = [
        i
        for i, p, f, s, at in reversed(runs)
        if s == "failed" and p in a_projects and f in flow_ids and since <= at < START + timedelta(minutes=700)
    ]
    older, newer = await every(
        RunFilter(status="failed", flow="sync", since=since, until=START + timedelta(minutes=700)), org_path=a_path
    )
    assert older == expected == newer and expected
    # The fallback past UNION_LIMIT projects answers the same.
    original = service.UNION_LIMIT
    service.UNION_LIMIT = 1
    try:
        fallback, _ = await every(
            RunFilter(status="failed", flow="sync", since=since, until=START + timedelta(minutes=700)), org_path=a_path
        )
    finally:
        service.UNION_LIMIT = original
    assert fallback == expected
