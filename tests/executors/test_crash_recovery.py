"""A worker process SIGKILLed in the middle of a run: after a restart the run resumes at its first unfinished
step and completes; the finished step is never repeated (the interrupted http step is sent again: at-least-once,
with the same Idempotency-Key)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from processes import Api, spawn, start_hub, stop, target_server, wait_healthy
from werkzeug import Request, Response

pytestmark = pytest.mark.slow

FLOW = {
    "key": "two-steps",
    "trigger": "manual",
    "steps": [
        {"id": "one", "type": "http", "connection": "target", "method": "POST", "path": "/one", "json": {"n": 1}},
        {"id": "two", "type": "http", "connection": "target", "method": "POST", "path": "/two", "json": {"n": 2}},
        {
            "id": "out",
            "type": "respond",
            "body": {"one": "{{ steps.one.output.id }}", "two": "{{ steps.two.output.id }}"},
        },
    ],
}


def definition() -> dict:
    return {"connections": [{"id": "target", "type": "http", "name": "Target"}], "flows": [FLOW]}


@pytest.mark.parametrize("executor", ["local-sqlite", "procrastinate-postgresql"])
def test_sigkill_during_step_two_then_restart(tmp_path: Path, executor: str, request: pytest.FixtureRequest) -> None:
    calls: dict[str, list[str]] = {"one": [], "two": []}
    in_step_two = threading.Event()
    release = threading.Event()

    def one(request: Request) -> Response:
        calls["one"].append(request.headers.get("Idempotency-Key", ""))
        return Response(json.dumps({"id": "A-1"}), status=201, content_type="application/json")

    def two(request: Request) -> Response:
        calls["two"].append(request.headers.get("Idempotency-Key", ""))
        if len(calls["two"]) == 1:
            in_step_two.set()
            release.wait(30)  # the first attempt hangs until its worker is dead
        return Response(json.dumps({"id": "B-2"}), status=201, content_type="application/json")

    with target_server() as target:
        target.expect_request("/one").respond_with_handler(one)
        target.expect_request("/two").respond_with_handler(two)
        env = {"IHUB_RUN_LEASE_SECONDS": "2", "IHUB_POLL_INTERVAL": "0.2", "IHUB_EXECUTOR": "local"}
        serve_args: tuple[str, ...] = ()
        if executor == "procrastinate-postgresql":
            env.update(IHUB_EXECUTOR="procrastinate", IHUB_DATABASE_URL=request.getfixturevalue("empty_postgres"))
            serve_args = ("--no-worker",)
        hub = start_hub(tmp_path, env=env, args=serve_args)
        # The process that executes runs: `serve` itself (local) or an `ihub worker` next to an API-only serve.
        victim = hub.process if not serve_args else spawn(["worker"], hub.env, tmp_path / "worker.log")
        try:
            api = Api(hub.url, hub.user_id, hub.secret)
            project = api.project(
                definition(), [{"id": "target", "details": {"type": "http", "baseUrl": target.url_for("/")}}]
            )
            flow_id = project["flows"][0]["id"]
            run_id = api.trigger(flow_id, {"incident": "INC1"})
            assert in_step_two.wait(20), "step two was never called"
            run = api.run(run_id)
            assert run["status"] == "running"
            assert [(s["path"], s["status"]) for s in run["steps"]] == [("one", "succeeded"), ("two", "running")]

            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            release.set()

            if serve_args:
                victim = spawn(["worker"], hub.env, tmp_path / "worker-restart.log")
            else:
                log = tmp_path / "hub-restart.log"
                hub.process = victim = spawn(["serve"], hub.env, log)
                wait_healthy(hub.url, hub.process, log)
                api = Api(hub.url, hub.user_id, hub.secret)
            run = api.wait(run_id, timeout=30)
        finally:
            release.set()
            stop(victim)
            stop(hub.process)

    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"one": "A-1", "two": "B-2"}
    # Keys are <run uid>-<step path>: exactly once for `one`; at-least-once, same key both times, for `two`.
    uid = calls["one"][0].removesuffix("-one")
    assert len(uid) == 36
    assert calls["one"] == [f"{uid}-one"]
    assert calls["two"] == [f"{uid}-two", f"{uid}-two"]
    statuses = [(s["path"], s["status"]) for s in run["steps"]]
    assert statuses == [("one", "succeeded"), ("two", "interrupted"), ("two", "succeeded"), ("out", "succeeded")]
    assert run["attempt"] == 2
