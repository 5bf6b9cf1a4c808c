"""`fail`: fails the step (and the run, unless `on_error: continue`) with a rendered message."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ihub.flows.steps.base import StepContext, StepError, StepModel, StepType
from ihub.flows.steps.fields import TemplatedText


class FailStep(StepModel):
    """Fails with `message`."""

    type: Literal["fail"]
    message: Annotated[str, TemplatedText(2000)] = Field("flow failed", description="Template of the error.")


async def run(step: FailStep, ctx: StepContext) -> dict[str, Any]:
    raise StepError("fail", str(ctx.render(step.message)))


STEP = StepType(FailStep, run, "Fails the run with a message.")
