"""`respond`: sets the run's result `{status, body[, headers]}`, what a sync caller receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from ihub.flows.reply import MAX_STATUS, MIN_STATUS, InvalidReply, check_header_name, check_reply
from ihub.flows.steps.base import RunEffects, StepContext, StepError, StepModel, StepType
from ihub.flows.steps.fields import TemplatedValue, check_object, check_templates, integer_checker, problem
from ihub.flows.steps.values import as_text

_status = integer_checker(MIN_STATUS, MAX_STATUS)


def _check_status(value: Any) -> Any:
    if isinstance(value, str):
        return check_templates(value)
    return _status(value)


def _check_headers(value: Any) -> Any:
    headers = check_templates(check_object(value))
    for name in headers:
        if "{{" in name:
            continue  # a templated name is checked by the engine once rendered
        try:
            check_header_name(name)
        except InvalidReply as error:
            raise problem(str(error)) from None
    return headers


class RespondStep(StepModel):
    """Sets the run's result; the flow continues and the last `respond` wins."""

    always_dumped: ClassVar[frozenset[str]] = frozenset({"body"})

    type: Literal["respond"]
    status: Annotated[int | str, BeforeValidator(_check_status)] = Field(
        200,
        description=f"HTTP status ({MIN_STATUS}-{MAX_STATUS}) or a template giving it.",
        json_schema_extra={"minimum": MIN_STATUS, "maximum": MAX_STATUS},
    )
    headers: Annotated[dict[str, Any] | None, BeforeValidator(_check_headers)] = Field(
        None, description="Response headers (names and values may be templates)."
    )
    body: TemplatedValue = Field(None, description="Any JSON; strings may be templates.")


async def run(step: RespondStep, ctx: StepContext) -> dict[str, Any]:
    status = ctx.render(step.status)
    try:
        status = int(status)
    except (TypeError, ValueError, OverflowError):
        raise StepError("expression", f"status {str(status)[:50]!r} is not an HTTP status code") from None
    output: dict[str, Any] = {"status": status, "body": ctx.render(step.body)}
    if step.headers is not None:
        headers = ctx.render(step.headers)
        if not isinstance(headers, dict):
            raise StepError("respond", "headers must be an object of names to values")
        output["headers"] = {str(k): as_text(v) for k, v in headers.items()}
    try:
        check_reply(output)
    except InvalidReply as error:
        raise StepError("respond", f"invalid reply: {error}") from None
    return {"output": output}


def set_result(state: Mapping[str, Any], effects: RunEffects) -> None:
    effects.set_result(state.get("output"))


STEP = StepType(RespondStep, run, "Sets the run's result (a sync caller's answer).", on_success=set_result)
