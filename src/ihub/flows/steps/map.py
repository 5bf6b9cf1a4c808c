"""`map`: sets run variables (`vars.<name>`) from rendered values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from ihub.flows.steps.base import RunEffects, StepContext, StepModel, StepType
from ihub.flows.steps.fields import STEP_ID_PATTERN, TemplatedObject, problem


class MapStep(StepModel):
    """Sets `vars.<name>` for every entry of `set` (values may be templates, any JSON)."""

    type: Literal["map"]
    assignments: TemplatedObject = Field(alias="set", description="{variable name: value or template}.")

    @field_validator("assignments")
    @classmethod
    def _names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:
            if not STEP_ID_PATTERN.match(name):
                raise problem("variable names must match [A-Za-z_][A-Za-z0-9_]*", f".{name}")
        return values


async def run(step: MapStep, ctx: StepContext) -> dict[str, Any]:
    return {"output": ctx.render(step.assignments)}


def set_vars(state: Mapping[str, Any], effects: RunEffects) -> None:
    effects.vars.update(state.get("output") or {})


STEP = StepType(MapStep, run, "Sets run variables.", on_success=set_vars)
