"""Scale-out on PostgreSQL: `ihub serve --no-worker` takes triggers, two `ihub worker` processes execute them.
Every run executes exactly once (the target sees each run's Idempotency-Key once) and both workers take part."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import Api, spawn, start_hub, stop, target_server
from werkzeug import Request, Response

pytestmark = pytest.mark.slow

RUNS = 200
FLOW = {
    "key": "one-call",
    "trigger": "manual",
    "steps": [
        {
            "id": "call",
            "type": "http",
            "connection": "target",
            "method": "POST",
            "path": "/hit",
            "json": "{{ trigger.body }}",
        },
        {"id": "out", "type": "respond", "body": "{{ steps.call.output }}"},
    ],
}


def test_two_workers_execute_each_run_exactly_once(tmp_path: Path, empty_postgres: str) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def hit(request: Request) -> Response:
        with lock:
            seen.append(request.headers["Idempotency-Key"])
        time.sleep(0.01)  # a little work, so that both workers get a share
        return Response(json.dumps({"n": request.get_json()["n"]}), status=200, content_type="application/json")

    env = {
        "IHUB_DATABASE_URL": empty_postgres,
        "IHUB_EXECUTOR": "procrastinate",
        "IHUB_WORKER_CONCURRENCY": "4",
        "IHUB_POLL_INTERVAL": "0.5",
    }
    with target_server() as target:
        target.expect_request("/hit").respond_with_handler(hit)
        hub = start_hub(tmp_path, env=env, args=("--no-worker",))
        workers = []
        try:
            api = Api(hub.url, hub.user_id, hub.secret)
            project = api.project(
                {"connections": [{"id": "target", "type": "http", "name": "T"}], "flows": [FLOW]},
                [{"id": "target", "details": {"type": "http", "baseUrl": target.url_for("/")}}],
            )
            flow_id = project["flows"][0]["id"]
            workers = [spawn(["worker"], hub.env, tmp_path / f"worker-{i}.log") for i in range(2)]
            started = time.monotonic()
            run_ids = [api.trigger(flow_id, {"n": n}) for n in range(RUNS)]
            deadline = time.monotonic() + 180  # generous: only a broken scale-out waits this long
            done: dict[str, dict] = {}
            while len(done) < RUNS and time.monotonic() < deadline:
                response = api.http.get(
                    f"/api/v1/project/{project['id']}/runs", params={"status": "succeeded", "limit": 200}
                )
                done = {r["id"]: r for r in response.json()["runs"]}
                time.sleep(0.3)
            elapsed = time.monotonic() - started
            for worker in workers:
                assert worker.poll() is None, "a worker exited"
        finally:
            for worker in workers:
                stop(worker)
            stop(hub.process)

    assert len(done) == RUNS, f"{len(done)} of {RUNS} runs succeeded in {elapsed:.1f}s"
    assert sorted(done) == sorted(run_ids)
    counts = Counter(seen)
    assert len(counts) == RUNS and set(counts.values()) == {1}, counts.most_common(3)
    per_worker = Counter(run["worker"] for run in done.values())
    assert len(per_worker) == 2, per_worker
    assert min(per_worker.values()) >= RUNS // 10, per_worker
    print(f"\n{RUNS} runs on two workers in {elapsed:.1f}s; per worker: {dict(per_worker)}")
