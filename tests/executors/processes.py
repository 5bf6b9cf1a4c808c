"""Driving real `ihub serve` / `ihub worker` processes and a real target server from tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pytest_httpserver import HTTPServer

IHUB = [sys.executable, "-m", "ihub"]


@contextmanager
def target_server() -> Iterator[HTTPServer]:
    """A threaded stand-in for the target system (a slow answer must not block the next request)."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise AssertionError("ihub serve did not start:\n" + log.read_text())


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "a")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([*IHUB, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Api:
    """A synchronous /api/v1 client logged in as the first Owner."""

    def __init__(self, url: str, user_id: str, secret: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        nonce = uuid.uuid4().hex
        digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
        response = self.http.post("/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": digest})
        assert response.status_code == 200, response.text
        self.http.headers["Authorization"] = response.json()["tokens"][0]["token"]

    def project(self, definition: dict[str, Any], connections: list[dict[str, Any]]) -> dict[str, Any]:
        name = f"t-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "description": "", "definition": definition}
        response = self.http.post("/api/v1/template/org/1", json=body)
        assert response.status_code == 200, response.text
        template_id = response.json()["templates"][0]["id"]
        response = self.http.post("/api/v1/project/org/1", json={"name": name, "templateId": template_id})
        assert response.status_code == 200, response.text
        project = response.json()["projects"][0]
        response = self.http.put(f"/api/v1/project/{project['id']}", json={"connections": connections})
        assert response.status_code == 200, response.text
        return response.json()["projects"][0]

    def trigger(self, flow_id: str, body: Any) -> str:
        response = self.http.post(f"/api/v1/flow/{flow_id}/run", json=body)
        assert response.status_code == 202, response.text
        return response.json()["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/run/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()["runs"][0]

    def wait(self, run_id: str, timeout: float = 30, interval: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']}: {run}")
            time.sleep(interval)


class Hub:
    def __init__(self, url: str, user_id: str, secret: str, process: subprocess.Popen, env: dict[str, str]) -> None:
        self.url, self.user_id, self.secret, self.process, self.env = url, user_id, secret, process, env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_hub(tmp_path: Path, *, env: dict[str, str], args: tuple[str, ...] = ()) -> Hub:
    """`ihub init --json` then `ihub serve` on a free port (as an operator runs them)."""
    import json
    import os

    port = free_port()
    full_env = {
        **os.environ,
        "IHUB_DATA_DIR": str(tmp_path / "hub-data"),
        "IHUB_PORT": str(port),
        "IHUB_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IHUB_SECRET_KEY": "crash-test-master-key-" + "y" * 32,
        # The target server listens on loopback, which the egress policy refuses unless allowed.
        "IHUB_EGRESS_ALLOW": '["127.0.0.0/8", "::1"]',
        **env,
    }
    init = subprocess.run([*IHUB, "init", "--json"], env=full_env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    creds = json.loads(init.stdout)
    log = tmp_path / "hub.log"
    process = spawn(["serve", *args], full_env, log)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, log)
    return Hub(url, creds["userId"], creds["secret"], process, full_env)
