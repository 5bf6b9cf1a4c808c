"""Flow throughput: one-step http runs per second, and trigger→done latency, on both executors.

    .venv/bin/python bench/flow_throughput.py [--runs 500] [--executor local|procrastinate|both]

- local: `ihub serve` on SQLite (the embedded default), its local executor.
- procrastinate: `ihub serve --no-worker` + two `ihub worker` processes on PostgreSQL (IHUB_BENCH_POSTGRES_URL,
  default postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped).
Runs are triggered through `POST /api/v1/flow/{id}/run` (16 at a time); each calls a local target once.
Latency is the run's finishedAt − createdAt (both from the database clock), reported twice: saturated (all
runs triggered at once, so it includes the backlog) and paced (100 runs, one trigger every 50 ms or more).
The baseline, measured in the same run, is the target alone called directly by one asyncio client with the
same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

IHUB = [sys.executable, "-m", "ihub"]
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
        }
    ],
}


class Target(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_target() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Target)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit("ihub serve exited")
        time.sleep(0.1)
    raise SystemExit("ihub serve did not start")


def login(url: str, user_id: str, secret: str) -> str:
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
    response = httpx.post(url + "/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": digest})
    return response.json()["tokens"][0]["token"]


def setup_project(url: str, token: str, target: str) -> tuple[str, str]:
    headers = {"Authorization": token}
    definition = {"connections": [{"id": "target", "type": "http", "name": "T"}], "flows": [FLOW]}
    name = f"bench-{uuid.uuid4().hex[:6]}"
    r = httpx.post(f"{url}/api/v1/template/org/1", json={"name": name, "definition": definition}, headers=headers)
    template_id = r.json()["templates"][0]["id"]
    r = httpx.post(f"{url}/api/v1/project/org/1", json={"name": name, "templateId": template_id}, headers=headers)
    project_id = r.json()["projects"][0]["id"]
    connections = [{"id": "target", "details": {"type": "http", "baseUrl": target}}]
    r = httpx.put(f"{url}/api/v1/project/{project_id}", json={"connections": connections}, headers=headers)
    return project_id, r.json()["projects"][0]["flows"][0]["id"]


async def trigger_all(url: str, token: str, flow_id: str, runs: int, concurrency: int = 16) -> float:
    queue = list(range(runs))
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": token}, timeout=30) as client:

        async def worker() -> None:
            while queue:
                n = queue.pop()
                response = await client.post(f"/api/v1/flow/{flow_id}/run", json={"n": n})
                assert response.status_code == 202, response.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


def collect(url: str, token: str, project_id: str, runs: int, timeout: float = 300) -> list[dict]:
    headers = {"Authorization": token}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done: list[dict] = []
        cursor = None
        while True:
            params = {"limit": 200, "status": "succeeded", **({"cursor": cursor} if cursor else {})}
            body = httpx.get(f"{url}/api/v1/project/{project_id}/runs", params=params, headers=headers).json()
            done += body["runs"]
            cursor = body["nextCursor"]
            if not cursor:
                break
        if len(done) >= runs:
            return done
        time.sleep(0.5)
    raise SystemExit(f"only {len(done)} of {runs} runs finished")


def report(label: str, runs: list[dict]) -> dict:
    created = [datetime.fromisoformat(r["createdAt"]) for r in runs]
    finished = [datetime.fromisoformat(r["finishedAt"]) for r in runs]
    latencies = sorted((f - c).total_seconds() * 1000 for c, f in zip(created, finished, strict=True))
    span = (max(finished) - min(created)).total_seconds()
    result = {
        "executor": label,
        "runs": len(runs),
        "runs_per_second": round(len(runs) / span, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "workers": len({r.get("worker") for r in runs}),
    }
    print(json.dumps(result))
    return result


async def baseline(target: str, runs: int, concurrency: int = 16) -> float:
    queue = list(range(runs))
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=target) as client:

        async def worker() -> None:
            while queue:
                await client.post("/hit", json={"n": queue.pop()})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return runs / (time.monotonic() - started)


def run_case(executor: str, runs: int, target: str, workdir: Path) -> dict:
    port = free_port()
    env = {
        **os.environ,
        "IHUB_DATA_DIR": str(workdir / f"data-{executor}"),
        "IHUB_PORT": str(port),
        "IHUB_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IHUB_SECRET_KEY": "bench-" + "k" * 40,
        "IHUB_LOG_LEVEL": "WARNING",
        "IHUB_EXECUTOR": executor,
        # The stand-in target listens on loopback, which the egress policy refuses unless allowed.
        "IHUB_EGRESS_ALLOW": '["127.0.0.0/8"]',
    }
    database = None
    admin = os.environ.get("IHUB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if executor == "procrastinate":
        import psycopg

        database = f"ihub_bench_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["IHUB_DATABASE_URL"] = admin.rsplit("/", 1)[0] + "/" + database
    processes: list[subprocess.Popen] = []
    try:
        init = subprocess.run([*IHUB, "init", "--json"], env=env, capture_output=True, text=True, check=True)
        creds = json.loads(init.stdout)
        log = open(workdir / f"{executor}.log", "w")  # noqa: SIM115
        args = ["serve", "--no-worker"] if executor == "procrastinate" else ["serve"]
        processes.append(subprocess.Popen([*IHUB, *args], env=env, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, processes[0])
        if executor == "procrastinate":
            for _ in range(2):
                processes.append(subprocess.Popen([*IHUB, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(3)
        token = login(url, creds["userId"], creds["secret"])
        project_id, flow_id = setup_project(url, token, target)
        label = executor if executor == "local" else "procrastinate (2 workers)"
        took = asyncio.run(trigger_all(url, token, flow_id, runs))
        print(json.dumps({"executor": executor, "triggers_per_second": round(runs / took, 1)}))
        result = report(label + ", saturated", collect(url, token, project_id, runs))
        # Latency without a backlog: 100 runs triggered one by one, at most 20 per second.
        paced_project, paced_flow = setup_project(url, token, target)
        for n in range(100):
            httpx.post(f"{url}/api/v1/flow/{paced_flow}/run", json={"n": n}, headers={"Authorization": token})
            time.sleep(0.05)
        report(label + ", paced", collect(url, token, paced_project, 100))
        return result
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if database:
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--executor", choices=["local", "procrastinate", "both"], default="both")
    args = parser.parse_args()
    server, target = start_target()
    try:
        direct = asyncio.run(baseline(target, args.runs))
        print(json.dumps({"baseline": "target called directly", "requests_per_second": round(direct, 1)}))
        with tempfile.TemporaryDirectory() as tmp:
            kinds = ["local", "procrastinate"] if args.executor == "both" else [args.executor]
            for kind in kinds:
                result = run_case(kind, args.runs, target, Path(tmp))
                print(f"  {kind}: {result['runs_per_second'] / direct:.3f} of the direct-call baseline")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
