"""Optional OpenTelemetry tracing of runs: one trace per run, one span per step execution.

Off unless both hold (checked once per process by `configure_from_environment`):
- the standard environment asks for traces: OTEL_TRACES_EXPORTER set to something other than `none`, or an OTLP
  endpoint (OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); and OTEL_SDK_DISABLED is not true;
- the SDK is installed (`pip install 'ihub[otel]'`: opentelemetry-sdk and the OTLP/HTTP exporter).
While off, `run_span` and `step_span` return a shared no-op context manager: no OpenTelemetry import, no
allocation, no context switch on a step's path.

Shape of a trace:
- The run's span (`ihub.run`) continues the trigger's W3C trace context when the trigger carried one (a webhook's
  `traceparent`/`tracestate`, kept in `run.trigger["headers"]`), so the caller's trace shows the run.
- Without one, the trace id *is* the run's uid (a UUID4, 128 random bits): every execution of the run (a retry,
  a resume after a reconnect, in another worker process) lands in the same trace without storing anything.
- Each step execution is a child span (`ihub.step <type>`), nested as the steps are (`foreach` items under their
  `foreach`). Attributes: run id, flow key, step id, path, type and final status, never a request or response
  body, header, connection value or error text (those may hold secrets a flow handles).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("ihub.tracing")

TRACER_NAME = "ihub"
_NOOP = contextlib.nullcontext(None)
_state: dict[str, Any] = {"tracer": None}
# The trace id a new root span takes: the run's uid (see RunIds).
_run_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("ihub_run_trace_id", default=None)


def requested(environ: Mapping[str, str]) -> bool:
    """Does the standard OpenTelemetry environment ask for traces?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    return _state["tracer"] is not None


def configure_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Set up tracing for this process if the environment asks for it and the SDK is there; True if on."""
    environ = os.environ if environ is None else environ
    if enabled() or not requested(environ):
        return enabled()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry-sdk is not installed: pip install 'ihub[otel]'")
        return False
    exporter = _exporter(environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp")
    if exporter is None:
        return False
    resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "ihub"})
    provider = TracerProvider(resource=resource, id_generator=_run_ids())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use_provider(provider)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported by ihub (otlp, console, none); tracing stays off", name)
        return None
    try:
        # Only in the `otel` extra, which the type check's environment may or may not have: looked up by name.
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        log.warning("the OTLP exporter is not installed: pip install 'ihub[otel]'; tracing stays off")
        return None
    return module.OTLPSpanExporter()


def use_provider(provider: Any) -> None:
    """Trace with `provider` (configure_from_environment's, or a test's with an in-memory exporter)."""
    _state["tracer"] = provider.get_tracer(TRACER_NAME)


def stop() -> None:
    _state["tracer"] = None


def _run_ids() -> Any:
    """An id generator whose root spans take the run's uid as their trace id (random outside a run)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            forced = _run_trace_id.get()
            return forced if forced else super().generate_trace_id()

    return RunIds()


def id_generator() -> Any:
    """For a test's TracerProvider: the same run-uid trace ids as configure_from_environment's."""
    return _run_ids()


def _trigger_context(trigger: Any) -> Any:
    """The W3C trace context the trigger carried (its stored headers), or None."""
    headers = trigger.get("headers") if isinstance(trigger, dict) else None
    if not isinstance(headers, dict) or not isinstance(headers.get("traceparent"), str):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {name: headers[name] for name in ("traceparent", "tracestate") if isinstance(headers.get(name), str)}
    return TraceContextTextMapPropagator().extract(carrier)


@contextlib.contextmanager
def _run_span(tracer: Any, run_id: int, run_uid: str, flow_key: str, attempt: int, trigger: Any) -> Iterator[Any]:
    parent = _trigger_context(trigger)
    try:
        forced = uuid.UUID(run_uid).int if parent is None else None
    except ValueError:
        forced = None
    # Set only while the run's span is made (its trace id is generated then); its steps inherit the trace id.
    token = _run_trace_id.set(forced)
    try:
        span = tracer.start_span(
            "ihub.run",
            context=parent,
            attributes={"ihub.run.id": str(run_id), "ihub.flow.key": flow_key, "ihub.run.attempt": attempt},
            record_exception=False,
            set_status_on_exception=False,
        )
    finally:
        _run_trace_id.reset(token)
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield span


def run_span(
    run_id: int, run_uid: str, flow_key: str, attempt: int, trigger: Any
) -> contextlib.AbstractContextManager[Any]:
    """The span of one execution of a run (the current span while its steps run); a no-op while tracing is off."""
    tracer = _state["tracer"]
    if tracer is None:
        return _NOOP
    return _run_span(tracer, run_id, run_uid, flow_key, attempt, trigger)


def step_span(step_id: str, path: str, step_type: str) -> contextlib.AbstractContextManager[Any]:
    """The span of one step execution, a child of the current (run or composite step) span; no-op while off."""
    tracer = _state["tracer"]
    if tracer is None:
        return _NOOP
    attributes = {"ihub.step.id": step_id, "ihub.step.path": path, "ihub.step.type": step_type}
    span: contextlib.AbstractContextManager[Any] = tracer.start_as_current_span(
        f"ihub.step {step_type}", attributes=attributes, record_exception=False, set_status_on_exception=False
    )
    return span


def finish(span: Any, status: str) -> None:
    """Record how a run or step ended on its span (an error status for `failed`); nothing while off."""
    if span is None:
        return
    span.set_attribute("ihub.status", status)
    if status == "failed":
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
