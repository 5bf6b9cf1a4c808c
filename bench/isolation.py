#!/usr/bin/env python
"""Tenant isolation benchmark: does one hostile tenant slow down everyone else's API calls?

    .venv/bin/python bench/isolation.py [--seconds 6] [--only slow-body,cpu-macro] [--json]

Starts `ihub serve` on the embedded default (SQLite, local executor) on a free port in a temporary data
directory, with `IHUB_EGRESS_ALLOW='["127.0.0.0/8"]'` so flows may call the local targets, and a target
server process on 127.0.0.1 (a 100 MiB answer, a 1 byte/s drip, a 1 byte/s JWKS host). All traffic stays on
127.0.0.1. A measuring client (a process of its own) calls `GET /api/v1/org` and `POST /prod/incoming/token` in
two concurrent loops (one request at a time each, 20 ms apart) for `--seconds` per phase, at most `--max-requests` each:

  quiet                 nothing else happening (the reference)
  slow-body             4 clients send `POST /api/v1/flow/{id}/run` with a Content-Length larger than the body
  cpu-membership        runs evaluating `i in range(30000)|list` in a loop
  cpu-macro             runs calling a self-recursive macro (2^20 calls)
  cpu-foreach           runs of nested `foreach` loops of pure `map` steps (300 x 300)
  cpu-format            runs evaluating `'%0100000000d' % 1`
  cpu-center            runs evaluating `'x'|center(100000000)`
  http-100mib           runs whose http step gets a 100 MiB answer
  http-drip             runs whose http step (timeout 3) reads from a target dripping 1 byte a second
  slow-jwks             token requests for clients whose JWKS host drips 1 byte a second
  quiet-after           the quiet phase again (how much the machine itself drifted)

Each phase runs on a fresh hub, so that what one attack leaves behind cannot slow down the next. Flow scenarios
keep two runs in flight for the whole phase (a new one as soon as one finishes); when the phase ends the attack
stops, its runs are cancelled and their outcome (waited for at most `--settle` s) is reported.
A scenario the hub refuses to set up (a guard that rejects the flow at save time, for example) is reported,
not fatal. Target: every phase's p99 within 2x of quiet, and zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

IHUB = [sys.executable, "-m", "ihub"]
MIB = 1024 * 1024
FINAL = {"succeeded", "failed", "cancelled"}


# --- the target server (a process of its own, so its work does not disturb the measuring client) ----------


class Target(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/big"):
            self._big()
        elif self.path.startswith("/drip") or self.path.startswith("/jwks"):
            self._drip(seconds=20)
        else:
            self._send(b'{"ok":true}')

    do_POST = do_GET  # noqa: N815

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _big(self) -> None:
        chunk = b"x" * MIB
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(100 * MIB))
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(chunk)
        except OSError:
            pass

    def _drip(self, seconds: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(seconds))
        self.end_headers()
        try:
            for _ in range(seconds):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def serve_targets() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_targets() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, __file__, "--targets"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


# --- the hub ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Hub:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    user_id: str
    secret: str


def start_hub(workdir: Path) -> Hub:
    port = free_port()
    env = {
        **os.environ,
        "IHUB_DATA_DIR": str(workdir / "data"),
        "IHUB_PORT": str(port),
        "IHUB_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IHUB_LOG_LEVEL": "WARNING",
        "IHUB_EXECUTOR": "local",
        "IHUB_EGRESS_ALLOW": '["127.0.0.0/8"]',
    }
    env.pop("IHUB_DATABASE_URL", None)
    init = subprocess.run([*IHUB, "init", "--json"], env=env, capture_output=True, text=True)
    if init.returncode != 0:
        raise SystemExit(f"ihub init failed:\n{init.stderr}")
    creds = json.loads(init.stdout)
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([*IHUB, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("ihub serve exited during start-up:\n" + (workdir / "serve.log").read_text())
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Hub(url, port, process, creds["userId"], creds["secret"])
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("ihub serve did not become ready in 60 s")


def login(hub: Hub) -> str:
    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = httpx.post(hub.url + "/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    return response.raise_for_status().json()["tokens"][0]["token"]


class SetupError(Exception):
    pass


def checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        request = response.request
        raise SetupError(f"{request.method} {request.url.path}: {response.status_code} {response.text[:300]}")
    return response.json()


def project(http: httpx.Client, flows: list[dict[str, Any]], target: str | None = None) -> dict[str, Any]:
    """A template with these flows and a project of it (its http connection pointing at the target)."""
    slots = [{"id": "target", "type": "http", "name": "Target"}] if target else []
    name = f"iso-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "description": "", "definition": {"connections": slots, "flows": flows}}
    template = checked(http.post("/api/v1/template/org/1", json=body))["templates"][0]
    made = checked(http.post("/api/v1/project/org/1", json={"name": name, "templateId": template["id"]}))
    created = made["projects"][0]
    if target:
        connections = [{"id": "target", "details": {"type": "http", "baseUrl": target}}]
        changed = http.put(f"/api/v1/project/{created['id']}", json={"connections": connections})
        created = checked(changed)["projects"][0]
    return created


def rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def assertion(trigger: dict[str, Any], key: Any, kid: str | None = None) -> str:
    import jwt

    now = int(time.time())
    claims = {"iss": trigger["iss"], "sub": trigger["sub"], "aud": trigger["aud"], "iat": now, "exp": now + 1200}
    headers = {"typ": "JWT", **({"kid": kid} if kid else {})}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def token_client(http: httpx.Client) -> dict[str, Any]:
    """The measured token call: a jwt flow's client with a generated key, and a signed assertion."""
    flow = {"key": "ingest", "trigger": {"type": "jwt"}, "steps": [{"id": "n", "type": "map", "set": {"k": "1"}}]}
    flow_id = project(http, [flow])["flows"][0]["id"]
    trigger = checked(http.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True}))["triggers"][0]
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(trigger["privateKey"].encode(), password=None)
    form = {"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion(trigger, key)}
    return {"path": "/prod/incoming/token", "form": form}


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def p99_ms(self) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


async def measure(hub: Hub, token: str, grant: dict[str, Any], seconds: float, max_requests: int) -> dict[str, Samples]:
    results = {"org": Samples(), "token": Samples()}
    deadline = time.monotonic() + seconds

    async def loop(name: str, call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], ok: int) -> None:
        samples = results[name]
        async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client:
            while time.monotonic() < deadline and len(samples.latencies) + samples.errors < max_requests:
                started = time.perf_counter()
                try:
                    response = await call(client)
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                samples.statuses[status] = samples.statuses.get(status, 0) + 1
                if status == str(ok):
                    samples.latencies.append(time.perf_counter() - started)
                else:
                    samples.errors += 1
                await asyncio.sleep(0.02)

    await asyncio.gather(
        loop("org", lambda c: c.get("/api/v1/org", headers={"Authorization": token}), 200),
        loop("token", lambda c: c.post(grant["path"], data=grant["form"]), 200),
    )
    return results


