"""Two bulk replays whose selections overlap, worked on at the same moment by two workers: each run is replayed
once in all, not once per batch (on PostgreSQL both pages used to read "no replay yet" and both replayed every
run: each payload sent twice)."""

from __future__ import annotations

import asyncio

import pytest

from replay_kit import batch, failed_runs, key, project, replays_of, worker

pytestmark = pytest.mark.anyio


async def test_overlapping_batches_at_once_replay_each_run_once(client, auth, app, api) -> None:  # noqa: ANN001
    child = await api.add_org("child", "1")
    originals = await failed_runs(app, await project(client, auth, child), 20, failure_key=key("a"))
    # The parent's Admin and the child's both replay the group (or Start is clicked twice): two active batches.
    child_admin = await api.headers_for(await api.add_user(child, "Admin"))
    started = []
    for org, headers in (("1", auth), (child, child_admin)):
        response = await client.post(
            f"/api/v1/org/{org}/replays", json={"failureKey": key("a"), "rate": 50}, headers=headers
        )
        assert response.status_code == 202, response.text
        started.append(response.json()["replays"][0]["id"])

    first, second = worker(app, owner="w1"), worker(app, owner="w2")
    assert await first.claim_next() == int(started[0])
    assert await second.claim_next() == int(started[1])
    # One page each (20 runs < rate), at the same moment.
    await asyncio.gather(first.page(int(started[0])), second.page(int(started[1])))

    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    done = [await batch(app, batch_id) for batch_id in started]
    # Whichever page committed first replayed them; the other one skipped them as already replayed.
    assert sorted((b.replayed, b.skipped) for b in done) == [(0, 20), (20, 0)]
