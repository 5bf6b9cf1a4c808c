#!/usr/bin/env python
"""The measuring half of bench/compare_n8n.sh: the same load against a running n8n and a fresh `ihub serve`.

    .venv/bin/python bench/compare_n8n.py --n8n-url http://127.0.0.1:PORT --n8n-db DATA/.n8n/database.sqlite

(compare_n8n.sh installs, starts and stops n8n, then calls this.) Both sides get the same load from the load
process of bench/webhook_ingest.py: the body of the anchor's post.lua, `--connections` keep-alive connections
for `--seconds` after a `--warmup` phase. n8n: `POST /webhook/bench` (Webhook → Set, respond on receipt,
executions saved in SQLite). ihub: `ihub serve` (SQLite, local executor), `POST /prod/incoming/webhook/jwt`
with a reused access token, one-step `map` flow (the same work as n8n's Set node).

Figures per side:
- accepted/s, p50/p99: requests answered 200 (n8n) or 202 (ihub) in the measured phase, by the load process;
- completed/s: executions (n8n `execution_entity`, status success) or runs (ihub `runs`, succeeded) that
  finished inside the measured window, divided by its length. This is the rate sustained under load, backlog
  included; a side that accepts faster than it executes builds a backlog, reported as `backlog` (accepted in
  the window, not finished by its end). Because both sides execute little while the load lasts, `drained/s`
  is also given: everything accepted in the window over the time from the window's start until the last of it
  finished (the backlog drained);
- webhook-to-finished p50/p99: for what was accepted in the measured window, finished − created from the
  database (n8n: execution createdAt → stoppedAt; with respond-on-receipt the row is created as the request
  is accepted; ihub: run createdAt → finishedAt), after waiting for the backlog to drain (up to --drain s).
  Under load this is mostly queueing behind the backlog, which grows with how much a side accepted, so it is
  also measured one at a time (--serial requests: send, wait until finished, next), without a backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from webhook_ingest import free_port, http_request, prepare, run_phase, start_server, wait_ready

# The body of the anchor's post.lua, byte for byte, for both sides.
BODY = b'{"issueKey":"SERVICENOW-1","description":"HEJ","summary":"Ticket from test case"}'


def _utc(value: Any) -> datetime:
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


class Side:
    """One system under test: how to address its webhook and how to read its finished work."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    ok: int
    db: Path
    # (created, finished or None, succeeded?) per execution/run
    sql: str
    unfinished_sql: str
    finished_sql: str

    def rows(self) -> list[tuple[datetime, datetime | None, bool]]:
        with sqlite3.connect(self.db) as conn:
            raw = conn.execute(self.sql).fetchall()
        return [(_utc(c), _utc(f) if f else None, bool(ok)) for c, f, ok in raw]

    def unfinished(self) -> int:
        return self._count(self.unfinished_sql)

    def finished(self) -> int:
        return self._count(self.finished_sql)

    def _count(self, sql: str) -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute(sql).fetchone()[0])


class N8n(Side):
    def __init__(self, url: str, db: Path) -> None:
        self.name, self.port, self.db = "n8n", int(url.rsplit(":", 1)[1].split("/")[0]), db
        self.path, self.headers, self.ok = "/webhook/bench", {"Content-Type": "application/json"}, 200
        self.sql = 'SELECT "createdAt", "stoppedAt", status = \'success\' FROM execution_entity'
        self.unfinished_sql = 'SELECT count(*) FROM execution_entity WHERE "stoppedAt" IS NULL'
        self.finished_sql = 'SELECT count(*) FROM execution_entity WHERE "stoppedAt" IS NOT NULL'


class Ihub(Side):
    def __init__(self, port: int, db: Path, token: str) -> None:
        self.name, self.port, self.db = "ihub", port, db
        self.path, self.ok = "/prod/incoming/webhook/jwt", 202
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.sql = "SELECT created_at, finished_at, status = 'succeeded' FROM runs"
        self.unfinished_sql = "SELECT count(*) FROM runs WHERE finished_at IS NULL"
        self.finished_sql = "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"