def measure_in_own_process(hub: Hub, token: str, grant: dict[str, Any], args: argparse.Namespace) -> dict[str, Samples]:
    """`measure` in a process of its own: the attacks' clients parse large answers (a run's 500 step records)
    on their event loop, which would otherwise delay the measuring loops and be counted against the hub."""
    job = {"url": hub.url, "token": token, "grant": grant, "seconds": args.seconds, "max": args.max_requests}
    done = subprocess.run(
        [sys.executable, __file__, "--measure"], input=json.dumps(job), capture_output=True, text=True, check=True
    )
    return {name: Samples(**values) for name, values in json.loads(done.stdout).items()}


def measure_main() -> None:
    job = json.loads(sys.stdin.read())
    hub = Hub(job["url"], 0, None, "", "")  # type: ignore[arg-type]
    results = asyncio.run(measure(hub, job["token"], job["grant"], job["seconds"], job["max"]))
    print(json.dumps({name: vars(samples) for name, samples in results.items()}))


# --- attacks ----------------------------------------------------------------------------------------


@dataclass
class Attack:
    """Runs while a phase is measured; `stop` ends it and returns a note for the table."""

    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[str]]


def lying_bodies(hub: Hub, token: str, flow_id: str, clients: int = 4) -> Attack:
    state = {"answers": {}, "running": True}
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        while state["running"]:
            reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
            head = (
                f"POST /api/v1/flow/{flow_id}/run HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n"
                f"Authorization: {token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            )
            writer.write(head.encode() + b'{"n": 1, "')
            try:
                line = await reader.readline()
                status = line.split()[1].decode() if len(line.split()) > 1 else "closed"
                state["answers"][status] = state["answers"].get(status, 0) + 1
            finally:
                writer.close()

    async def start() -> None:
        tasks.extend(asyncio.create_task(one()) for _ in range(clients))

    async def stop() -> str:
        state["running"] = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return f"{clients} lying clients; answers {state['answers'] or 'none yet'}"

    return Attack(start, stop)


def flow_runs(hub: Hub, token: str, flow_id: str, settle: float, in_flight: int = 2, max_runs: int = 20) -> Attack:
    state: dict[str, Any] = {"running": True, "runs": [], "statuses": {}, "errors": []}
    tasks: list[asyncio.Task[None]] = []
    headers = {"Authorization": token}

    async def one(client: httpx.AsyncClient) -> None:
        while state["running"] and len(state["runs"]) < max_runs:
            response = await client.post(f"/api/v1/flow/{flow_id}/run", json={"n": 1}, headers=headers)
            if response.status_code != 202:
                state["errors"].append(response.status_code)
                await asyncio.sleep(1)
                continue
            run_id = response.json()["runId"]
            state["runs"].append(run_id)
            while state["running"]:
                await asyncio.sleep(0.5)
                run = await client.get(f"/api/v1/run/{run_id}", headers=headers)
                if run.status_code == 200 and run.json()["runs"][0]["status"] in FINAL:
                    break

    client = httpx.AsyncClient(base_url=hub.url, timeout=60)

    async def start() -> None:
        tasks.extend(asyncio.create_task(one(client)) for _ in range(in_flight))

    async def stop() -> str:
        state["running"] = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run_id in state["runs"]:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"/api/v1/run/{run_id}/cancel", headers=headers)
        deadline = time.monotonic() + settle
        final: dict[str, str] = {}
        errors: list[str] = []
        while time.monotonic() < deadline and len(final) < len(state["runs"]):
            for run_id in state["runs"]:
                if run_id in final:
                    continue
                try:
                    run = (await client.get(f"/api/v1/run/{run_id}", headers=headers)).json()["runs"][0]
                except (httpx.HTTPError, KeyError, ValueError):
                    continue
                if run["status"] in FINAL:
                    final[run_id] = run["status"]
                    if run.get("error"):
                        errors.append(str(run["error"])[:90])
            await asyncio.sleep(0.5)
        await client.aclose()
        counts: dict[str, int] = {}
        for status in final.values():
            counts[status] = counts.get(status, 0) + 1
        unsettled = len(state["runs"]) - len(final)
        note = f"{len(state['runs'])} runs {counts}"
        if unsettled:
            note += f", {unsettled} still running after {settle:g}s"
        if state["errors"]:
            note += f", trigger answers {sorted(set(state['errors']))}"
        if errors:
            note += f"; e.g. {errors[0]!r}"
        return note

    return Attack(start, stop)


