"""`ihub serve` executes flows in worker processes it supervises: a flow that computes as hard as its budgets
allow leaves the API answering; a crashed worker is replaced; stopping the hub stops its workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from processes import Api, start_hub, stop

pytestmark = pytest.mark.slow

# Each evaluation of BURN would take hours (2^40 macro calls): only the expression time budget ends it.
BURN = "{% macro burn(n) %}{% if n > 0 %}{{ burn(n - 1) }}{{ burn(n - 1) }}{% endif %}{% endmacro %}{{ burn(40) }}"
BUSY_FLOW = {
    "key": "busy",
    "trigger": "manual",
    "steps": [
        {
            "id": "spin",
            "type": "foreach",
            "items": "{{ [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20] }}",
            "steps": [{"id": "burn", "type": "map", "on_error": "continue", "set": {"x": BURN}}],
        }
    ],
}
QUICK_FLOW = {"key": "quick", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "ok"}]}
DEFINITION = {"connections": [], "flows": [BUSY_FLOW, QUICK_FLOW]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> set[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param not in os.environ.get("IHUB_TEST_BACKENDS", "sqlite,postgresql").split(","):
        pytest.skip(f"{request.param} not in IHUB_TEST_BACKENDS")
    return "" if request.param == "sqlite" else request.getfixturevalue("empty_postgres")


def hub_env(database_url: str, **settings: str) -> dict[str, str]:
    return {**({"IHUB_DATABASE_URL": database_url} if database_url else {}), "IHUB_POLL_INTERVAL": "0.2", **settings}


@pytest.mark.parametrize("executor", ["local", "procrastinate"])
def test_api_answers_while_a_run_computes(tmp_path: Path, database_url: str, executor: str) -> None:
    if executor == "procrastinate" and not database_url:
        pytest.skip("procrastinate needs PostgreSQL")
    env = hub_env(database_url, IHUB_RUN_TIME_BUDGET_SECONDS="8", IHUB_EXECUTOR=executor)
    hub = start_hub(tmp_path, env=env)
    try:
        api = Api(hub.url, hub.user_id, hub.secret)
        project = api.project(DEFINITION, [])
        flow_id = next(f["id"] for f in project["flows"] if f["key"] == "busy")
        workers = children(hub.process.pid)
        api_cpu, workers_cpu = cpu_seconds(hub.process.pid), sum(cpu_seconds(pid) for pid in workers)
        run_id = api.trigger(flow_id, {})
        deadline = time.monotonic() + 30
        while api.run(run_id)["status"] != "running":
            assert time.monotonic() < deadline, "the busy run never started"
            time.sleep(0.1)
        time.sleep(0.5)  # well inside the first evaluation of BURN

        # Generous bounds: a stalled event loop answers after minutes (or never), a free one at once.
        with httpx.Client(base_url=hub.url, timeout=10) as probe:
            assert probe.get("/healthz").status_code == 200
        assert api.http.get("/api/v1/org", timeout=10).status_code == 200
        assert api.run(run_id)["status"] == "running", "the run was meant to be busy during the calls"

        # Polled once a second: each poll costs the API process CPU time, and on a loaded machine (other xdist
        # workers) the worker gets only a share of the 8 s budget, so ten polls a second could add up to half of it.
        run = api.wait(run_id, timeout=60, interval=1.0)
        assert run["status"] == "failed"
        assert "time budget of 8 s" in run["error"], run["error"]
        burns = [s for s in run["steps"] if s["stepId"] == "burn"]
        assert burns and all("time budget" in (s["error"] or "") for s in burns), burns
        # The computation was paid for by a worker, not by the API process.
        api_spent = cpu_seconds(hub.process.pid) - api_cpu
        workers_spent = sum(cpu_seconds(pid) for pid in workers) - workers_cpu
        assert workers_spent > 2 * api_spent, (api_spent, workers_spent)
    finally:
        stop(hub.process)


def test_a_killed_worker_is_replaced_and_workers_stop_with_the_hub(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, env=hub_env("", IHUB_WORKERS="2"))
    try:
        deadline = time.monotonic() + 20
        while len(children(hub.process.pid)) < 2:
            assert time.monotonic() < deadline, "ihub serve did not start two workers"
            time.sleep(0.1)
        first = children(hub.process.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            now = children(hub.process.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"the killed worker was not replaced: {first} -> {now}"
            time.sleep(0.1)
        api = Api(hub.url, hub.user_id, hub.secret)
        project = api.project(DEFINITION, [])
        flow_id = next(f["id"] for f in project["flows"] if f["key"] == "quick")
        runs = [api.trigger(flow_id, {}) for _ in range(6)]
        assert [api.wait(run_id, timeout=30)["status"] for run_id in runs] == ["succeeded"] * 6
        workers = children(hub.process.pid)
    finally:
        stop(hub.process)
    assert hub.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped on
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid


def test_stopping_the_hub_hands_running_runs_back(tmp_path: Path) -> None:
    import json
    import sqlite3
    import threading

    from processes import target_server
    from werkzeug import Request, Response

    entered, release = threading.Event(), threading.Event()

    def hang(request: Request) -> Response:
        entered.set()
        release.wait(30)
        return Response(json.dumps({}), status=200, content_type="application/json")

    flow = {
        "key": "slow",
        "trigger": "manual",
        "steps": [{"id": "call", "type": "http", "connection": "target", "method": "POST", "path": "/hang"}],
    }
    definition = {"connections": [{"id": "target", "type": "http", "name": "T"}], "flows": [flow]}
    with target_server() as target:
        target.expect_request("/hang").respond_with_handler(hang)
        hub = start_hub(tmp_path, env=hub_env(""), args=("--workers", "3"))
        try:
            api = Api(hub.url, hub.user_id, hub.secret)
            connection = {"id": "target", "details": {"type": "http", "baseUrl": target.url_for("/")}}
            project = api.project(definition, [connection])
            run_id = api.trigger(project["flows"][0]["id"], {})
            assert entered.wait(30), "the run never called the target"
            workers = children(hub.process.pid)
        finally:
            stop(hub.process)
            release.set()
    assert len(workers) == 3  # --workers
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    with sqlite3.connect(tmp_path / "hub-data" / "ihub.db") as db:
        status, lease = db.execute("SELECT status, lease_expires_at FROM runs WHERE id = ?", (int(run_id),)).fetchone()
    # Handed back, due now: the next worker (of this hub or another) starts it without waiting for a lease.
    assert (status, lease) == ("queued", None)


def test_workers_yield_the_cpu_to_the_api(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, env=hub_env("", IHUB_WORKERS="2", IHUB_WORKER_NICENESS="7"))
    try:
        deadline = time.monotonic() + 20
        while len(workers := children(hub.process.pid)) < 2:
            assert time.monotonic() < deadline, "ihub serve did not start two workers"
            time.sleep(0.1)
        wanted = {min(os.getpriority(os.PRIO_PROCESS, hub.process.pid) + 7, 19)}
        # A worker lowers its priority once it has read its settings, a moment after it is forked.
        while (seen := {os.getpriority(os.PRIO_PROCESS, pid) for pid in workers}) != wanted:
            assert time.monotonic() < deadline, f"worker niceness {seen}, wanted {wanted}"
            time.sleep(0.1)
    finally:
        stop(hub.process)
