#!/usr/bin/env python
"""Webhook ingest benchmark: accepted webhooks per second and latency, against a bare endpoint of the same app.

    .venv/bin/python bench/webhook_ingest.py [--seconds 10] [--connections 8] [--json]
    .venv/bin/python bench/webhook_ingest.py --metrics compare [--rounds 6]   # the cost of counting metrics

Starts `ihub serve` (embedded default: SQLite, local executor) on a free port in a temporary data
directory, creates a template, project, flow (trigger jwt, one `map` step) and a trigger client through
the API, signs an assertion (RS256, as the seed's clients do) and gets an access token. Then a separate
load process on 127.0.0.1 keeps N keep-alive connections busy for a fixed time per phase:

  1. bare:     GET /healthz (the floor: same app, same server, no work)
  2. webhook:  POST /prod/incoming/webhook/jwt with the seed's ticket (run row committed before each 202)

and prints requests/s, p50/p99 latency, and the webhook/bare ratio. The executor runs the queued runs
in the background meanwhile, as it would in production.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TICKET = {"issueKey": "SERVICENOW-1", "description": "HEJ", "summary": "Ticket from test case"}
FLOW = {
    "key": "ingest",
    "name": "Ingest",
    "trigger": {"type": "jwt"},
    "steps": [{"id": "note", "type": "map", "set": {"key": "{{ trigger.body.issueKey }}"}}],
}


# --- load generator (runs in its own process) ----------------------------------------------------


async def _connection(
    host: str,
    port: int,
    requests: Iterator[bytes],
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            request = next(requests, None)
            if request is None:  # every prepared request was sent (each may be used once)
                break
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                reader, writer = await asyncio.open_connection(host, port)
                continue
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _load(host: str, port: int, requests: Iterator[bytes], seconds: float, connections: int) -> dict[str, Any]:
    """Keep `connections` connections busy for `seconds` with `requests` (shared: each is sent once)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(host, port, requests, deadline, latencies, statuses) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(percentile(0.50), 2),
        "p99_ms": round(percentile(0.99), 2),
    }


def load_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    requests = read_requests(Path(args.request_file))
    if args.warmup > 0:
        asyncio.run(_load(args.host, args.port, requests, args.warmup, args.connections))
    print(json.dumps(asyncio.run(_load(args.host, args.port, requests, args.seconds, args.connections))))


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The hidden options a bench passes to itself when it re-runs as the load process (`--load`)."""
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--request-file", help=argparse.SUPPRESS)


def write_requests(path: Path, requests: list[bytes]) -> None:
    """One request repeated for the whole phase, or several (JSON list) each sent once, in order."""
    if len(requests) == 1:
        path.write_bytes(requests[0])
    else:
        path.with_suffix(".many").write_text(json.dumps([r.decode("latin-1") for r in requests]))


def read_requests(path: Path) -> Iterator[bytes]:
    many = path.with_suffix(".many")
    if many.exists():
        return iter([r.encode("latin-1") for r in json.loads(many.read_text())])
    return itertools.repeat(path.read_bytes())


# --- orchestration ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def start_server(
    data_dir: Path, port: int, worker: bool = True, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = {
        **os.environ,
        "IHUB_DATA_DIR": str(data_dir),
        "IHUB_PORT": str(port),
        "IHUB_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IHUB_LOG_LEVEL": "WARNING",
        "IHUB_EXECUTOR": "local",
        **(extra_env or {}),
    }
    env.pop("IHUB_DATABASE_URL", None)
    init = subprocess.run([sys.executable, "-m", "ihub", "init", "--json"], env=env, capture_output=True, text=True)
    if init.returncode != 0:
        raise SystemExit(f"ihub init failed:\n{init.stderr}")
    creds = json.loads(init.stdout)
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    command = [sys.executable, "-m", "ihub", "serve", *([] if worker else ["--no-worker"])]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return server, creds


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("ihub serve exited during start-up")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("ihub serve did not become ready in 30 s")


def create_trigger(url: str, creds: dict[str, str]) -> dict[str, Any]:
    """Template → project → flow → trigger client with a generated key, as a client would; the trigger page."""
    import httpx

    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((creds["secret"] + nonce).encode()).hexdigest()
    response = httpx.post(url + "/api/v1/token", json={"userId": creds["userId"], "nonce": nonce, "hash": digest})
    auth = {"Authorization": response.raise_for_status().json()["tokens"][0]["token"]}
    definition = {"connections": [], "flows": [FLOW]}
    body = {"name": "bench", "description": "", "definition": definition}
    response = httpx.post(url + "/api/v1/template/org/1", json=body, headers=auth)
    template_id = response.raise_for_status().json()["templates"][0]["id"]
    body = {"name": "bench", "description": "", "templateId": template_id}
    response = httpx.post(url + "/api/v1/project/org/1", json=body, headers=auth)
    flow_id = response.raise_for_status().json()["projects"][0]["flows"][0]["id"]
    response = httpx.post(f"{url}/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True}, headers=auth)
    trigger: dict[str, Any] = response.raise_for_status().json()["triggers"][0]
    return trigger


def sign_assertion(trigger: dict[str, Any], jti: str | None = None, key: Any = None) -> str:
    """An RS256 client assertion as the seed's clients make it (with a unique `jti` when given). `key`: the
    trigger's private key already loaded (loading a PEM checks the key, which costs more than signing)."""
    import jwt

    now = int(time.time())
    claims = {"iss": trigger["iss"], "sub": trigger["sub"], "aud": trigger["aud"], "iat": now, "exp": now + 1200}
    if jti is not None:
        claims["jti"] = jti
    return jwt.encode(claims, key or trigger["privateKey"], algorithm="RS256", headers={"typ": "JWT"})


