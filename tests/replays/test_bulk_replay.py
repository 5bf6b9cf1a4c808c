"""Bulk replay (issue 11): a dry run says how many and which; a batch replays each selected run once, at its
rate, skipping runs already replayed, and resumes after a crash or beside another worker without duplicates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from db_snapshot import NothingWritten, changed_tables, snapshot
from ihub.db.base import utcnow
from ihub.replays.models import ReplayBatch, ReplayItem
from ihub.runs.models import Run
from replay_kit import FakeTime, batch, count_runs, failed_runs, key, project, replays_of, worker

pytestmark = pytest.mark.anyio


class Died(BaseException):
    """Stands for the process dying (not an Exception: no handler of the hub catches it)."""


async def start(client, auth, org_id: str = "1", **body) -> dict:  # noqa: ANN001
    response = await client.post(f"/api/v1/org/{org_id}/replays", json=body, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()["replays"][0]


async def test_dry_run_counts_the_selection_its_skips_and_shows_which(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    group = await failed_runs(app, prj, 5, failure_key=key("a"))
    other = await failed_runs(app, prj, 2, failure_key=key("b"))
    # group[0] was replayed and that went through; group[1]'s replay failed the same way (it is in the group
    # itself, and stands for group[1]); group[2]'s replay was cancelled (not a reason to skip).
    await failed_runs(app, prj, 1, failure_key=key("c"), status="succeeded", replay_of=group[0])
    newer = await failed_runs(app, prj, 1, failure_key=key("a"), replay_of=group[1])
    await failed_runs(app, prj, 1, failure_key=key("c"), status="cancelled", replay_of=group[2])

    before = await snapshot(app.state.context.sessions)
    response = await client.post("/api/v1/org/1/replays", json={"failureKey": key("a"), "dryRun": True}, headers=auth)
    assert response.status_code == 200, response.text
    # A dry run replays nothing and makes no batch; the audit log records who looked (docs/operations.md).
    assert changed_tables(before, await snapshot(app.state.context.sessions)) == {"audit_entries"}
    preview = response.json()
    assert (preview["selected"], preview["alreadyReplayed"], preview["superseded"], preview["toReplay"]) == (6, 1, 1, 4)
    sample = preview["sample"]
    assert [s["runId"] for s in sample] == [str(i) for i in [*group, *newer]]
    assert {s["runId"]: s["skip"] for s in sample if s["skip"]} == {
        str(group[0]): "already_replayed",
        str(group[1]): "superseded",
    }
    assert sample[0]["flowKey"] == "sync" and "HTTP 401" in sample[0]["error"] and sample[0]["failedStep"] == "push"
    assert str(other[0]) not in {s["runId"] for s in sample}

    # The same by filter: the flow's failed runs, whatever their group.
    response = await client.post(
        "/api/v1/org/1/replays", json={"flow": "sync", "dryRun": True, "since": "2000-01-01T00:00:00Z"}, headers=auth
    )
    assert response.json()["selected"] == 8

    # Replaying the group: the skipped ones get no replay from the batch, and the batch says why.
    started = await start(client, auth, failureKey=key("a"))
    await worker(app).run_until_idle()
    assert await replays_of(app, [*group, *newer]) == {
        group[0]: 1,  # the succeeded replay, no other
        group[1]: 1,  # `newer`, no other
        group[2]: 2,  # the cancelled one, and the batch's
        group[3]: 1,
        group[4]: 1,
        newer[0]: 1,
    }
    done = await batch(app, started["id"])
    assert (done.replayed, done.skipped, done.failed, done.status) == (4, 2, 0, "done")
    async with app.state.context.sessions() as session:
        items = {i.run_id: i for i in (await session.scalars(select(ReplayItem))).all()}
    assert (items[group[0]].outcome, items[group[0]].detail, items[group[0]].replay_run_id) == (
        "skipped",
        "already_replayed",
        None,
    )
    assert (items[group[1]].outcome, items[group[1]].detail) == ("skipped", "superseded")
    assert items[group[3]].outcome == "replayed" and items[group[3]].replay_run_id is not None


async def test_a_thousand_failed_runs_are_replayed_once_each_at_the_rate(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 1000, failure_key=key("d"))
    dry = await client.post("/api/v1/org/1/replays", json={"failureKey": key("d"), "dryRun": True}, headers=auth)
    assert (dry.json()["selected"], dry.json()["toReplay"]) == (1000, 1000)

    started = await start(client, auth, failureKey=key("d"), rate=100)
    assert (started["status"], started["selected"], started["remaining"]) == ("pending", 1000, 1000)
    time = FakeTime()
    await worker(app, time).run_until_idle()

    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    done = (await client.get(f"/api/v1/replays/{started['id']}", headers=auth)).json()["replays"][0]
    assert (done["status"], done["replayed"], done["skipped"], done["failed"], done["remaining"]) == (
        "done",
        1000,
        0,
        0,
        0,
    )
    assert done["cursor"] == str(originals[-1]) and done["finishedAt"]
    assert len(done["items"]) == 50 and done["items"][0]["outcome"] == "replayed"
    # 1000 replays at 100 per second: the worker waited 10 seconds in all (pages of 50, half a second each).
    assert sum(time.waits) == pytest.approx(10.0)
    assert all(wait == pytest.approx(0.5) for wait in time.waits)
    async with app.state.context.sessions() as session:
        replays = (await session.scalars(select(Run).where(Run.replay_of.in_(originals)))).all()
    assert {r.status for r in replays} == {"queued"}
    assert sorted(r.trigger["body"]["n"] for r in replays) == list(range(1000))

    # A second batch of the same group skips them all: their replays are under way.
    again = await start(client, auth, failureKey=key("d"))
    await worker(app).run_until_idle()
    assert ((await batch(app, again["id"])).skipped, (await batch(app, again["id"])).replayed) == (1000, 0)
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)


async def test_a_crashed_worker_is_taken_over_where_it_stopped(client, auth, app, monkeypatch) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 120, failure_key=key("1"))
    started = await start(client, auth, failureKey=key("1"), rate=40)

    first = worker(app)
    assert await first.claim_next() == int(started["id"])
    page = await first.page(int(started["id"]))
    assert page is not None and page.replayed == 40
    # ... and the first worker dies here, holding the lease. Nobody takes it over while the lease lasts.
    second_time = FakeTime()
    assert await worker(app, second_time).claim_next() is None

    lease = app.state.context.settings.replay_lease_seconds
    later = worker(app, second_time, now=lambda: utcnow() + timedelta(seconds=2 * lease))
    await later.run_until_idle()
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    done = await batch(app, started["id"])
    assert (done.status, done.replayed, done.lease_owner) == ("done", 120, None)

    # The first worker wakes up: its lease is gone, it writes nothing.
    before = await count_runs(app)
    assert await first.page(int(started["id"])) is None
    assert await count_runs(app) == before

    # A worker killed inside a page (its transaction never commits): the page's replays vanish with it and the
    # next worker replays those runs, once.
    from ihub.replays import worker as worker_module

    originals = await failed_runs(app, prj, 30, failure_key=key("2"))
    started = await start(client, auth, failureKey=key("2"), rate=10)
    real = worker_module.create_replay
    calls = 0

    async def dies_on_the_fifteenth(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal calls
        calls += 1
        if calls == 15:
            raise Died  # the process dies here: nothing below catches it
        return await real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "create_replay", dies_on_the_fifteenth)
    first = worker(app)
    with pytest.raises(Died):
        await first.run_until_idle()
    assert await replays_of(app, originals) == dict.fromkeys(originals[:10], 1)
    assert (await batch(app, started["id"])).cursor == originals[9]

    lease = app.state.context.settings.replay_lease_seconds
    await worker(app, now=lambda: utcnow() + timedelta(seconds=2 * lease)).run_until_idle()
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)


async def test_two_workers_at_once_replay_each_run_once(client, auth, app) -> None:  # noqa: ANN001
    import asyncio

    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 150, failure_key=key("3"))
    other = await failed_runs(app, prj, 60, failure_key=key("4"))
    await start(client, auth, failureKey=key("3"), rate=25)
    await start(client, auth, failureKey=key("4"), rate=25)
    await asyncio.gather(worker(app).run_until_idle(), worker(app).run_until_idle(), worker(app).run_until_idle())
    assert await replays_of(app, originals + other) == dict.fromkeys(originals + other, 1)

    # The backstop: a worker that would write an already handled page (its cursor wound back here by hand) fails
    # its commit, and the page's replays roll back with it.
    originals = await failed_runs(app, prj, 10, failure_key=key("5"))
    started = await start(client, auth, failureKey=key("5"))
    await worker(app).run_until_idle()
    rogue = worker(app)
    async with app.state.context.sessions() as session:
        await session.execute(
            update(ReplayBatch)
            .where(ReplayBatch.id == int(started["id"]))
            .values(status="running", cursor=0, lease_owner=rogue.owner, lease_expires_at=utcnow() + timedelta(60))
        )
        # The skip rule would spare the runs (their replays are queued): pretend those replays were cancelled.
        await session.execute(update(Run).where(Run.replay_of.in_(originals)).values(status="cancelled"))
        await session.commit()
    await rogue.work_on(int(started["id"]))
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    assert (await batch(app, started["id"])).cursor == 0


async def test_version_original_or_current(client, auth, app) -> None:  # noqa: ANN001
    from replay_kit import FAILING_FLOW, definition

    prj = await project(client, auth)
    fixed = {**FAILING_FLOW, "steps": [{"id": "done", "type": "respond", "body": {"fixed": True}}]}
    response = await client.put(
        f"/api/v1/template/{prj['templateId']}", json={"definition": definition([fixed])}, headers=auth
    )
    assert response.status_code == 200, response.text
    response = await client.post(f"/api/v1/project/{prj['id']}/upgrade", json={}, headers=auth)
    assert response.status_code == 200, response.text

    as_ran = await failed_runs(app, prj, 3, failure_key=key("6"))
    after_fix = await failed_runs(app, prj, 3, failure_key=key("7"))
    await start(client, auth, failureKey=key("6"))
    await start(client, auth, failureKey=key("7"), version="current")
    await worker(app).run_until_idle()
    async with app.state.context.sessions() as session:
        versions = dict(
            (await session.execute(select(Run.replay_of, Run.flow_version).where(Run.replay_of.isnot(None)))).all()
        )
    assert {versions[i] for i in as_ran} == {1}
    assert {versions[i] for i in after_fix} == {2}


async def test_pause_resume_and_cancel(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 30, failure_key=key("8"))
    started = await start(client, auth, failureKey=key("8"), rate=10)
    batch_id = int(started["id"])
    running = worker(app)
    assert await running.claim_next() == batch_id
    assert await running.page(batch_id) is not None

    response = await client.post(f"/api/v1/replays/{batch_id}/pause", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["replays"][0]["status"] == "paused"
    # The worker's next page finds the batch paused: it stops, replaying nothing more; nobody claims it.
    assert await running.page(batch_id) is None
    assert await worker(app).claim_next() is None
    assert sum((await replays_of(app, originals)).values()) == 10
    assert (await client.post(f"/api/v1/replays/{batch_id}/pause", headers=auth)).status_code == 409

    response = await client.post(f"/api/v1/replays/{batch_id}/resume", headers=auth)
    assert response.json()["replays"][0]["status"] == "pending"
    assert await running.claim_next() == batch_id
    assert await running.page(batch_id) is not None
    assert sum((await replays_of(app, originals)).values()) == 20

    response = await client.post(f"/api/v1/replays/{batch_id}/cancel", headers=auth)
    assert response.json()["replays"][0]["status"] == "cancelled"
    assert await running.page(batch_id) is None
    await worker(app).run_until_idle()
    assert sum((await replays_of(app, originals)).values()) == 20
    done = (await client.get(f"/api/v1/replays/{batch_id}", headers=auth)).json()["replays"][0]
    assert (done["status"], done["replayed"], done["remaining"]) == ("cancelled", 20, 0) and done["finishedAt"]
    for action in ("pause", "resume", "cancel"):
        assert (await client.post(f"/api/v1/replays/{batch_id}/{action}", headers=auth)).status_code == 409


async def test_another_tenant_sees_nothing_and_replays_nothing_of_theirs(client, auth, app, api) -> None:  # noqa: ANN001
    acme, globex = await api.add_org("acme", "1"), await api.add_org("globex", "1")
    acme_runs = await failed_runs(app, await project(client, auth, acme), 4, failure_key=key("9"))
    globex_runs = await failed_runs(app, await project(client, auth, globex), 2, failure_key=key("9"))
    globex_admin = await api.headers_for(await api.add_user(globex, "Admin"))
    globex_member = await api.headers_for(await api.add_user(globex, "Member"))

    for body in ({"failureKey": key("9")}, {"failureKey": key("9"), "dryRun": True}):
        async with NothingWritten(app):
            response = await client.post(f"/api/v1/org/{acme}/replays", json=body, headers=globex_admin)
        assert response.status_code == 404, response.text
    # The same failure key in their own subtree selects their runs only.
    preview = await client.post(
        f"/api/v1/org/{globex}/replays", json={"failureKey": key("9"), "dryRun": True}, headers=globex_admin
    )
    assert preview.json()["selected"] == 2
    assert {s["runId"] for s in preview.json()["sample"]} == {str(i) for i in globex_runs}
    theirs = await start(client, globex_admin, globex, failureKey=key("9"))
    acme_batch = await start(client, auth, acme, failureKey=key("9"))

    # A Member may look (dry run) but not start.
    allowed = await client.post(
        f"/api/v1/org/{globex}/replays", json={"failureKey": key("9"), "dryRun": True}, headers=globex_member
    )
    assert allowed.status_code == 200
    async with NothingWritten(app):
        refused = await client.post(
            f"/api/v1/org/{globex}/replays", json={"failureKey": key("9")}, headers=globex_member
        )
        assert refused.status_code == 403, refused.text
        for path in ("", "/pause", "/cancel"):
            method = client.get if not path else client.post
            response = await method(f"/api/v1/replays/{acme_batch['id']}{path}", headers=globex_admin)
            assert response.status_code == 404, response.text
        response = await client.post(f"/api/v1/replays/{theirs['id']}/pause", headers=globex_member)
        assert response.status_code == 403
    listed = (await client.get(f"/api/v1/org/{globex}/replays", headers=globex_member)).json()["replays"]
    assert [b["id"] for b in listed] == [theirs["id"]]
    assert (await client.get(f"/api/v1/org/{acme}/replays", headers=globex_admin)).status_code == 404

    await worker(app).run_until_idle()
    assert await replays_of(app, globex_runs) == dict.fromkeys(globex_runs, 1)
    assert await replays_of(app, acme_runs) == dict.fromkeys(acme_runs, 1)
    assert (await batch(app, theirs["id"])).replayed == 2


BAD_REQUESTS = [
    ({"failurekey": key("a")}, "failurekey"),  # misspelt: refused, not ignored (it would select every failed run)
    ({"failureKey": "not-hex"}, "failureKey"),
    ({"failureKey": key("a"), "status": "queued"}, "status"),
    ({"failureKey": key("a"), "status": "cancelled"}, "failureKey"),
    ({"flow": "sync", "rate": 0}, "rate"),
    ({"flow": "sync", "rate": 5000}, "rate"),
    ({"flow": "sync", "version": "latest"}, "version"),
    ({"flow": "sync", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ({"flow": "sync", "since": "2026-01-02T00:00:00"}, "zone"),
    ({"flow": "no such key!"}, "flow"),
    (["flow"], "dictionary"),
]


async def test_bad_requests_and_limits(client, auth, app, limits) -> None:  # noqa: ANN001
    async with NothingWritten(app):
        for body, needle in BAD_REQUESTS:
            response = await client.post("/api/v1/org/1/replays", json=body, headers=auth)
            assert response.status_code == 400, (body, response.text)
            assert needle in response.json()["metadata"]["message"], (body, response.text)
            if isinstance(body, dict):  # a dry run refuses what the start would refuse
                response = await client.post("/api/v1/org/1/replays", json={**body, "dryRun": True}, headers=auth)
                assert response.status_code == 400, (body, response.text)

    prj = await project(client, auth)
    await failed_runs(app, prj, 6, failure_key=key("b"))
    limits(replay_max_runs=5, replay_max_active_per_org=2)
    async with NothingWritten(app):
        response = await client.post("/api/v1/org/1/replays", json={"failureKey": key("b")}, headers=auth)
    assert response.status_code == 400 and response.json()["metadata"]["code"] == "selection_too_large"
    small = {"failureKey": key("b"), "since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z"}
    empty = await start(client, auth, **small)
    assert (empty["status"], empty["selected"]) == ("done", 0)  # nothing selected: done at once, not active
    await failed_runs(app, prj, 3, failure_key=key("c"))
    await start(client, auth, failureKey=key("c"))
    await start(client, auth, failureKey=key("c"))
    async with NothingWritten(app):
        response = await client.post("/api/v1/org/1/replays", json={"failureKey": key("c")}, headers=auth)
    assert response.status_code == 409 and response.json()["metadata"]["code"] == "too_many_replays"
    assert response.json()["metadata"]["message"].startswith("organization 1 has 2 bulk replays pending")


async def test_the_active_limit_holds_per_tenant_not_per_sub_organization(client, auth, app, api, limits) -> None:  # noqa: ANN001
    acme, globex = await api.add_org("acme", "1"), await api.add_org("globex", "1")
    east, west = await api.add_org("east", acme), await api.add_org("west", acme)
    for org in (acme, east, west, globex, "1"):
        await failed_runs(app, await project(client, auth, org), 1, failure_key=key("e"))
    limits(replay_max_active_per_org=2)
    await start(client, auth, east, failureKey=key("e"))
    await start(client, auth, west, failureKey=key("e"))
    # Acme's sub-organizations used up acme's two: neither a third sub-organization's nor acme's own may start.
    north = await api.add_org("north", acme)
    await failed_runs(app, await project(client, auth, north), 1, failure_key=key("e"))
    for org in (north, acme, east):
        async with NothingWritten(app):
            response = await client.post(f"/api/v1/org/{org}/replays", json={"failureKey": key("e")}, headers=auth)
        assert response.status_code == 409, response.text
        assert response.json()["metadata"]["code"] == "too_many_replays"
        assert f"organization {acme} and its sub-organizations have 2 bulk replays" in response.text
    # Another tenant, and the root organization's own runs, are not held back by acme.
    await start(client, auth, globex, failureKey=key("e"))
    await start(client, auth, "1", failureKey=key("e"))


async def test_a_lowered_rate_ceiling_slows_a_batch_already_started(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 12, failure_key=key("9"))
    started = await start(client, auth, failureKey=key("9"), rate=10)
    # The operator lowers IHUB_REPLAY_MAX_RATE while the batch waits: its pages follow the new ceiling.
    context = app.state.context
    context.settings = context.settings.model_copy(update={"replay_max_rate": 4})
    time = FakeTime()
    await worker(app, time).run_until_idle()
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    assert (await batch(app, started["id"])).rate == 10  # what was asked stays on record
    assert time.waits == [pytest.approx(1.0)] * 3  # pages of 4, a second each: 4 per second, not 10