def measure(side: Side, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    request = http_request("POST", side.path, side.port, side.headers, BODY)
    if args.warmup > 0:
        warm = argparse.Namespace(seconds=args.warmup, warmup=0, connections=args.connections)
        run_phase(f"{side.name}-warmup", request, side.port, warm, workdir, ok=side.ok)
    phase = argparse.Namespace(seconds=args.seconds, warmup=0, connections=args.connections)
    load = run_phase(side.name, request, side.port, phase, workdir, ok=side.ok)
    # The load process reports its own measured span; it ends a moment before the subprocess returns (exit).
    end = datetime.now(UTC) - timedelta(seconds=0.05)
    start = end - timedelta(seconds=load["seconds"])
    rows = side.rows()
    completed = sum(1 for _, f, ok in rows if ok and f is not None and start <= f <= end)
    accepted_in_window = [r for r in rows if start <= r[0] <= end]
    backlog = sum(1 for _, f, _ in accepted_in_window if f is None or f > end)
    drain_started = time.monotonic()
    while side.unfinished() and time.monotonic() - drain_started < args.drain:
        time.sleep(0.2)
    drained = time.monotonic() - drain_started
    rows = [r for r in side.rows() if start <= r[0] <= end]
    latencies = sorted((f - c).total_seconds() * 1000 for c, f, ok in rows if ok and f is not None)
    # Everything accepted in the window, over the time until its last one finished (backlog drained).
    last = max((f for _, f, ok in rows if ok and f is not None), default=None)
    drained_rate = len(latencies) / (last - start).total_seconds() if last is not None else 0.0

    def percentile(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

    window = (end - start).total_seconds()
    return {
        "accepted_per_s": load["accepted_per_s"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "statuses": load["statuses"],
        "completed_per_s": round(completed / window, 1),
        "completed_until_drained_per_s": round(drained_rate, 1),
        "backlog_at_end": backlog,
        "drain_s": round(drained, 1),
        "still_unfinished": side.unfinished(),
        "finish_p50_ms": percentile(0.50),
        "finish_p99_ms": percentile(0.99),
    }


def one_at_a_time(side: Side, count: int, timeout: float = 60.0) -> dict[str, Any]:
    """Webhook-to-finished without a backlog: one request, wait until its execution/run finished, next."""
    import httpx

    first = datetime.now(UTC)
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            done_before = side.finished()
            response = client.post(f"http://127.0.0.1:{side.port}{side.path}", content=BODY, headers=side.headers)
            if response.status_code != side.ok:
                raise SystemExit(f"{side.name} answered {response.status_code}: {response.text[:200]}")
            deadline = time.monotonic() + timeout
            # Polling only decides when the next request goes; the latency comes from the database's timestamps.
            while side.finished() <= done_before and time.monotonic() < deadline:
                time.sleep(0.002)
    rows = [r for r in side.rows() if r[0] >= first]
    latencies = sorted((f - c).total_seconds() * 1000 for c, f, ok in rows if ok and f is not None)
    if not latencies:
        return {"runs": 0, "p50_ms": None, "p99_ms": None}
    return {
        "runs": len(latencies),
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n8n-url", required=True, help="the running n8n, e.g. http://127.0.0.1:5678")
    parser.add_argument("--n8n-db", required=True, type=Path, help="its SQLite database (.n8n/database.sqlite)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured load per side (default 15, as wrk -d15s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16, as -c16)")
    parser.add_argument("--drain", type=float, default=180.0, help="longest wait for a backlog (default 180 s)")
    parser.add_argument("--serial", type=int, default=30, help="requests one at a time, after the load (default 30)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    # compare_n8n.sh stops us with TERM: exit through the finally blocks, which stop the ihub we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
        workdir = Path(tmp)
        if not args.json:
            print("n8n: measuring…", flush=True)
        n8n = N8n(args.n8n_url, args.n8n_db)
        results["n8n"] = measure(n8n, args, workdir)
        results["n8n"]["one_at_a_time"] = one_at_a_time(n8n, args.serial)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server, creds = start_server(workdir / "data", port)
        try:
            wait_ready(url, server)
            token, _ = prepare(url, creds)
            if not args.json:
                print("ihub: measuring…", flush=True)
            ihub = Ihub(port, workdir / "data" / "ihub.db", token)
            results["ihub"] = measure(ihub, args, workdir)
            results["ihub"]["one_at_a_time"] = one_at_a_time(ihub, args.serial)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except Exception:  # noqa: BLE001 - a stuck server is killed
                server.kill()

    ours, theirs = results["ihub"], results["n8n"]
    ratios = {
        "accepted_per_s": _ratio(ours["accepted_per_s"], theirs["accepted_per_s"]),
        "completed_per_s": _ratio(ours["completed_per_s"], theirs["completed_per_s"]),
        "completed_until_drained_per_s": _ratio(
            ours["completed_until_drained_per_s"], theirs["completed_until_drained_per_s"]
        ),
        # Below 1 is better for latency; the target is ≤ 0.1.
        "finish_p99_ms": _ratio(ours["finish_p99_ms"], theirs["finish_p99_ms"]),
        "one_at_a_time_p99_ms": _ratio(ours["one_at_a_time"]["p99_ms"], theirs["one_at_a_time"]["p99_ms"]),
    }
    report = {
        "setup": {
            "connections": args.connections,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "body_bytes": len(BODY),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        },
        **results,
        "ratio_ihub_to_n8n": ratios,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    setup = report["setup"]
    print(
        f"n8n vs ihub — same load: {args.connections} connections, {args.seconds:g} s (+{args.warmup:g} s warm-up), "
        f"{len(BODY)}-byte body; {os.cpu_count()} CPUs; load average {load_before} before, "
        f"{setup['load_average_after']} after"
    )
    print(
        f"{'side':<6}{'accepted/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'done/s':>9}{'backlog':>9}"
        f"{'drain s':>9}{'drained/s':>10}{'finish p50':>12}{'finish p99':>12}  statuses"
    )
    for name, r in results.items():
        print(
            f"{name:<6}{r['accepted_per_s']:>11.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['completed_per_s']:>9.1f}"
            f"{r['backlog_at_end']:>9}{r['drain_s']:>9.1f}{r['completed_until_drained_per_s']:>10.1f}"
            f"{_ms(r['finish_p50_ms']):>12}{_ms(r['finish_p99_ms']):>12}  {r['statuses']}"
        )
        if r["still_unfinished"]:
            print(f"      {r['still_unfinished']} still unfinished after --drain {args.drain:g} s (not in the p50/p99)")
    for name, r in results.items():
        serial = r["one_at_a_time"]
        print(
            f"{name:<6}one at a time ({serial['runs']} requests, no backlog): webhook-to-finished "
            f"p50 {_ms(serial['p50_ms'])} ms, p99 {_ms(serial['p99_ms'])} ms"
        )
    print(
        "ihub/n8n: accepted/s {accepted_per_s}x, completed/s in the window {completed_per_s}x, until drained "
        "{completed_until_drained_per_s}x (target ≥ 10), "
        "webhook-to-finished p99 under load {finish_p99_ms}x, one at a time {one_at_a_time_p99_ms}x "
        "(target ≤ 0.1)".format(**ratios)
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
