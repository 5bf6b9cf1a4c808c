#!/usr/bin/env python
"""Console page benchmark: server time of each console page with 100,000 runs in the database.

    .venv/bin/python bench/console_pages.py [--runs 100000] [--requests 200] [--json]

Starts `ihub serve --no-worker` (embedded default: SQLite) on a free port in a temporary data directory, creates
a template, two projects (one in the root organization, one in a sub-organization) and a trigger client through
the API, then writes `--runs` finished runs (and a run with 20 step records) straight into the SQLite file in one
bulk insert. The first Owner signs in through the one-time link `ihub init` printed, as a person would.

Each page is then requested `--requests` times, one at a time on one keep-alive connection from 127.0.0.1, after
a few unmeasured warm-up requests; the time from sending the request to the last byte of the answer is the
page's server time (loopback adds next to nothing). Printed per page: p50 and p99 in milliseconds, and the p50 as
a ratio against GET /healthz (the bare endpoint) measured in the same run. The target is under 100 ms per page.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from webhook_ingest import create_trigger, free_port, start_server, wait_ready

TARGET_MS = 100.0
STATUSES = ("succeeded",) * 6 + ("failed",) * 3 + ("cancelled",)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
DB_TIME = "%Y-%m-%d %H:%M:%S.%f"


def api_auth(http: httpx.Client, creds: dict[str, str]) -> dict[str, str]:
    import hashlib

    nonce = str(uuid.uuid4())
    digest = hashlib.sha256((creds["secret"] + nonce).encode()).hexdigest()
    response = http.post("/api/v1/token", json={"userId": creds["userId"], "nonce": nonce, "hash": digest})
    return {"Authorization": response.raise_for_status().json()["tokens"][0]["token"]}


def sub_org_project(http: httpx.Client, auth: dict[str, str]) -> tuple[int, int, int]:
    """A sub-organization with a project of one manual flow: (org id, project id, flow id)."""
    org = http.post("/api/v1/org", json={"name": "Branch", "parentId": "1"}, headers=auth).raise_for_status()
    org_id = int(org.json()["organizations"][0]["id"])
    flow = {"key": "by-hand", "trigger": "manual", "steps": [{"id": "reply", "type": "respond", "status": 200}]}
    body = {"name": "branch", "description": "", "definition": {"connections": [], "flows": [flow]}}
    template = http.post(f"/api/v1/template/org/{org_id}", json=body, headers=auth).raise_for_status()
    body = {"name": "branch", "templateId": template.json()["templates"][0]["id"]}
    project = http.post(f"/api/v1/project/org/{org_id}", json=body, headers=auth).raise_for_status().json()
    return org_id, int(project["projects"][0]["id"]), int(project["projects"][0]["flows"][0]["id"])


def bulk_runs(db_path: Path, targets: list[tuple[int, int]], count: int) -> tuple[int, datetime]:
    """`count` finished runs spread over the targets' (project, flow), one a minute back from now; returns the
    id of a run given 20 step records, and the time of the oldest run."""
    now = datetime.now(UTC).replace(tzinfo=None)
    oldest = now - timedelta(minutes=count)
    trigger = json.dumps({"body": {"issueKey": "SERVICENOW-1", "summary": "bench"}, "contentType": "application/json"})
    result = json.dumps({"status": 200, "body": {"ok": True}, "headers": {}})

    def rows() -> Any:
        for index in range(count):
            project_id, flow_id = targets[index % len(targets)]
            created = oldest + timedelta(minutes=index)
            status = STATUSES[index % len(STATUSES)]
            yield (
                str(uuid.uuid4()),
                project_id,
                flow_id,
                1,
                status,
                "manual",
                trigger,
                result if status == "succeeded" else None,
                "step failed" if status == "failed" else None,
                1,
                created.strftime(DB_TIME),
                (created + timedelta(seconds=1)).strftime(DB_TIME),
                created.strftime(DB_TIME),
                0,
            )

    with sqlite3.connect(db_path, timeout=30) as db:
        db.executemany(
            "INSERT INTO runs (uid, project_id, flow_id, flow_version, status, trigger_type, trigger, result, error,"
            " attempt, started_at, finished_at, created_at, cancel_requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows(),
        )
        run_id = int(db.execute("SELECT max(id) FROM runs").fetchone()[0])
        stamp = now.strftime(DB_TIME)
        request = json.dumps({"method": "POST", "url": "https://jira.example/rest/api/3/issue", "headers": {}})
        db.executemany(
            "INSERT INTO run_steps (run_id, step_id, path, type, attempt, status, started_at, finished_at, request,"
            " response, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (run_id, f"s{i}", f"s{i}", "http", 1, "succeeded", stamp, stamp, request, '{"status": 201}', None)
                for i in range(20)
            ],
        )
        db.execute("ANALYZE")
    return run_id, oldest


def sign_in(http: httpx.Client, link: str) -> None:
    """Set the first Owner's password through the one-time link; the session cookie stays in `http`."""
    path = httpx.URL(link).path
    page = http.get(path).raise_for_status()
    found = CSRF.search(page.text)
    if not found:
        raise SystemExit("the password page has no CSRF field")
    password = "bench password " + uuid.uuid4().hex
    form = {"csrf": found.group(1), "password": password, "confirm": password}
    response = http.post(path, data=form)
    if response.status_code != 303:
        raise SystemExit(f"setting the password failed: {response.status_code} {response.text[:500]}")


