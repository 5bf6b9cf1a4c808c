"""`if`: runs the `then` or the `else` steps, in the flow's scope (later steps see what they did)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from ihub.flows.steps.base import StepContext, StepModel, Steps, StepType
from ihub.flows.steps.fields import Expression


class IfStep(StepModel):
    """Runs one branch. Output `{branch, condition}`."""

    child_fields: ClassVar[tuple[str, ...]] = ("then", "else")

    type: Literal["if"]
    condition: Annotated[Expression, Field(description="Jinja expression, e.g. `trigger.body.priority == 1`.")]
    then: Steps = Field(default_factory=list, description="Steps run when the condition is true.")
    otherwise: Steps = Field(default_factory=list, alias="else", description="Steps run when it is false.")


async def run(step: IfStep, ctx: StepContext) -> dict[str, Any]:
    condition = bool(ctx.evaluate(step.condition))
    branch = "then" if condition else "else"
    await ctx.run_steps(step.then if condition else step.otherwise, f".{branch}.")
    return {"output": {"branch": branch, "condition": condition}}


STEP = StepType(IfStep, run, "Runs one of two branches.")
