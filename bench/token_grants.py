#!/usr/bin/env python
"""Token grant benchmark: RFC 7523 grants per second and latency, beside a bare endpoint and a bare crypto loop.

    .venv/bin/python bench/token_grants.py [--seconds 10] [--connections 16] [--json]

Starts `ihub serve` (embedded default: SQLite, local executor) on a free port in a temporary data directory,
creates a flow with a jwt trigger and a generated key through the API, then signs enough assertions for the
phase up front (RS256, as the seed's clients do, each with its own `jti`: an assertion is single use). A
separate load process on 127.0.0.1 keeps N keep-alive connections busy for a fixed time per phase:

  1. bare:   GET /healthz (the floor: same app, same server, no work)
  2. grant:  POST /prod/incoming/token, every request a fresh assertion

and prints grants/s, p50/p99 latency and grant/bare, plus the crypto floor measured in this process: the
same RS256 verify + HS256 sign with joserfc in a bare loop on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from webhook_ingest import (
    add_load_options,
    create_trigger,
    free_port,
    http_request,
    load_main,
    run_phase,
    sign_assertion,
    start_server,
    wait_ready,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _sign_batch(trigger: dict[str, Any], count: int) -> list[str]:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(trigger["privateKey"].encode(), password=None)
    return [sign_assertion(trigger, uuid.uuid4().hex, key) for _ in range(count)]


def sign_many(trigger: dict[str, Any], count: int) -> list[str]:
    """`count` assertions with unique jtis, signed on every core (RS256 signing is the slow half)."""
    workers = os.cpu_count() or 1
    share = -(-count // workers)
    with ProcessPoolExecutor(workers) as pool:
        batches = pool.map(_sign_batch, [trigger] * workers, [share] * workers)
        return [assertion for batch in batches for assertion in batch][:count]


def crypto_floor(trigger: dict[str, Any], assertions: list[str], seconds: float = 2.0) -> float:
    """Grants/s of the crypto alone, one core: verify the client's RS256 assertion, sign an HS256 token."""
    from joserfc import jws, jwt
    from joserfc.jwk import OctKey, RSAKey

    public = RSAKey.import_key(trigger["privateKey"]).as_dict(private=False)
    verify_key = RSAKey.import_key(public)
    sign_key = OctKey.import_key(os.urandom(32))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        jws.deserialize_compact(assertions[done % len(assertions)], verify_key, algorithms=["RS256"])
        jwt.encode({"alg": "HS256"}, {"client": trigger["iss"], "exp": int(time.time()) + 600}, sign_key)
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up per phase (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    parser.add_argument("--max-rate", type=int, default=2500, help="grants/s to prepare assertions for (default 2500)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_load_options(parser)
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return

    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server, creds = start_server(workdir / "data", port)
        try:
            wait_ready(url, server)
            trigger = create_trigger(url, creds)
            count = int(args.max_rate * (args.seconds + args.warmup))
            assertions = sign_many(trigger, count)
            floor = crypto_floor(trigger, assertions)
            bare = run_phase("bare", http_request("GET", "/healthz", port, {}), port, args, workdir)
            path = "/" + trigger["aud"].split("/", 3)[3]
            headers = {"Content-Type": "application/json"}
            bodies = (json.dumps({"grant_type": GRANT_TYPE, "assertion": a}).encode() for a in assertions)
            requests = [http_request("POST", path, port, headers, body) for body in bodies]
            grant = run_phase("grant", requests, port, args, workdir, ok=200)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except Exception:  # noqa: BLE001 - a stuck server is killed
                server.kill()

    sent = sum(grant["statuses"].values())
    exhausted = sent >= count
    ratio = grant["accepted_per_s"] / bare["accepted_per_s"] if bare["accepted_per_s"] else 0.0
    report = {
        "setup": {
            "server": "ihub serve (uvicorn), SQLite WAL, local executor",
            "connections": args.connections,
            "seconds_per_phase": args.seconds,
            "cpus": os.cpu_count(),
            "assertions_prepared": count,
            "assertions_ran_out": exhausted,
        },
        "crypto_floor_per_s_one_core": round(floor),
        "bare_get_healthz": bare,
        "token_grant": grant,
        "ratio_grant_to_bare": round(ratio, 3),
        "ratio_grant_to_crypto_floor": round(grant["accepted_per_s"] / floor, 3) if floor else 0.0,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"ihub token grants — {args.connections} connections, {args.seconds:g} s per phase, {os.cpu_count()} CPUs")
    print(f"crypto floor (RS256 verify + HS256 sign, joserfc, one core): {floor:,.0f}/s")
    print(f"{'phase':<26}{'ok/s':>10}{'p50 ms':>10}{'p99 ms':>10}  statuses")
    for name, result in (("bare GET /healthz", bare), ("token grant (200)", grant)):
        print(
            f"{name:<26}{result['accepted_per_s']:>10.1f}{result['p50_ms']:>10.2f}{result['p99_ms']:>10.2f}"
            f"  {result['statuses']}"
        )
    print(f"ratio grant/bare: {ratio:.3f}   grant/crypto floor: {report['ratio_grant_to_crypto_floor']}")
    if exhausted:
        print(f"note: all {count} prepared assertions were used; raise --max-rate for a full phase")


if __name__ == "__main__":
    main()