def measure(http: httpx.Client, path: str, requests: int, warmup: int = 5) -> dict[str, Any]:
    for _ in range(warmup):
        http.get(path).raise_for_status()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.text[:500]}")
    times.sort()
    return {
        "path": path,
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
        "bytes": len(response.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="runs written into the database (default 100000)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page (default 200)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server, creds = start_server(data_dir, port, worker=False)
        try:
            wait_ready(url, server)
            with httpx.Client(base_url=url, timeout=30) as http:
                trigger = create_trigger(url, creds)
                flow_id = int(trigger["sub"])
                auth = api_auth(http, creds)
                projects = http.get("/api/v1/project/org/1", headers=auth).raise_for_status().json()["projects"]
                project = next(p for p in projects if any(int(f["id"]) == flow_id for f in p["flows"]))
                project_id, template_id = int(project["id"]), int(project["templateId"])
                sub_org, sub_project, sub_flow = sub_org_project(http, auth)
                started = time.perf_counter()
                run_id, oldest = bulk_runs(
                    data_dir / "ihub.db", [(project_id, flow_id), (sub_project, sub_flow)], args.runs
                )
                loaded_s = time.perf_counter() - started
                sign_in(http, creds["signinUrl"])
                middle = run_id - args.runs // 2
                since = (oldest + timedelta(minutes=args.runs // 3)).strftime("%Y-%m-%dT%H:%M")
                until = (oldest + timedelta(minutes=args.runs // 3 + 600)).strftime("%Y-%m-%dT%H:%M")
                runs_of = f"/console/project/{project_id}/runs"
                pages = {
                    "bare /healthz": "/healthz",
                    "project runs": f"{runs_of}",
                    "project runs, status=failed": f"{runs_of}?status=failed",
                    "project runs, flow + status": f"{runs_of}?flow={flow_id}&status=cancelled",
                    "project runs, time range": f"{runs_of}?since={since}&until={until}",
                    "project runs, deep page": f"{runs_of}?before={middle}",
                    "org runs (subtree)": "/console/org/1/runs",
                    "org runs, status=failed": "/console/org/1/runs?status=failed",
                    "org runs, time range": f"/console/org/1/runs?since={since}&until={until}",
                    "org runs, deep page": f"/console/org/1/runs?before={middle}",
                    "sub-org runs": f"/console/org/{sub_org}/runs",
                    "run detail (20 steps)": f"/console/run/{run_id}",
                    "trigger page": f"/console/flow/{flow_id}/trigger",
                    "projects": "/console/org/1/projects",
                    "project": f"/console/project/{project_id}",
                    "project setup": f"/console/project/{project_id}/setup",
                    "templates": "/console/org/1/templates",
                    "template": f"/console/template/{template_id}",
                    "template edit": f"/console/template/{template_id}/edit",
                    "users": "/console/org/1/users",
                    "organizations": "/console/org/1/orgs",
                    "account": "/console/account",
                    "system": "/console/system",
                }
                results = {name: measure(http, path, args.requests) for name, path in pages.items()}
        finally:
            server.terminate()
            server.wait(timeout=15)

    bare = results["bare /healthz"]["p50_ms"]
    for result in results.values():
        result["ratio_p50"] = round(result["p50_ms"] / bare, 1) if bare else None
        result["under_target"] = result["p99_ms"] < TARGET_MS
    summary = {"runs": args.runs, "load_seconds": round(loaded_s, 1), "requests_per_page": args.requests}
    if args.json:
        print(json.dumps({**summary, "pages": results}, indent=2))
        return
    print(f"{args.runs} runs loaded in {loaded_s:.1f} s; {args.requests} requests per page, one at a time")
    print(f"{'page':<32} {'p50 ms':>8} {'p99 ms':>8} {'x bare':>7}  target")
    for name, result in results.items():
        mark = "ok" if result["under_target"] else f"OVER {TARGET_MS:.0f} ms"
        print(f"{name:<32} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} {result['ratio_p50']:>7.1f}  {mark}")
    if not all(result["under_target"] for result in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
