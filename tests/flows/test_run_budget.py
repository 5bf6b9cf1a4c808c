"""A run has a time budget (IHUB_RUN_TIME_BUDGET_SECONDS) and a step budget per execution: past either it fails
with a clear error, whatever its steps' on_error says; pure steps yield, so other runs keep going meanwhile."""

from __future__ import annotations

import time

import pytest
from flowkit import jira_definition

from ihub.config import Settings

pytestmark = pytest.mark.anyio

# Each evaluation would take hours (2^40 macro calls): only the expression time budget ends it.
BURN = "{% macro burn(n) %}{% if n > 0 %}{{ burn(n - 1) }}{{ burn(n - 1) }}{% endif %}{% endmacro %}{{ burn(40) }}"
BUSY = {
    "key": "busy",
    "trigger": "manual",
    "steps": [
        *({"id": f"burn{i}", "type": "map", "on_error": "continue", "set": {"x": BURN}} for i in range(20)),
        {"id": "out", "type": "respond", "body": "done"},
    ],
}
QUICK = {"key": "quick", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "ok"}]}
# 100 x 100 x 3 = 30 000 pure steps: more than one execution may walk.
NESTED = {
    "key": "nested",
    "trigger": "manual",
    "steps": [
        {
            "id": "outer",
            "type": "foreach",
            "items": "{{ range(100) }}",
            "steps": [
                {
                    "id": "inner",
                    "type": "foreach",
                    "items": "{{ range(100) }}",
                    "steps": [
                        {"id": "a", "type": "map", "set": {"v": "{{ item }}"}},
                        {"id": "b", "type": "map", "set": {"w": "{{ vars.v }}"}},
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture
def time_budget() -> float:
    return 3.0


@pytest.fixture
def settings(settings: Settings, time_budget: float) -> Settings:
    return settings.model_copy(update={"run_time_budget_seconds": time_budget})


async def test_a_computing_run_fails_at_its_time_budget(kit, monkeypatch) -> None:  # noqa: ANN001
    from ihub.flows import expressions

    monkeypatch.setattr(expressions, "TIME_BUDGET_SECONDS", 0.25)  # each BURN step computes 0.25 s
    project = await kit.project(jira_definition([BUSY]))
    busy_run = await kit.wait(await kit.trigger(kit.flow_id(project, "busy"), {}), timeout=60)
    assert busy_run["status"] == "failed"
    # The budget ends the run although every step says on_error: continue.
    assert busy_run["error"] == "run exceeded its time budget of 3 s"
    burns = [s for s in busy_run["steps"] if s["stepId"].startswith("burn")]
    assert 1 <= len(burns) < 20
    assert all("time budget of 0.25 s" in s["error"] for s in burns), burns
    assert not [s for s in busy_run["steps"] if s["stepId"] == "out"]


async def test_nested_foreach_of_pure_steps_stops_at_a_budget(kit) -> None:  # noqa: ANN001
    from ihub.flows.engine import MAX_STEPS_PER_EXECUTION

    project = await kit.project(jira_definition([NESTED]))
    run_id = await kit.trigger(kit.flow_id(project, "nested"), {})
    run = await kit.wait(run_id, timeout=120)
    assert run["status"] == "failed"
    # Whichever comes first on this machine: 3 s of computation, or 20 000 steps (about 3 s at 150 us a step).
    assert run["error"] in (
        "run exceeded its time budget of 3 s",
        f"run executed more than {MAX_STEPS_PER_EXECUTION} steps at once",
    )
    assert len(run["steps"]) <= MAX_STEPS_PER_EXECUTION


# 500 steps take well under 3 s on a quiet machine, but not always beside other xdist workers and jobs on two cores:
# a long time budget here, so that the step budget is what ends the run.
@pytest.mark.parametrize("time_budget", [120.0])
async def test_the_step_budget_bounds_one_execution(kit, monkeypatch) -> None:  # noqa: ANN001
    from ihub.flows import engine

    monkeypatch.setattr(engine, "MAX_STEPS_PER_EXECUTION", 500)
    assert kit.app.state.context.settings.run_time_budget_seconds == 120.0
    project = await kit.project(jira_definition([NESTED]))
    run_id = await kit.trigger(kit.flow_id(project, "nested"), {})
    run = await kit.wait(run_id, timeout=60)
    assert run["status"] == "failed"
    assert run["error"] == "run executed more than 500 steps at once"
    assert 400 < len(run["steps"]) <= 500


class WaitingClock:
    """The engine's clock (`ihub.flows.engine.time`) frozen except while a target answers: then it jumps 100 s.
    So the run's own work costs no time at all, however loaded the machine, and only the waiting is long."""

    perf_counter = staticmethod(time.perf_counter)

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_waiting_for_http_answers_is_not_charged_to_the_budget(kit, httpserver, monkeypatch) -> None:  # noqa: ANN001
    from flowkit import http_connection
    from werkzeug import Request, Response

    from ihub.flows import engine

    clock = WaitingClock()
    monkeypatch.setattr(engine, "time", clock)

    def slow(request: Request) -> Response:
        clock.now += 100.0  # the answer took 100 s
        return Response('{"ok": true}', status=200, content_type="application/json")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    call = {"id": "call", "type": "http", "connection": "jira", "method": "POST", "path": "/slow"}
    flow = {"key": "slow", "trigger": "manual", "steps": [call, dict(call, id="again"), dict(call, id="third")]}
    project = await kit.project(jira_definition([flow], slot_type="http"), [http_connection(httpserver.url_for("/"))])
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "slow"), {}), timeout=60)
    # 300 s of waiting against a 3 s budget (checked before each step), and no time computing.
    assert run["status"] == "succeeded", run["error"]
    assert len(httpserver.log) == 3
