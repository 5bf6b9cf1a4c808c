"""GET /metrics (Prometheus text, behind IHUB_METRICS_TOKEN) and GET /readyz. Neither is in the OpenAPI schema.

/metrics is refused unless IHUB_METRICS_TOKEN is set: a 404 like any unknown path, so an internet-facing hub
shows nothing by default. Loopback-only was rejected as the default because a reverse proxy on the same machine
makes every internet request arrive from 127.0.0.1. With a token set, a request without it (or with another)
gets 401 and no metric. docs/operations.md has the reasons in full.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ihub.common.context import Context
from ihub.common.errors import ApiError
from ihub.observability import metrics
from ihub.observability.gauges import run_gauges
from ihub.observability.readiness import Readiness, report

router = APIRouter(include_in_schema=False)

BEARER_CHALLENGE = 'Bearer realm="ihub-metrics"'


def _authorized(request: Request, expected: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: the comparison must not tell a guesser how many leading characters were right.
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


@router.get("/metrics")
async def scrape(request: Request, context: Context) -> Response:
    expected = context.settings.metrics_token
    if not expected or not context.settings.metrics_enabled:
        raise ApiError(404, f"no route GET {request.url.path}", "not_found")
    if not _authorized(request, expected):
        raise ApiError(
            401,
            "send Authorization: Bearer <IHUB_METRICS_TOKEN>",
            "unauthorized",
            {"WWW-Authenticate": BEARER_CHALLENGE},
        )
    families = await run_gauges(context.readers)
    return Response(metrics.exposition(families), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def readiness(request: Request) -> Readiness:
    state = request.app.state
    found = getattr(state, "readiness", None)
    if not isinstance(found, Readiness):
        found = state.readiness = Readiness()
    return found


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(request: Request, context: Context) -> JSONResponse:
    checks = await readiness(request).checks(context, runs_here=bool(request.app.state.run_worker))
    status, body = report(checks)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