def prepare(url: str, creds: dict[str, str]) -> tuple[str, int]:
    """A trigger client and an access token for it; returns (token, flow id)."""
    import httpx

    trigger = create_trigger(url, creds)
    grant = {"grant_type": "urn:ihub:jwt:bearer", "assertion": sign_assertion(trigger)}
    response = httpx.post(trigger["aud"], json=grant)
    return response.raise_for_status().json()["access_token"], int(trigger["sub"])


def run_phase(
    name: str, request: bytes | list[bytes], port: int, args: argparse.Namespace, workdir: Path, ok: int = 0
) -> dict[str, Any]:
    request_file = workdir / f"{name}.http"
    write_requests(request_file, request if isinstance(request, list) else [request])
    command = [
        sys.executable,
        __file__,
        "--load",
        "--port",
        str(port),
        "--request-file",
        str(request_file),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--connections",
        str(args.connections),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + args.warmup + 60)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed in phase {name}:\n{done.stderr}")
    result = json.loads(done.stdout)
    ok = ok or (202 if name == "webhook" else 200)
    result["accepted"] = result["statuses"].get(str(ok), 0)
    result["accepted_per_s"] = round(result["accepted"] / result["seconds"], 1)
    return result


def count_runs(data_dir: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(data_dir / "ihub.db") as db:
        return dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


def metrics_env(metrics: bool) -> dict[str, str]:
    """Counting on (the default) or off; with a token so that /metrics is served, as an operator would run it."""
    return {"IHUB_METRICS_ENABLED": "true" if metrics else "false", "IHUB_METRICS_TOKEN": "bench-" + "m" * 24}


def measure_once(args: argparse.Namespace, metrics: bool = True) -> dict[str, Any]:
    """A fresh server: the bare phase, then the webhook phase; the runs table afterwards."""
    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server, creds = start_server(workdir / "data", port, worker=not args.no_worker, extra_env=metrics_env(metrics))
        try:
            wait_ready(url, server)
            token, _ = prepare(url, creds)
            bare = run_phase("bare", http_request("GET", "/healthz", port, {}), port, args, workdir)
            body = json.dumps(TICKET).encode()
            hook_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            hook = http_request("POST", "/prod/incoming/webhook/jwt", port, hook_headers, body)
            webhook = run_phase("webhook", hook, port, args, workdir)
            runs = count_runs(workdir / "data")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    return {"bare": bare, "webhook": webhook, "runs": runs}


def recording_cost(calls: int = 20_000) -> dict[str, float]:
    """Microseconds counting adds to one webhook request and to one run of one step, timed in this process with
    the multiprocess (mmap) storage `serve` uses: the request's middleware around a no-op app minus the bare
    no-op app, plus the incoming counter; a run's start, step duration and finish. Load on the machine slows
    both sides of the comparison alike, so this stays meaningful where end-to-end rates swing."""
    import asyncio
    import timeit

    from ihub.observability import metrics

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def nothing(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/prod/incoming/webhook/jwt", "route": None}
    counted = metrics.HttpMetrics(bare)

    async def requests(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await app(scope, receive, nothing)
            if app is counted:
                metrics.incoming("webhook", "accepted", "new")
        return time.perf_counter() - started

    def run_events() -> None:
        metrics.run_started("map")
        metrics.step_finished("map", 0.001)
        metrics.run_finished("map", "succeeded")

    with tempfile.TemporaryDirectory(prefix="ihub-metrics-") as tmp:
        metrics.use_directory(Path(tmp))
        # Best of 5: the least disturbed repetition is the closest to the code's own cost.
        with_metrics = min(asyncio.run(requests(counted)) for _ in range(5))
        without = min(asyncio.run(requests(bare)) for _ in range(5))
        run = min(timeit.repeat(run_events, number=calls, repeat=5))
    return {
        "per_request_us": round((with_metrics - without) / calls * 1e6, 2),
        "per_one_step_run_us": round(run / calls * 1e6, 2),
    }


def compare_metrics(args: argparse.Namespace) -> None:
    """Two servers side by side, metrics on and off, measured in alternating phases (on, off, off, on, ...):
    load from elsewhere on the machine drifts over both alike. Medians of accepted webhooks/s, their ratio
    (on/off; the issue's budget: at least 0.95), and the recording cost timed in-process."""
    import statistics

    rates: dict[bool, list[float]] = {True: [], False: []}
    p50: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
        workdir = Path(tmp)
        servers: dict[bool, tuple[subprocess.Popen[bytes], int, bytes]] = {}
        try:
            for metrics in (True, False):
                port = free_port()
                data = workdir / f"data-{'on' if metrics else 'off'}"
                server, creds = start_server(data, port, worker=not args.no_worker, extra_env=metrics_env(metrics))
                servers[metrics] = (server, port, b"")
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, server)
                token, _ = prepare(url, creds)
                hook_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
                body = json.dumps(TICKET).encode()
                request = http_request("POST", "/prod/incoming/webhook/jwt", port, hook_headers, body)
                servers[metrics] = (server, port, request)
            for round_ in range(args.rounds):
                for metrics in (True, False) if round_ % 2 == 0 else (False, True):
                    _, port, request = servers[metrics]
                    webhook = run_phase("webhook", request, port, args, workdir)
                    rates[metrics].append(webhook["accepted_per_s"])
                    p50[metrics].append(webhook["p50_ms"])
                    mode = "on " if metrics else "off"
                    shown = f"  round {round_ + 1} metrics {mode}: {webhook['accepted_per_s']:.1f} webhooks/s"
                    print(shown, file=sys.stderr, flush=True)
        finally:
            for server, _, _ in servers.values():
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    cost = recording_cost()
    # The share of one request's CPU time that counting takes, at the rate measured without metrics.
    share = cost["per_request_us"] * off / 1e6 if off else 0.0
    report = {
        "rounds": args.rounds,
        "webhooks_per_s": {"on": rates[True], "off": rates[False]},
        "median_on": on,
        "median_off": off,
        "median_p50_ms": {"on": statistics.median(p50[True]), "off": statistics.median(p50[False])},
        "ratio_on_to_off": round(on / off, 3) if off else 0.0,
        "recording_cost": cost,
        "recording_share_of_a_request": round(share, 4),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"webhook ingest, metrics on vs off — {args.rounds} rounds alternating, {args.seconds:g} s per phase")
    latency = report["median_p50_ms"]
    print(f"median webhooks/s: on {on:.1f}, off {off:.1f}; p50 ms on {latency['on']:.2f}, off {latency['off']:.2f}")
    print(f"ratio on/off: {report['ratio_on_to_off']:.3f} (budget: at least 0.95)")
    print(
        f"recording cost: {cost['per_request_us']:.2f} us per webhook request ({share:.2%} of one at {off:.0f}/s), "
        f"{cost['per_one_step_run_us']:.2f} us per one-step run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up per phase (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-worker", action="store_true", help="serve without the local executor (ingest alone, runs stay queued)"
    )
    parser.add_argument(
        "--metrics",
        choices=["on", "off", "compare"],
        default="on",
        help="count metrics (IHUB_METRICS_ENABLED) or not; compare: two servers, phases alternating (--rounds)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="phases per mode with --metrics compare (default 6)")
    add_load_options(parser)
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return
    if args.metrics == "compare":
        compare_metrics(args)
        return

    measured = measure_once(args, metrics=args.metrics == "on")
    bare, webhook, runs = measured["bare"], measured["webhook"], measured["runs"]
    ratio = webhook["accepted_per_s"] / bare["accepted_per_s"] if bare["accepted_per_s"] else 0.0
    report = {
        "setup": {
            "server": "ihub serve (uvicorn), SQLite WAL, " + ("no executor" if args.no_worker else "local executor"),
            "connections": args.connections,
            "seconds_per_phase": args.seconds,
            "cpus": os.cpu_count(),
            "metrics": args.metrics,
        },
        "bare_get_healthz": bare,
        "webhook_jwt": webhook,
        "ratio_webhook_to_bare": round(ratio, 3),
        "runs_in_database": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"ihub webhook ingest — {args.connections} connections, {args.seconds:g} s per phase, {os.cpu_count()} CPUs")
    print(f"{'phase':<26}{'ok/s':>10}{'p50 ms':>10}{'p99 ms':>10}  statuses")
    for name, result in (("bare GET /healthz", bare), ("webhook POST (202)", webhook)):
        print(
            f"{name:<26}{result['accepted_per_s']:>10.1f}{result['p50_ms']:>10.2f}{result['p99_ms']:>10.2f}"
            f"  {result['statuses']}"
        )
    print(f"ratio webhook/bare: {ratio:.3f}   runs in database by status: {runs}")


if __name__ == "__main__":
    main()
