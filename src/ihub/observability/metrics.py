"""Prometheus metrics: what the hot paths count, and the text `/metrics` serves.

Every metric is named `ihub_*` and listed in docs/operations.md ("Metrics, health and tracing"). Rules:

- Hot paths (the webhook, the engine's steps, every HTTP request) only bump in-memory values: no database work,
  no locks beyond prometheus-client's own. Label children are bound once and kept in dicts, so a repeated
  observation is one dict lookup and one add.
- Label values come from bounded sets: a route *template* (`/api/v1/run/{run_id}`, never the raw path), a step
  type (the registry's), an error code of this codebase, a run status. Flow keys are chosen by tenants, so at most
  `MAX_FLOW_LABELS` distinct keys get a series per process; later keys are counted under `FLOW_OVERFLOW`.
- Multi-process: `ihub serve` runs flows in worker processes. `use_directory` switches prometheus-client to its
  multiprocess mode (one mmap file per process and metric type in the directory, summed at scrape time). `serve`
  wipes the directory at start (counters from an earlier server would otherwise be added) and the worker
  processes inherit it through PROMETHEUS_MULTIPROC_DIR. It must run before the first label child is created:
  a child binds its storage when made.
- `IHUB_METRICS_ENABLED=false` makes every recording function return at once (bench/: overhead with and without).

This module imports nothing of ihub but the leaf `ihub.common.route_template`: the engine, the incoming
endpoints and the OAuth refresher all record here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ihub.common.route_template import route_template

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Distinct flow keys with their own series, per process (each key costs a few series per status).
MAX_FLOW_LABELS = 200
FLOW_OVERFLOW = "_other"
UNMATCHED_ROUTE = "_unmatched"
# Methods a route can declare; anything else a client sends is one label value.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Rejection reasons of the incoming endpoints: their RFC 6749/6750 error codes (and the hub's own); any other
# code (none today) is counted as "other" so a new error path cannot add unbounded values.
INCOMING_REASONS = frozenset(
    {
        "invalid_request",
        "invalid_grant",
        "invalid_client",
        "unsupported_grant_type",
        "invalid_token",
        "slow_down",
        "not_found",
        "conflict",
        "payload_too_large",
        "request_timeout",
        "temporarily_unavailable",
        "internal_error",
    }
)

_state = {"enabled": True}
_directory: dict[str, Path] = {}

RUNS_STARTED = Counter(
    "ihub_runs_started",
    "Runs whose first execution began (claimed by a worker for the first time), by flow key.",
    ["flow"],
)
RUNS_FINISHED = Counter(
    "ihub_runs_finished",
    "Runs an execution ended in a final status (succeeded, failed, cancelled), by flow key.",
    ["flow", "status"],
)
STEP_DURATION = Histogram(
    "ihub_step_duration_seconds",
    "Time one execution of a step took, by step type (a composite's includes its children).",
    ["type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INCOMING_REQUESTS = Counter(
    "ihub_incoming_requests",
    "Requests to the incoming token endpoint and webhook, by outcome (accepted | rejected) and reason "
    "(the error code of a rejection; new or duplicate for an accepted webhook, issued for a token).",
    ["endpoint", "outcome", "reason"],
)
CONNECTION_REFRESHES = Counter(
    "ihub_connection_refreshes",
    "OAuth2 token refreshes of connections, by grant (authorization_code | client_credentials) and outcome.",
    ["grant", "outcome"],
)
HTTP_DURATION = Histogram(
    "ihub_http_request_duration_seconds",
    "HTTP request latency until the response ended, by matched route template, method and status class.",
    ["route", "method", "status"],
)


def enabled() -> bool:
    return _state["enabled"]


def set_enabled(flag: bool) -> None:
    _state["enabled"] = flag


def use_directory(path: Path) -> None:
    """Record into `path` in multiprocess mode (this process and, through the environment, its children)."""
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _directory["path"] = path


def reset_directory(path: Path) -> None:
    """Empty the directory before a server starts: its files are an earlier server's counts."""
    if path.is_dir():
        for item in path.glob("*.db"):
            item.unlink()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def adopt_inherited_directory() -> None:
    """In a worker process: record where the server that started it does (no-op outside `serve`)."""
    inherited = os.environ.get(MULTIPROC_ENV)
    if inherited and "path" not in _directory:
        use_directory(Path(inherited))


