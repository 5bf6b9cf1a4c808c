"""SQLite writers of different processes queue on the writer gate (db/write_gate.py): a write waits while
another process holds it, lands as soon as it is released, answers 503 when it is held past the lock
timeout, and nothing holds it past a COMMIT or ROLLBACK. While a write is open, the process does not
start the next pure step of a flow nor collect garbage (for a second at most); a transaction abandoned by a
cancelled task frees the gate."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ihub.config import Settings
from ihub.db.write_gate import WriteGate, gate_path, until_no_write_held_here

pytestmark = pytest.mark.anyio

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the writer gate orders SQLite's writers; PostgreSQL has row locks and a pool of writers")
    return settings.model_copy(update={"db_lock_timeout_seconds": 1})


@pytest.fixture
def gate_file(settings: Settings) -> Path:
    return gate_path(Path(make_url(settings.resolved_database_url).database or ""))


@pytest.fixture
async def other_process_holding_the_gate(gate_file: Path) -> AsyncIterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(gate_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    # Waited for in a thread: the app's background work (housekeeping, pollers) may hold the gate for a moment,
    # and releases it only if the event loop keeps running meanwhile.
    assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "held"
    yield holder
    await asyncio.to_thread(release, holder)


def release(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)


def gate_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


async def org_name(client, auth) -> str:  # noqa: ANN001
    return (await client.get("/api/v1/org/1", headers=auth)).json()["organizations"][0]["name"]


async def test_a_write_waits_while_another_process_holds_the_gate_then_lands(
    client,  # noqa: ANN001
    auth,  # noqa: ANN001
    other_process_holding_the_gate: subprocess.Popen[str],
) -> None:
    write = asyncio.create_task(client.put("/api/v1/org/1", json={"name": "after-the-gate"}, headers=auth))
    await asyncio.sleep(0.3)
    # The other process holds no SQLite lock at all: only the gate keeps this write waiting.
    assert not write.done()
    assert await org_name(client, auth) != "after-the-gate"
    release(other_process_holding_the_gate)
    assert (await write).status_code == 200
    assert await org_name(client, auth) == "after-the-gate"


async def test_a_gate_held_past_the_lock_timeout_answers_503_and_writes_nothing(
    client,  # noqa: ANN001
    auth,  # noqa: ANN001
    other_process_holding_the_gate: subprocess.Popen[str],
) -> None:
    response = await client.put("/api/v1/org/1", json={"name": "refused"}, headers=auth)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["metadata"]["code"] == "temporarily_unavailable"
    release(other_process_holding_the_gate)
    assert await org_name(client, auth) != "refused"
    assert (await client.put("/api/v1/org/1", json={"name": "later"}, headers=auth)).status_code == 200


async def test_nothing_holds_the_gate_after_a_commit_or_a_rollback(app, client, auth, gate_file: Path) -> None:  # noqa: ANN001
    sessions = app.state.context.sessions
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE organizations SET name = 'in-transaction' WHERE id = 1"))
        assert not gate_is_free(gate_file)
    assert gate_is_free(gate_file)
    async with sessions() as session:
        await session.execute(text("UPDATE organizations SET name = 'rolled-back' WHERE id = 1"))
        assert not gate_is_free(gate_file)
        await session.rollback()
    assert gate_is_free(gate_file)
    # A request whose transaction fails (a duplicate name: 409) leaves it free too.
    assert (await client.post("/api/v1/org", json={"name": "twin"}, headers=auth)).status_code in (200, 201)
    assert (await client.post("/api/v1/org", json={"name": "twin"}, headers=auth)).status_code == 409
    assert gate_is_free(gate_file)


async def collections_on() -> None:
    """Collections are back on once no write of this process is open. The app's own background work (the
    executor's polls) writes too, so a test waits for those to end before looking."""
    await until_no_write_held_here()
    assert gc.isenabled()


async def test_no_garbage_collection_runs_while_a_write_is_open(app) -> None:  # noqa: ANN001
    await collections_on()
    sessions = app.state.context.sessions
    # The write pool has one connection: while this session holds it, no other write of the app can begin.
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        assert not gc.isenabled()
    await collections_on()
    async with sessions() as session:
        await session.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        assert not gc.isenabled()
        await session.rollback()
    await collections_on()


async def test_a_collection_pause_ends_after_its_bound_even_if_the_write_does_not(app, monkeypatch) -> None:  # noqa: ANN001
    from ihub.common import gcpause

    monkeypatch.setattr(gcpause, "MAX_PAUSE_SECONDS", 0.05)
    await collections_on()
    async with app.state.context.sessions() as session, session.begin():
        await session.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        assert not gc.isenabled()
        await asyncio.sleep(0.3)
        assert gc.isenabled()
    await collections_on()
    # The next write pauses again, and ends its pause itself.
    async with app.state.context.sessions() as session, session.begin():
        await session.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        assert not gc.isenabled()
    await collections_on()


async def test_computation_waits_for_this_process_open_write(gate_file: Path) -> None:
    gate = WriteGate(gate_file, timeout=1)
    try:
        gate.acquire()
        waiting = asyncio.create_task(until_no_write_held_here())
        for _ in range(20):
            await asyncio.sleep(0.005)
        assert not waiting.done()
        gate.release()
        await asyncio.wait_for(waiting, 10)
    finally:
        gate.close()


async def test_a_transaction_cancelled_midway_leaves_the_gate_free(app, gate_file: Path) -> None:  # noqa: ANN001
    sessions = app.state.context.sessions
    inside = asyncio.Event()

    async def abandoned() -> None:
        async with sessions() as session:
            await session.execute(text("UPDATE organizations SET name = 'abandoned' WHERE id = 1"))
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(abandoned())
    await inside.wait()
    assert not gate_is_free(gate_file)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # SQLAlchemy closes the abandoned session in a task of its own; the gate goes with it, shortly after.
    for _ in range(100):
        if gate_is_free(gate_file):
            break
        await asyncio.sleep(0.05)
    assert gate_is_free(gate_file)
    await collections_on()
