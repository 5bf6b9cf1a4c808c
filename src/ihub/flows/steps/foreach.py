"""`foreach`: runs its steps once per item of a list (an object gives `{key, value}` pairs)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from ihub.flows.steps.base import StepContext, StepError, StepModel, Steps, StepType
from ihub.flows.steps.fields import Expression, Identifier, Integer

# Every iteration's steps are recorded; a larger list belongs in several runs (or a batch API call).
MAX_FOREACH_ITEMS = 1000


class ForeachStep(StepModel):
    """Runs `steps` for every item; `loop.index` and `loop.length` are set. Output: per item, its steps' states."""

    child_fields: ClassVar[tuple[str, ...]] = ("steps",)

    type: Literal["foreach"]
    items: Annotated[Expression, Field(description="Expression giving a list (at most 1000 items) or an object.")]
    as_: Identifier = Field("item", alias="as", description="Name of the current item in the steps' scope.")
    concurrency: Annotated[int, Integer(1, 50)] = Field(1, description="Iterations running at once.")
    steps: Steps = Field(description="Steps run for every item.")


async def run(step: ForeachStep, ctx: StepContext) -> dict[str, Any]:
    items = ctx.evaluate(step.items)
    if isinstance(items, dict):
        items = [{"key": k, "value": v} for k, v in items.items()]
    if not isinstance(items, list):
        raise StepError("expression", f"items must be a list, got {type(items).__name__}")
    if len(items) > MAX_FOREACH_ITEMS:
        raise StepError("expression", f"{len(items)} items: foreach takes at most {MAX_FOREACH_ITEMS}")
    iterations = [
        (f"[{index}].", {step.as_: item, "loop": {"index": index, "length": len(items)}})
        for index, item in enumerate(items)
    ]
    states = await ctx.run_each(step.steps, iterations, step.concurrency)
    return {"output": [{child.id: state.get(child.id) for child in step.steps} for state in states]}


STEP = StepType(ForeachStep, run, "Runs steps for every item of a list.")
