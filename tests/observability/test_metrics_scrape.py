"""GET /metrics after known activity: the counters move by exactly what happened, labels are route templates
(never raw ids), and without the right bearer token nothing is served."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from observability_support import access_token, make_project, run_to_end
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer

from ihub.app import create_app
from ihub.config import Settings

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "scrape-" + "s" * 24


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_token": METRICS_TOKEN})


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, samples(response.text)


async def test_counters_move_by_what_happened(
    client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/ok").respond_with_json({"ok": True})
    httpserver.expect_request("/broken").respond_with_data("down", status=500)
    flows = await make_project(client, auth, httpserver.url_for("").rstrip("/"))
    _, before = await scrape(client)

    fine_run, fine_status = await run_to_end(client, auth, flows["fine"])
    _, broken_status = await run_to_end(client, auth, flows["broken"])
    assert (fine_status, broken_status) == ("succeeded", "failed")
    token = await access_token(client, auth, flows["hook"])
    accepted = await client.post(
        "/prod/incoming/webhook/jwt", json={"a": 1}, headers={"Authorization": f"Bearer {token}"}
    )
    assert accepted.status_code == 202, accepted.text
    refused = await client.post("/prod/incoming/webhook/jwt", json={}, headers={"Authorization": "Bearer forged"})
    assert refused.status_code == 401
    bad_grant = await client.post(
        "/prod/incoming/token", json={"grant_type": "urn:ihub:jwt:bearer", "assertion": "x.y.z"}
    )
    assert bad_grant.status_code == 400
    assert (await client.get("/no/such/path")).status_code == 404

    text, after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ihub_runs_started_total", flow="fine") == 1
    assert delta("ihub_runs_started_total", flow="broken") == 1
    assert delta("ihub_runs_finished_total", flow="fine", status="succeeded") == 1
    assert delta("ihub_runs_finished_total", flow="broken", status="failed") == 1
    assert delta("ihub_runs_finished_total", flow="broken", status="succeeded") == 0
    # fine: http + respond; broken: http; the webhook's run may or may not have executed yet.
    assert delta("ihub_step_duration_seconds_count", type="http") == 2
    assert delta("ihub_step_duration_seconds_count", type="respond") >= 1
    assert delta("ihub_incoming_requests_total", endpoint="token", outcome="accepted", reason="issued") == 1
    assert delta("ihub_incoming_requests_total", endpoint="token", outcome="rejected", reason="invalid_grant") == 1
    assert delta("ihub_incoming_requests_total", endpoint="webhook", outcome="accepted", reason="new") == 1
    assert delta("ihub_incoming_requests_total", endpoint="webhook", outcome="rejected", reason="invalid_token") == 1

    # Latency by route template: the run page's polls are under its template, never under the run's id.
    run_route = {"route": "/api/v1/run/{run_id}", "method": "GET", "status": "2xx"}
    assert delta("ihub_http_request_duration_seconds_count", **run_route) >= 2
    assert f"/api/v1/run/{fine_run}" not in text
    assert delta("ihub_http_request_duration_seconds_count", route="_unmatched", method="GET", status="4xx") == 1
    webhook_route = {"route": "/{env}/incoming/webhook/jwt", "method": "POST"}
    assert delta("ihub_http_request_duration_seconds_count", **webhook_route, status="2xx") == 1
    assert delta("ihub_http_request_duration_seconds_count", **webhook_route, status="4xx") == 1
    # Scrape-time gauges: read from the database, which answered.
    assert value(after, "ihub_database_up") == 1
    assert value(after, "ihub_runs_lease_expired") == 0
    assert ("ihub_runs_queued_oldest_age_seconds", frozenset()) in after


async def test_queue_gauges_count_due_runs(client: httpx.AsyncClient, app: Any, auth: dict[str, str]) -> None:
    """Runs inserted as queued and due (no executor picks them in time: their flow is gone) are the queue."""
    from datetime import timedelta

    from sqlalchemy import update

    from ihub.db.base import utcnow
    from ihub.runs.models import Run

    flows = await make_project(client, auth, "http://127.0.0.1:9")
    await app.state.context.executor.stop()  # nothing executes from here on; the app's shutdown stops it again
    app.state.context.executor = None
    ids = []
    for _ in range(2):
        response = await client.post(f"/api/v1/flow/{flows['fine']}/run", json={}, headers=auth)
        ids.append(int(response.json()["runId"]))
    async with app.state.context.sessions() as session:
        await session.execute(
            update(Run).where(Run.id == ids[0]).values(next_attempt_at=utcnow() - timedelta(seconds=120))
        )
        await session.execute(update(Run).where(Run.id == ids[1]).values(next_attempt_at=utcnow() + timedelta(hours=1)))
        await session.commit()
    _, found = await scrape(client)
    assert value(found, "ihub_runs_queued", due="now") == 1
    assert value(found, "ihub_runs_queued", due="later") == 1
    assert value(found, "ihub_runs_queued_oldest_age_seconds") >= 120


async def test_client_credentials_token_fetches_are_counted(
    client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    """A token endpoint on 127.0.0.1 that issues one token, then refuses to: refreshed, then refused."""
    answers = iter([({"access_token": "tok-1", "expires_in": 3600}, 200), ({"error": "invalid_client"}, 401)])

    def token(request: Any) -> Any:
        from werkzeug.wrappers import Response

        body, status = next(answers)
        return Response(json.dumps(body), status=status, content_type="application/json")

    httpserver.expect_request("/token", method="POST").respond_with_handler(token)
    api_answers = iter([200, 401])

    def api(request: Any) -> Any:
        from werkzeug.wrappers import Response

        return Response("{}", status=next(api_answers), content_type="application/json")

    httpserver.expect_request("/api").respond_with_handler(api)
    step = {"id": "call", "type": "http", "connection": "api", "method": "GET", "path": "/api"}
    flow = {"key": "cc", "trigger": "manual", "steps": [step]}
    definition = {"connections": [{"id": "api", "type": "http", "name": "API"}], "flows": [flow]}
    body = {"name": f"t-{uuid.uuid4().hex[:8]}", "description": "", "definition": definition}
    template = (await client.post("/api/v1/template/org/1", json=body, headers=auth)).json()["templates"][0]["id"]
    body = {"name": f"p-{uuid.uuid4().hex[:8]}", "templateId": template}
    project = (await client.post("/api/v1/project/org/1", json=body, headers=auth)).json()["projects"][0]
    fields = {"authType": "oauth2_client_credentials", "clientId": "cid", "clientSecret": "cs-" + uuid.uuid4().hex}
    details = {"type": "http", "baseUrl": httpserver.url_for("/"), "tokenUrl": httpserver.url_for("/token"), **fields}
    response = await client.put(
        f"/api/v1/project/{project['id']}", json={"connections": [{"id": "api", "details": details}]}, headers=auth
    )
    assert response.status_code == 200, response.text
    _, before = await scrape(client)

    _, status = await run_to_end(client, auth, project["flows"][0]["id"])
    assert status == "succeeded"
    # The target answers 401: the step fetches a new token once, and the token endpoint refuses it.
    _, status = await run_to_end(client, auth, project["flows"][0]["id"])
    assert status == "failed"
    _, after = await scrape(client)

    def delta(outcome: str) -> float:
        labels = {"grant": "client_credentials", "outcome": outcome}
        name = "ihub_connection_refreshes_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert (delta("refreshed"), delta("refused")) == (1, 1)


REFUSED_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-" + "w" * 24},
    {"Authorization": METRICS_TOKEN},
    {"Authorization": f"Basic {METRICS_TOKEN}"},
    {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
]


async def test_without_the_token_nothing_is_served(client: httpx.AsyncClient) -> None:
    for headers in REFUSED_HEADERS:  # one app for all: each refusal is a request, not a set-up
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "ihub_" not in response.text and "python_" not in response.text
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).status_code == 200


@pytest.fixture
async def untokened(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update={"metrics_token": ""}), run_worker=False)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_no_token_configured_means_no_metrics_even_from_loopback(untokened: httpx.AsyncClient) -> None:
    """A reverse proxy on the same machine makes internet clients look like loopback: no token, no /metrics."""
    for headers in ({}, {"Authorization": f"Bearer {METRICS_TOKEN}"}, {"Authorization": "Bearer "}):
        response = await untokened.get("/metrics", headers=headers)
        assert response.status_code == 404
        assert "ihub_" not in response.text


async def test_probes_and_metrics_stay_out_of_the_openapi_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/metrics", "/readyz", "/healthz"} & set(paths)


def test_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(metrics_token="short", _env_file=None)  # type: ignore[call-arg]


def test_flow_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from ihub.observability import metrics

    monkeypatch.setattr(metrics, "_flows", {})  # the process's own labels stay as they are
    labels = {metrics.flow_label(f"tenant-flow-{uuid.uuid4().hex}") for _ in range(metrics.MAX_FLOW_LABELS + 50)}
    assert len(labels) <= metrics.MAX_FLOW_LABELS + 1
    assert metrics.FLOW_OVERFLOW in labels


async def test_raw_paths_and_invented_methods_add_no_label_values(client: httpx.AsyncClient) -> None:
    """A stranger's requests (random paths, ids, a tenant's env segment, methods nobody declares) are counted
    under route templates, `_unmatched` and `other`: the series do not grow with what they send."""
    marker = uuid.uuid4().hex
    _, before = await scrape(client)
    for i in range(30):
        for method, path in [
            ("GET", f"/{marker}/{i}"),
            ("GET", f"/api/v1/event-endpoint/{marker}{i}"),
            ("POST", f"/{marker}{i}/incoming/webhook/jwt"),
            (f"X{marker[:8]}{i}", "/api/v1/org/1"),
        ]:
            await client.request(method, path)
    text, found = await scrape(client)
    assert marker not in text and marker[:8] not in text
    name = "ihub_http_request_duration_seconds_count"
    new_series = {labels for key, labels in found if key == name} - {labels for key, labels in before if key == name}
    assert {dict(labels)["method"] for labels in new_series} <= {"GET", "POST", "other"}
    # 120 distinct paths and methods: one new series per (template or _unmatched, method, status class) of the
    # four kinds of request, and the first scrape's own.
    assert len(new_series) <= 5, new_series


async def test_console_routes_are_labelled_with_their_full_template(client: httpx.AsyncClient) -> None:
    """Console pages are routers included under `/console`: their label carries that prefix (a route's own path
    alone would put the console's run page under `/run/{run_id}`), and still no id."""
    _, before = await scrape(client)
    assert (await client.get("/console/signin")).status_code == 200
    page = await client.get("/console/run/424242")  # not signed in: sent to the sign-in page
    assert 300 <= page.status_code < 400
    text, after = await scrape(client)

    def delta(route: str, status: str) -> float:
        labels = {"route": route, "method": "GET", "status": status}
        return value(after, "ihub_http_request_duration_seconds_count", **labels) - value(
            before, "ihub_http_request_duration_seconds_count", **labels
        )

    assert delta("/console/signin", "2xx") == 1
    assert delta("/console/run/{run_id}", "3xx") == 1
    assert 'route="/run/{run_id}"' not in text and 'route="/signin"' not in text and "424242" not in text
