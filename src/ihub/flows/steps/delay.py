"""`delay`: waits. Short waits happen inline; longer ones release the run until it is due again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ihub.db.base import utcnow
from ihub.flows.steps.base import RetryLater, StepContext, StepError, StepModel, StepType
from ihub.flows.steps.fields import check_templates, number_checker

MAX_DELAY_SECONDS = 7 * 24 * 3600
# Waits up to this long keep the worker; longer ones put the run back in the queue.
INLINE_DELAY_MAX = 1.0

_seconds = number_checker(0, MAX_DELAY_SECONDS)


def _check_seconds(value: Any) -> Any:
    if isinstance(value, str):
        return check_templates(value)
    return _seconds(value)


class DelayStep(StepModel):
    """Waits `seconds`. Over 1 s the run is released and rescheduled: no worker is held."""

    type: Literal["delay"]
    seconds: Annotated[float | str, BeforeValidator(_check_seconds)] = Field(
        description=f"Seconds (0 to {MAX_DELAY_SECONDS}), or a template giving them.",
        json_schema_extra={"minimum": 0, "maximum": MAX_DELAY_SECONDS},
    )


async def run(step: DelayStep, ctx: StepContext) -> dict[str, Any]:
    record = ctx.record
    if record.status == "waiting":
        until = datetime.fromisoformat((record.state or {})["until"])
        if utcnow() < until:
            raise RetryLater(until)
        return {"output": {"seconds": (record.state or {}).get("seconds")}}
    rendered = ctx.render(step.seconds)
    try:
        seconds = float(rendered)
    except (TypeError, ValueError, OverflowError):
        raise StepError("expression", f"delay seconds {str(rendered)[:50]!r} is not a number") from None
    # The same bound as a literal `seconds` in the definition (NaN fails the comparison too).
    if not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise StepError("expression", f"delay seconds {seconds:g} must be between 0 and {MAX_DELAY_SECONDS}")
    if seconds <= INLINE_DELAY_MAX:
        await ctx.sleep(max(0.0, seconds))
        return {"output": {"seconds": seconds}}
    until = utcnow() + timedelta(seconds=seconds)
    record.status = "waiting"
    record.state = {"until": until.isoformat(), "seconds": seconds}
    await ctx.write_record()
    raise RetryLater(until)


STEP = StepType(DelayStep, run, "Waits, without holding a worker.", resumable_wait=True, waits=True)