def slow_jwks(hub: Hub, triggers: list[dict[str, Any]], in_flight: int = 2) -> Attack:
    state: dict[str, Any] = {"running": True, "answers": {}}
    tasks: list[asyncio.Task[None]] = []
    key = rsa_key()

    async def one(offset: int) -> None:
        n = offset
        async with httpx.AsyncClient(base_url=hub.url, timeout=60) as client:
            while state["running"]:
                trigger = triggers[n % len(triggers)]
                n += in_flight
                form = {"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion(trigger, key, uuid.uuid4().hex)}
                try:
                    status = str((await client.post("/prod/incoming/token", data=form)).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                state["answers"][status] = state["answers"].get(status, 0) + 1

    async def start() -> None:
        tasks.extend(asyncio.create_task(one(i)) for i in range(in_flight))

    async def stop() -> str:
        state["running"] = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return f"{len(triggers)} JWKS clients; token answers {state['answers']}"

    return Attack(start, stop)


# --- scenarios ----------------------------------------------------------------------------------------


def map_flow(key: str, expression: str) -> dict[str, Any]:
    return {"key": key, "trigger": "manual", "steps": [{"id": "work", "type": "map", "set": {"x": expression}}]}


CPU_EXPRESSIONS = {
    "cpu-membership": "{% for i in range(20000) %}{% if i in range(30000)|list %}{% endif %}{% endfor %}",
    "cpu-macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(20) }}",
    "cpu-format": "{{ '%0100000000d' % 1 }}",
    "cpu-center": "{{ 'x'|center(100000000) }}",
}

NESTED_FOREACH = {
    "key": "cpu-foreach",
    "trigger": "manual",
    "steps": [
        {
            "id": "outer",
            "type": "foreach",
            "items": "{{ range(300)|list }}",
            "steps": [
                {
                    "id": "inner",
                    "type": "foreach",
                    "items": "{{ range(300)|list }}",
                    "as": "j",
                    "steps": [{"id": "pure", "type": "map", "set": {"v": "{{ j }}"}}],
                }
            ],
        }
    ],
}


def http_flow(key: str, path: str, timeout: float) -> dict[str, Any]:
    step = {"id": "call", "type": "http", "connection": "target", "method": "GET", "path": path, "timeout": timeout}
    return {"key": key, "trigger": "manual", "steps": [step]}


def build_attack(name: str, hub: Hub, http: httpx.Client, token: str, target: str, settle: float) -> Attack | None:
    if name.startswith("quiet"):
        return None
    if name == "slow-body":
        flow_id = project(http, [map_flow("target", "{{ 1 }}")])["flows"][0]["id"]
        return lying_bodies(hub, token, flow_id)
    if name in CPU_EXPRESSIONS:
        flow_id = project(http, [map_flow(name, CPU_EXPRESSIONS[name])])["flows"][0]["id"]
        return flow_runs(hub, token, flow_id, settle)
    if name == "cpu-foreach":
        flow_id = project(http, [NESTED_FOREACH])["flows"][0]["id"]
        return flow_runs(hub, token, flow_id, settle)
    if name == "http-100mib":
        flow_id = project(http, [http_flow(name, "/big", 60)], target)["flows"][0]["id"]
        return flow_runs(hub, token, flow_id, settle)
    if name == "http-drip":
        flow_id = project(http, [http_flow(name, "/drip", 3)], target)["flows"][0]["id"]
        return flow_runs(hub, token, flow_id, settle)
    if name == "slow-jwks":
        flow = {"key": "jwks", "trigger": {"type": "jwt"}, "steps": [{"id": "n", "type": "map", "set": {"k": "1"}}]}
        flow_id = project(http, [flow])["flows"][0]["id"]
        triggers = []
        for n in range(8):
            body = {"jwksUrl": f"{target}/jwks/{n}"}
            triggers.append(checked(http.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json=body))["triggers"][0])
        return slow_jwks(hub, triggers)
    raise SystemExit(f"unknown scenario {name}")


SCENARIOS = [
    "quiet",
    "slow-body",
    "cpu-membership",
    "cpu-macro",
    "cpu-foreach",
    "cpu-format",
    "cpu-center",
    "http-100mib",
    "http-drip",
    "slow-jwks",
    "quiet-after",
]


async def run_phase(name: str, hub: Hub, target: str, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": name}
    try:
        token = login(hub)
        with httpx.Client(base_url=hub.url, headers={"Authorization": token}, timeout=60) as http:
            grant = token_client(http)
            attack = build_attack(name, hub, http, token, target, args.settle)
    except (SetupError, httpx.HTTPError) as error:
        return {**row, "note": f"scenario not set up: {error}"[:200]}
    if attack is not None:
        await attack.start()
        await asyncio.sleep(1.0)  # let the attack take hold before measuring
    try:
        samples = await asyncio.to_thread(measure_in_own_process, hub, token, grant, args)
    finally:
        note = await attack.stop() if attack is not None else ""
    for call, result in samples.items():
        row[call] = {"p99_ms": round(result.p99_ms(), 1), "ok": len(result.latencies), "errors": result.errors}
        if result.errors:
            row[call]["statuses"] = result.statuses
    row["note"] = note
    return row


def stop_hub(hub: Hub) -> None:
    hub.process.terminate()
    try:
        hub.process.wait(10)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()


def table(rows: list[dict[str, Any]]) -> str:
    quiet = next((r for r in rows if r["scenario"] == "quiet" and "org" in r), None)

    def cell(row: dict[str, Any], call: str) -> tuple[str, str]:
        if call not in row:
            return "-", "-"
        p99 = row[call]["p99_ms"]
        ratio = p99 / quiet[call]["p99_ms"] if quiet and quiet[call]["p99_ms"] else float("nan")
        return f"{p99:.0f}", f"{ratio:.1f}x"

    lines = [
        "| scenario | GET /api/v1/org p99 ms | ratio | POST /prod/incoming/token p99 ms | ratio | errors | attack |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        org, org_ratio = cell(row, "org")
        tok, tok_ratio = cell(row, "token")
        errors = "-" if "org" not in row else str(row["org"]["errors"] + row["token"]["errors"])
        lines.append(f"| {row['scenario']} | {org} | {org_ratio} | {tok} | {tok_ratio} | {errors} | {row['note']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per phase (default 6)")
    parser.add_argument("--max-requests", type=int, default=300, help="cap per call per phase (default 300)")
    parser.add_argument("--settle", type=float, default=10.0, help="longest wait for a phase's runs to end")
    parser.add_argument("--only", default="", help="comma-separated scenarios (quiet is always measured)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--targets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.targets:
        serve_targets()
        return
    if args.measure:
        measure_main()
        return
    names = SCENARIOS
    if args.only:
        wanted = set(args.only.split(","))
        names = ["quiet", *[n for n in SCENARIOS if n in wanted and n != "quiet"]]
    targets, target = start_targets()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    try:
        for name in names:
            # A fresh hub per phase: whatever one attack leaves running cannot slow down the next phase.
            with tempfile.TemporaryDirectory(prefix="ihub-isolation-") as tmp:
                hub = start_hub(Path(tmp))
                try:
                    row = asyncio.run(run_phase(name, hub, target, args))
                    if hub.process.poll() is not None:
                        row["note"] += f"; the hub exited (code {hub.process.returncode})"
                finally:
                    stop_hub(hub)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        targets.terminate()
    print(table(rows))
    print(f"\n{len(names)} phases in {time.monotonic() - started:.0f} s; target: p99 within 2x of quiet, 0 errors")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
