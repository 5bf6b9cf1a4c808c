"""Adding a step type is one model, one handler and one registry entry: a throwaway `echo` type validates,
nests inside the built-in composites, and runs through the real engine and executors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import Field

from ihub.common.errors import ApiError
from ihub.flows.definition import validate_flows
from ihub.flows.steps.base import REGISTERED, StepContext, StepModel, StepType
from ihub.flows.steps.fields import TemplatedValue
from ihub.flows.steps.registry import BUILTIN, register, unregister


class EchoStep(StepModel):
    """Answers with its rendered `value`."""

    type: Literal["echo"]
    value: TemplatedValue = Field(None, description="Any JSON; strings may be templates.")


async def echo(step: EchoStep, ctx: StepContext) -> dict[str, Any]:
    return {"output": ctx.render(step.value)}


ECHO = StepType(EchoStep, echo, "Echoes a value.")


@pytest.fixture
def echo_type() -> Iterator[StepType]:
    register(ECHO)
    try:
        yield ECHO
    finally:
        unregister("echo")


def echo_flow() -> dict[str, Any]:
    return {
        "key": "echo",
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "first", "type": "echo", "value": "{{ trigger.body.word }}"},
            {
                "id": "each",
                "type": "foreach",
                "items": "trigger.body.items",
                "steps": [
                    {
                        "id": "pick",
                        "type": "if",
                        "condition": "item > 1",
                        "then": [{"id": "big", "type": "echo", "value": {"n": "{{ item }}"}}],
                    }
                ],
            },
            {"id": "reply", "type": "respond", "body": {"first": "{{ steps.first.output }}"}},
        ],
    }


def test_every_builtin_type_is_registered_once() -> None:
    assert [kind.name for kind in BUILTIN] == ["http", "map", "if", "foreach", "delay", "respond", "fail"]
    assert {kind.name for kind in BUILTIN} <= set(REGISTERED)


def test_a_registered_type_validates_also_nested_and_goes_away(echo_type: StepType) -> None:
    [flow] = validate_flows([echo_flow()], {})
    assert flow["steps"][0] == {
        "id": "first",
        "type": "echo",
        "on_error": "fail",
        "retry": flow["steps"][2]["retry"],
        "value": "{{ trigger.body.word }}",
    }
    bad = echo_flow()
    bad["steps"][1]["steps"][0]["then"][0]["colour"] = "red"
    with pytest.raises(ApiError) as caught:
        validate_flows([bad], {})
    assert caught.value.message == "definition.flows[0].steps[1].steps[0].then[0].colour: unknown field"
    unregister("echo")
    try:
        with pytest.raises(ApiError) as caught:
            validate_flows([echo_flow()], {})
        assert caught.value.message.startswith("definition.flows[0].steps[0].type: unknown step type 'echo'")
    finally:
        register(ECHO)


@pytest.mark.anyio
async def test_a_registered_type_runs_in_the_engine(kit, echo_type: StepType, executor_kind: str) -> None:  # noqa: ANN001
    project = await kit.project({"flows": [echo_flow()]})
    run_id = await kit.trigger(kit.flow_id(project, "echo"), {"word": "hello", "items": [1, 2, 3]})
    run = await kit.wait(run_id)
    assert run["status"] == "succeeded", run
    assert run["result"] == {"status": 200, "body": {"first": "hello"}}
    echoed = {step["path"]: step for step in run["steps"] if step["type"] == "echo"}
    assert set(echoed) == {"first", "each[1].pick.then.big", "each[2].pick.then.big"}
    assert all(step["status"] == "succeeded" for step in echoed.values())