# -- label children, bound once ------------------------------------------------------------------------------

_flows: dict[str, str] = {}
_started: dict[str, Any] = {}
_finished: dict[tuple[str, str], Any] = {}
_steps: dict[str, Any] = {}
_incoming: dict[tuple[str, str, str], Any] = {}
_refreshes: dict[tuple[str, str], Any] = {}
_http: dict[tuple[str, str, str], Any] = {}


def flow_label(flow_key: str) -> str:
    label = _flows.get(flow_key)
    if label is None:
        label = flow_key if len(_flows) < MAX_FLOW_LABELS else FLOW_OVERFLOW
        if label != FLOW_OVERFLOW:
            _flows[flow_key] = label
    return label


def run_started(flow_key: str) -> None:
    if not _state["enabled"]:
        return
    flow = flow_label(flow_key)
    child = _started.get(flow)
    if child is None:
        child = _started[flow] = RUNS_STARTED.labels(flow)
    child.inc()


def run_finished(flow_key: str, status: str) -> None:
    if not _state["enabled"]:
        return
    key = (flow_label(flow_key), status)
    child = _finished.get(key)
    if child is None:
        child = _finished[key] = RUNS_FINISHED.labels(*key)
    child.inc()


def step_finished(step_type: str, seconds: float) -> None:
    if not _state["enabled"]:
        return
    child = _steps.get(step_type)
    if child is None:
        child = _steps[step_type] = STEP_DURATION.labels(step_type)
    child.observe(seconds)


def incoming(endpoint: str, outcome: str, reason: str) -> None:
    if not _state["enabled"]:
        return
    if outcome == "rejected" and reason not in INCOMING_REASONS:
        reason = "other"
    key = (endpoint, outcome, reason)
    child = _incoming.get(key)
    if child is None:
        child = _incoming[key] = INCOMING_REQUESTS.labels(*key)
    child.inc()


# ConnectionError_ kinds (ihub.flows.connections) as refresh outcomes: what an operator would act on.
REFRESH_FAILURES = {
    "needs_reconnect": "needs_reconnect",
    "auth": "refused",
    "connect": "unavailable",
    "timeout": "unavailable",
}


def refresh_failed(grant: str, kind: str) -> None:
    connection_refresh(grant, REFRESH_FAILURES.get(kind, "failed"))


def connection_refresh(grant: str, outcome: str) -> None:
    if not _state["enabled"]:
        return
    key = (grant, outcome)
    child = _refreshes.get(key)
    if child is None:
        child = _refreshes[key] = CONNECTION_REFRESHES.labels(*key)
    child.inc()


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    if not _state["enabled"]:
        return
    key = (route, method if method in KNOWN_METHODS else "other", f"{status // 100}xx")
    child = _http.get(key)
    if child is None:
        child = _http[key] = HTTP_DURATION.labels(*key)
    child.observe(seconds)


class HttpMetrics:
    """ASGI middleware: each HTTP request's latency under the template of the route that handled it.

    Starlette's router stores the matched route in `scope["route"]` (the same dict this middleware holds), so the
    template is read after the app ran, with the prefixes of the routers it was included through (`/console`):
    a route's own path alone would label console pages `/run/{run_id}`. A request no route matched is
    `UNMATCHED_ROUTE`, never its raw path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _state["enabled"]:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes becomes ServerErrorMiddleware's 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_template(scope) or UNMATCHED_ROUTE
            http_request(route, scope["method"], status, time.perf_counter() - started)


# -- scrape ----------------------------------------------------------------------------------------------------


class _Snapshot(Collector):
    """Metric families computed before the scrape (the database gauges), served once."""

    def __init__(self, families: Iterable[Any]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Any]:
        return self.families


def exposition(extra: Iterable[Any] = ()) -> bytes:
    """The Prometheus text of every process's counters (summed in multiprocess mode) and `extra` families."""
    directory = _directory.get("path")
    if directory is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        recorded = generate_latest(registry)
    else:
        recorded = generate_latest(REGISTRY)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(extra))
    return recorded + generate_latest(snapshot)
