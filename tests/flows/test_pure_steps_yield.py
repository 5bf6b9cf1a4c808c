"""Pure steps yield to the event loop between them: while one run computes step after step, the worker's other
runs (and, with IHUB_WORKERS=0, the API) keep going."""

from __future__ import annotations

import pytest
from flowkit import jira_definition

pytestmark = pytest.mark.anyio

# Three times 199 steps in a row that compute (membership tests, about a millisecond each) and succeed: nothing
# in them waits, so only the engine's own yield between steps lets anything else run. Kept small: each step is
# an expression under the 2 s budget, and a loaded CI machine stretched the earlier 1000 x 1000 past it.
WORK = "{% set l = range(300) | list %}{{ range(300) | select('in', l) | list | length }}"
STEADY = {
    "key": "steady",
    "trigger": "manual",
    "steps": [
        {
            "id": "rounds",
            "type": "foreach",
            "items": "{{ range(3) }}",
            "steps": [{"id": f"work{i}", "type": "map", "set": {"n": WORK}} for i in range(199)],
        }
    ],
}
QUICK = {"key": "quick", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "ok"}]}


async def test_other_runs_go_on_while_a_run_computes(kit) -> None:  # noqa: ANN001
    project = await kit.project(jira_definition([STEADY, QUICK]))
    steady = await kit.trigger(kit.flow_id(project, "steady"), {})
    await kit.wait(steady, statuses=("running",))
    quick = await kit.trigger(kit.flow_id(project, "quick"), {})
    quick_run = await kit.wait(quick, timeout=60)
    steady_run = await kit.wait(steady, timeout=120)
    assert (quick_run["status"], steady_run["status"]) == ("succeeded", "succeeded"), steady_run["error"]
    # The quick run did not wait for the long one to end.
    assert quick_run["finishedAt"] < steady_run["finishedAt"]
