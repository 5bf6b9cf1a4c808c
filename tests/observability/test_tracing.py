"""OpenTelemetry tracing of runs, with the SDK's in-memory exporter: one trace per run (its uid, or the trigger's
traceparent), one span per step under the run's span; off (and never imported) unless OTEL_* asks for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from observability_support import access_token, make_project, run_to_end
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from ihub.observability import tracing
from ihub.runs.models import Run

pytestmark = pytest.mark.anyio

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=tracing.id_generator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.stop()
    provider.shutdown()


def of_run(exporter: InMemorySpanExporter, run_id: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    finished = exporter.get_finished_spans()
    [run] = [s for s in finished if s.name == "ihub.run" and (s.attributes or {}).get("ihub.run.id") == run_id]
    assert run.context is not None
    trace_id = run.context.trace_id
    steps = [s for s in finished if s.context is not None and s.context.trace_id == trace_id and s is not run]
    return run, steps


async def test_one_trace_per_run_with_a_span_per_step(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], spans: InMemorySpanExporter
) -> None:
    flows = await make_project(client, auth, "http://127.0.0.1:9")
    run_id, status = await run_to_end(client, auth, flows["pair"])
    assert status == "succeeded"
    async with app.state.context.sessions() as session:
        uid = await session.scalar(select(Run.uid).where(Run.id == int(run_id)))

    run, steps = of_run(spans, run_id)
    assert run.context is not None and run.context.trace_id == uuid.UUID(uid).int  # the run's own trace
    assert run.parent is None
    assert (run.attributes or {})["ihub.flow.key"] == "pair"
    assert (run.attributes or {})["ihub.status"] == "succeeded"
    assert sorted((s.attributes or {})["ihub.step.id"] for s in steps) == ["note", "out"]
    for step in steps:
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        attributes = dict(step.attributes or {})
        assert attributes["ihub.status"] == "succeeded"
        # Ids, type and status only: nothing the step sent or received.
        assert set(attributes) == {"ihub.step.id", "ihub.step.path", "ihub.step.type", "ihub.status"}


async def test_a_webhook_traceparent_is_continued(
    client: httpx.AsyncClient, auth: dict[str, str], spans: InMemorySpanExporter
) -> None:
    flows = await make_project(client, auth, "http://127.0.0.1:9")
    token = await access_token(client, auth, flows["hook"])
    headers = {"Authorization": f"Bearer {token}", "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    response = await client.post("/prod/incoming/webhook/jwt", json={"a": 1}, headers=headers)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    for _ in range(600):
        if any((s.attributes or {}).get("ihub.run.id") == run_id for s in spans.get_finished_spans()):
            break
        await asyncio.sleep(0.05)
    run, steps = of_run(spans, run_id)
    assert run.context is not None and run.context.trace_id == int(PARENT_TRACE, 16)
    assert run.parent is not None and run.parent.span_id == int(PARENT_SPAN, 16)
    assert [(s.attributes or {})["ihub.step.type"] for s in steps] == ["respond"]


async def test_a_failed_step_marks_its_span_and_the_run_span(
    client: httpx.AsyncClient, auth: dict[str, str], spans: InMemorySpanExporter
) -> None:
    from opentelemetry.trace import StatusCode

    flows = await make_project(client, auth, "http://127.0.0.1:9")  # nothing listens there: the call fails
    run_id, status = await run_to_end(client, auth, flows["broken"])
    assert status == "failed"
    run, [step] = of_run(spans, run_id)
    assert run.status.status_code == StatusCode.ERROR and step.status.status_code == StatusCode.ERROR
    assert (step.attributes or {})["ihub.status"] == "failed"
    assert not run.events and not step.events  # no exception text (it may quote what a target answered)


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert not tracing.requested({})
    assert not tracing.requested(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert not tracing.requested({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"})
    # Not asked: nothing configured, and the hot path gets the shared no-op.
    assert not tracing.configure_from_environment({})
    assert not tracing.enabled()
    assert tracing.step_span("a", "a", "map") is tracing.step_span("b", "b", "http")


def test_the_environment_turns_it_on() -> None:
    try:
        assert tracing.configure_from_environment({"OTEL_TRACES_EXPORTER": "console"})
        assert tracing.enabled()
        assert tracing.step_span("a", "a", "map") is not tracing.step_span("a", "a", "map")
    finally:
        tracing.stop()
    assert not tracing.configure_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})  # not supported: stays off
    assert not tracing.enabled()
