#!/usr/bin/env python
"""Flow throughput: completed one-step runs per second and webhook-to-finished latency, on both executors.

    .venv/bin/python bench/flow_throughput.py [--executor local|procrastinate|both] [--runs 500]
                                              [--serial-runs 50] [--connections 16] [--json]
    .venv/bin/python bench/flow_throughput.py --metrics compare [--rounds 4] [--runs 500]   # cost of metrics

Setups (each a fresh hub on 127.0.0.1 in a temporary data directory):
- local: `ihub serve` on SQLite with its local executor (the embedded default).
- procrastinate: `ihub serve --no-worker` plus `ihub worker` processes on PostgreSQL (IHUB_BENCH_POSTGRES_URL,
  default postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped after),
  measured with one worker, then again after a second worker joined; the two/one ratio is printed.

One template holds two flows, each with a jwt trigger client and a reused access token: `map` (one map step)
and `http` (one POST to a local target on 127.0.0.1, which this process serves). Every run is started through
`POST /prod/incoming/webhook/jwt` with the seed's ticket, by the load process of bench/webhook_ingest.py.
Two modes per flow:

- burst:  `--runs` webhooks fired over `--connections` keep-alive connections as fast as they are accepted,
          then wait until all of them finished. runs/s = runs / (last finishedAt - first createdAt).
- serial: `--serial-runs` runs one at a time (webhook, wait until the run finished, next).

Latency is each run's finishedAt - createdAt from the runs table; createdAt is stamped when the webhook
accepts the run (before its 202), finishedAt by the executor, both on this machine's clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhook_ingest import (
    TICKET,
    free_port,
    http_request,
    metrics_env,
    run_phase,
    sign_assertion,
    start_server,
    wait_ready,
)

IHUB = [sys.executable, "-m", "ihub"]
MAP_FLOW = {
    "key": "map",
    "name": "Map",
    "trigger": {"type": "jwt"},
    "steps": [{"id": "note", "type": "map", "set": {"key": "{{ trigger.body.issueKey }}"}}],
}
HTTP_FLOW = {
    "key": "http",
    "name": "Http",
    "trigger": {"type": "jwt"},
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
FINISHED = "finished_at IS NOT NULL"
# The stand-in target listens on loopback, which the egress policy refuses unless allowed.
EGRESS_ALLOW = '["127.0.0.0/8"]'


class Target(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def start_target() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Target)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- the runs table, read directly (the API's list pages would add load to the server measured) -----------


class Runs:
    """Read-only view of the runs table of the hub under test (SQLite file or PostgreSQL URL)."""

    def __init__(self, sqlite_path: Path | None = None, postgres_url: str | None = None) -> None:
        if sqlite_path is not None:
            # A reader in WAL mode never blocks the hub's writer.
            self.conn: Any = sqlite3.connect(sqlite_path, isolation_level=None)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(postgres_url, autocommit=True)
            self.mark = "%s"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql.replace("?", self.mark), params).fetchall())

    def last_id(self) -> int:
        return int(self.query("SELECT coalesce(max(id), 0) FROM runs")[0][0])

    def finished(self, flow_id: int, after: int) -> int:
        return int(
            self.query(f"SELECT count(*) FROM runs WHERE flow_id = ? AND id > ? AND {FINISHED}", flow_id, after)[0][0]
        )

    def unfinished(self) -> int:
        return int(self.query(f"SELECT count(*) FROM runs WHERE NOT ({FINISHED})")[0][0])

    def is_finished(self, run_id: int) -> bool:
        return bool(self.query(f"SELECT count(*) FROM runs WHERE id = ? AND {FINISHED}", run_id)[0][0])

    def rows(self, flow_id: int, after: int) -> list[tuple[str, datetime, datetime | None]]:
        rows = self.query(
            "SELECT status, created_at, finished_at FROM runs WHERE flow_id = ? AND id > ?", flow_id, after
        )
        return [(status, _timestamp(created), _timestamp(finished)) for status, created, finished in rows]

    def close(self) -> None:
        self.conn.close()


def _timestamp(value: Any) -> Any:
    # SQLite hands back the stored text; PostgreSQL a datetime already.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def summarize(rows: list[tuple[str, datetime, datetime | None]]) -> dict[str, Any]:
    done = [(created, finished) for _, created, finished in rows if finished is not None]
    statuses: dict[str, int] = {}
    for status, _, _ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    if not done:
        return {"runs": len(rows), "statuses": statuses, "runs_per_s": 0.0, "p50_ms": None, "p99_ms": None}
    latencies = sorted((finished - created).total_seconds() * 1000 for created, finished in done)
    span = (max(f for _, f in done) - min(c for c, _ in done)).total_seconds()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {
        "runs": len(rows),
        "statuses": statuses,
        "seconds": round(span, 3),
        "runs_per_s": round(len(done) / span, 1) if span > 0 else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }


# --- hub set-up -------------------------------------------------------------------------------------------


def owner_token(url: str, creds: dict[str, str]) -> str:
    import hashlib

    import httpx

    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((creds["secret"] + nonce).encode()).hexdigest()
    response = httpx.post(url + "/api/v1/token", json={"userId": creds["userId"], "nonce": nonce, "hash": digest})
    return str(response.raise_for_status().json()["tokens"][0]["token"])


def setup_flows(url: str, creds: dict[str, str], target: str) -> dict[str, tuple[int, str]]:
    """Template (both flows + the target connection) → project → per flow a trigger client and an access
    token, reused for every webhook as a real client would. Returns {flow key: (flow id, token)}."""
    import httpx

    auth = {"Authorization": owner_token(url, creds)}
    definition = {"connections": [{"id": "target", "type": "http", "name": "Target"}], "flows": [MAP_FLOW, HTTP_FLOW]}
    body = {"name": "bench", "description": "", "definition": definition}
    template_id = (
        httpx.post(url + "/api/v1/template/org/1", json=body, headers=auth)
        .raise_for_status()
        .json()["templates"][0]["id"]
    )
    body = {"name": "bench", "description": "", "templateId": template_id}
    project = (
        httpx.post(url + "/api/v1/project/org/1", json=body, headers=auth).raise_for_status().json()["projects"][0]
    )
    connections = [{"id": "target", "details": {"type": "http", "baseUrl": target}}]
    response = httpx.put(f"{url}/api/v1/project/{project['id']}", json={"connections": connections}, headers=auth)
    flows = response.raise_for_status().json()["projects"][0]["flows"]
    tokens: dict[str, tuple[int, str]] = {}
    for flow in flows:
        response = httpx.post(f"{url}/api/v1/flow/{flow['id']}/trigger/jwt", json={"generateKey": True}, headers=auth)
        trigger = response.raise_for_status().json()["triggers"][0]
        grant = {"grant_type": "urn:ihub:jwt:bearer", "assertion": sign_assertion(trigger)}
        token = httpx.post(trigger["aud"], json=grant).raise_for_status().json()["access_token"]
        tokens[flow["key"]] = (int(flow["id"]), token)
    return tokens


class Hub:
    """The processes of one hub under test; `stop` ends them all (and drops the scratch database)."""

    def __init__(self, executor: str, workdir: Path, admin_url: str, metrics: bool = True) -> None:
        self.executor = executor
        self.metrics = metrics
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.admin_url = admin_url
        self.database: str | None = None
        self.env: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        data = self.workdir / f"data-{self.executor}-{uuid.uuid4().hex[:6]}"
        if self.executor == "local":
            server, creds = start_server(data, self.port, extra_env=metrics_env(self.metrics))
            self.processes.append(server)
            self.runs = Runs(sqlite_path=data / "ihub.db")
        else:
            creds = self._start_postgres(data)
        wait_ready(self.url, self.processes[0])
        return creds

    def _start_postgres(self, data: Path) -> dict[str, str]:
        import psycopg

        self.database = f"ihub_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        database_url = self.admin_url.rsplit("/", 1)[0] + "/" + self.database
        data.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "IHUB_DATA_DIR": str(data),
            "IHUB_PORT": str(self.port),
            "IHUB_PUBLIC_URL": self.url,
            "IHUB_LOG_LEVEL": "WARNING",
            "IHUB_EXECUTOR": "procrastinate",
            "IHUB_DATABASE_URL": database_url,
            **metrics_env(self.metrics),
        }
        init = subprocess.run([*IHUB, "init", "--json"], env=self.env, capture_output=True, text=True)
        if init.returncode != 0:
            raise SystemExit(f"ihub init failed:\n{init.stderr}")
        log = open(data / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.processes.append(
            subprocess.Popen([*IHUB, "serve", "--no-worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        )
        self.runs = Runs(postgres_url=database_url)
        return dict(json.loads(init.stdout))

    def add_worker(self) -> None:
        """One more `ihub worker`; returns once it printed that it executes runs (its queue is listening)."""
        log_path = self.workdir / f"worker-{len(self.processes)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the worker
        worker = subprocess.Popen([*IHUB, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(worker)
        deadline = time.monotonic() + 30
        while b"executing runs" not in log_path.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ihub worker did not start:\n{log_path.read_text()}")
            time.sleep(0.1)

    @property
    def workers(self) -> int:
        return len(self.processes) - 1

    def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            self.runs.close()
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.database:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# --- the two modes ----------------------------------------------------------------------------------------


def hook_request(port: int, token: str) -> bytes:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return http_request("POST", "/prod/incoming/webhook/jwt", port, headers, json.dumps(TICKET).encode())


def wait_finished(runs: Runs, flow_id: int, after: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while runs.finished(flow_id, after) < count:
        if time.monotonic() > deadline:
            return  # reported as unfinished runs, not a crash: the table says how many
        time.sleep(0.1)


def burst(hub: Hub, name: str, flow_id: int, token: str, args: argparse.Namespace) -> dict[str, Any]:
    after = hub.runs.last_id()
    load = argparse.Namespace(seconds=args.timeout, warmup=0, connections=args.connections)
    # A list of requests is sent once each: exactly --runs webhooks, as fast as the hub accepts them.
    fired = run_phase(name, [hook_request(hub.port, token)] * args.runs, hub.port, load, hub.workdir, ok=202)
    wait_finished(hub.runs, flow_id, after, fired["accepted"], args.timeout)
    result = summarize(hub.runs.rows(flow_id, after))
    result["accepted_per_s"] = fired["accepted_per_s"]
    result["webhook_statuses"] = fired["statuses"]
    return result


def serial(hub: Hub, flow_id: int, token: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    # One at a time means no backlog ahead: a burst that outlived its timeout is left to finish first.
    deadline = time.monotonic() + args.timeout
    while hub.runs.unfinished() and time.monotonic() < deadline:
        time.sleep(0.2)
    after = hub.runs.last_id()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client:
        for _ in range(args.serial_runs):
            response = client.post("/prod/incoming/webhook/jwt", json=TICKET)
            if response.status_code != 202:
                raise SystemExit(f"webhook answered {response.status_code}: {response.text}")
            run_id = int(response.json()["runId"])
            deadline = time.monotonic() + args.timeout
            # Polling only decides when the next run starts; the latency comes from the run's own timestamps.
            while not hub.runs.is_finished(run_id) and time.monotonic() < deadline:
                time.sleep(0.002)
    return summarize(hub.runs.rows(flow_id, after))


def measure(hub: Hub, label: str, flows: dict[str, tuple[int, str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for key in ("map", "http"):
        flow_id, token = flows[key]
        rows = [("burst", burst(hub, f"{label}-{key}", flow_id, token, args))]
        if args.serial_runs:
            rows.append(("serial", serial(hub, flow_id, token, args)))
        for mode, result in rows:
            results.append({"setup": label, "flow": key, "mode": mode, **result})
            print(f"  {label} {key} {mode}: {result['runs_per_s']} runs/s", file=sys.stderr, flush=True)
    return results


def run_executor(executor: str, target: str, workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    hub = Hub(executor, workdir, args.postgres_url, metrics=args.metrics == "on")
    try:
        creds = hub.start()
        flows = setup_flows(hub.url, creds, target)
        if executor == "local":
            return measure(hub, "local (SQLite)", flows, args)
        results = []
        for workers in (1, 2):
            while hub.workers < workers:
                hub.add_worker()
            results += measure(hub, f"procrastinate {workers}w", flows, args)
        return results
    finally:
        hub.stop()


def compare_metrics(target: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Two local-executor hubs side by side, metrics on and off, bursts alternating between them (on, off, off,
    on, ...) so that load from elsewhere on the machine drifts over both alike: median burst runs/s per flow and
    on/off (the budget: at least 0.95). Each burst is waited out before the next, so no backlog spills over."""
    import statistics

    hubs = {metrics: Hub("local", workdir, args.postgres_url, metrics=metrics) for metrics in (True, False)}
    rates: dict[tuple[str, bool], list[float]] = {}
    try:
        flows = {metrics: setup_flows(hub.url, hub.start(), target) for metrics, hub in hubs.items()}
        for round_ in range(args.rounds):
            for metrics in (True, False) if round_ % 2 == 0 else (False, True):
                for key in ("map", "http"):
                    flow_id, token = flows[metrics][key]
                    result = burst(hubs[metrics], f"m{round_}-{key}", flow_id, token, args)
                    rates.setdefault((key, metrics), []).append(result["runs_per_s"])
                    mode = "on " if metrics else "off"
                    print(f"  round {round_ + 1} metrics {mode} {key}: {result['runs_per_s']} runs/s", file=sys.stderr)
    finally:
        for hub in hubs.values():
            hub.stop()
    report: dict[str, Any] = {"rounds": args.rounds, "runs_in_flight": args.runs, "flows": {}}
    for key in ("map", "http"):
        on, off = statistics.median(rates[(key, True)]), statistics.median(rates[(key, False)])
        report["flows"][key] = {
            "runs_per_s_on": rates[(key, True)],
            "runs_per_s_off": rates[(key, False)],
            "median_on": on,
            "median_off": off,
            "ratio_on_to_off": round(on / off, 3) if off else 0.0,
        }
    return report


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Two procrastinate workers over one, burst runs/s, per flow (the target: at least 1.6)."""
    by = {(r["setup"], r["flow"], r["mode"]): r["runs_per_s"] for r in results}
    out = {}
    for key in ("map", "http"):
        one, two = by.get(("procrastinate 1w", key, "burst")), by.get(("procrastinate 2w", key, "burst"))
        if one and two:
            out[key] = round(two / one, 2)
    return out


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=["local", "procrastinate", "both"], default="both")
    parser.add_argument("--runs", type=int, default=500, help="webhooks in flight in the burst mode (default 500)")
    parser.add_argument("--serial-runs", type=int, default=50, help="runs one at a time (default 50; 0 skips)")
    parser.add_argument("--connections", type=int, default=16, help="connections firing the burst (default 16)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a phase (default 120)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("IHUB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection; a scratch database is created beside it and dropped after",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--metrics",
        choices=["on", "off", "compare"],
        default="on",
        help="count metrics (IHUB_METRICS_ENABLED) or not; compare: two local hubs, bursts alternating (--rounds)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="bursts per mode and flow with --metrics compare")
    args = parser.parse_args()

    # start_server (webhook_ingest) passes this process's environment on to the hub.
    os.environ["IHUB_EGRESS_ALLOW"] = EGRESS_ALLOW
    load_before = load_average()
    started = time.monotonic()
    server, target = start_target()
    if args.metrics == "compare":
        try:
            with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
                compared = compare_metrics(target, Path(tmp), args)
        finally:
            server.shutdown()
        if args.json:
            print(json.dumps(compared, indent=2))
            return
        print(f"ihub flow throughput, metrics on vs off — local executor, burst {args.runs} runs, {args.rounds} rounds")
        for key, row in compared["flows"].items():
            print(
                f"{key:<5} median runs/s on {row['median_on']:.1f}, off {row['median_off']:.1f}; "
                f"ratio on/off {row['ratio_on_to_off']:.3f} (budget: at least 0.95)"
            )
        return
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
            for executor in ["local", "procrastinate"] if args.executor == "both" else [args.executor]:
                results += run_executor(executor, target, Path(tmp), args)
    finally:
        server.shutdown()
    report = {
        "setup": {
            "runs_in_flight": args.runs,
            "serial_runs": args.serial_runs,
            "connections": args.connections,
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "seconds": round(time.monotonic() - started, 1),
        },
        "results": results,
        "ratio_two_workers_to_one": ratios(results),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"ihub flow throughput — burst {args.runs} runs over {args.connections} connections, {args.serial_runs} "
        f"serial runs; {os.cpu_count()} CPUs; load average {load_before} before, {load_average()} after"
    )
    print(
        f"{'setup':<18}{'flow':<6}{'mode':<8}{'runs':>6}{'runs/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'accept/s':>10}  statuses"
    )
    for r in results:
        accept = f"{r['accepted_per_s']:.1f}" if "accepted_per_s" in r else "-"
        print(
            f"{r['setup']:<18}{r['flow']:<6}{r['mode']:<8}{r['runs']:>6}{r['runs_per_s']:>9.1f}"
            f"{_ms(r['p50_ms']):>9}{_ms(r['p99_ms']):>9}{accept:>10}  {r['statuses']}"
        )
    for key, ratio in report["ratio_two_workers_to_one"].items():
        print(f"procrastinate two workers / one, {key} burst runs/s: {ratio:.2f} (target ≥ 1.6)")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
