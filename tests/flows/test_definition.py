"""Flow definition validation: every problem is a 400 naming the JSON path of the bad field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ihub.common.errors import ApiError
from ihub.flows.definition import validate_flows

SLOTS = {"jira": "jira"}
BASE: dict[str, Any] = {
    "key": "create-issue",
    "trigger": {"type": "jwt"},
    "steps": [
        {
            "id": "create",
            "type": "http",
            "connection": "jira",
            "method": "POST",
            "path": "/x",
            "json": {"a": "{{ 1 }}"},
        },
        {"id": "check", "type": "if", "condition": "steps.create.status == 'succeeded'", "then": [], "else": []},
    ],
}


def flows_with(**changes: Any) -> list[dict[str, Any]]:
    flow = copy.deepcopy(BASE)
    flow.update(changes)
    return [flow]


def error_of(flows: Any, slots: dict[str, str] = SLOTS) -> str:
    with pytest.raises(ApiError) as caught:
        validate_flows(flows, slots)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_definition"
    return caught.value.message


def test_normalizes_defaults() -> None:
    [flow] = validate_flows(flows_with(), SLOTS)
    assert flow["name"] == "create-issue"
    assert flow["mode"] == "async"
    step = flow["steps"][0]
    assert step["on_error"] == "fail"
    assert step["retry"]["max_attempts"] == 1
    assert step["expect"] == [200, 201, 202, 204]
    # Normalizing a normalized flow changes nothing (templates store the normalized form).
    assert validate_flows([flow], SLOTS) == [flow]


def test_sync_mode_gets_timeout_and_schedule_keeps_cron() -> None:
    [flow] = validate_flows(flows_with(mode="sync"), SLOTS)
    assert flow["timeout"] == 30
    [flow] = validate_flows(flows_with(trigger={"type": "schedule", "cron": "*/5 * * * *"}), SLOTS)
    assert flow["trigger"] == {"type": "schedule", "cron": "*/5 * * * *"}
    [flow] = validate_flows(flows_with(trigger="manual"), SLOTS)
    assert flow["trigger"] == {"type": "manual"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": "bad key"}, "definition.flows[0].key: must match"),
        ({"trigger": {"type": "email"}}, "definition.flows[0].trigger.type: must be one of"),
        ({"trigger": {"type": "schedule", "cron": "every monday"}}, "definition.flows[0].trigger.cron: invalid cron"),
        ({"trigger": {"type": "schedule"}}, "definition.flows[0].trigger.cron: required"),
        ({"mode": "later"}, "definition.flows[0].mode: must be async or sync"),
        ({"mode": "sync", "timeout": 5000}, "definition.flows[0].timeout: must be between"),
        ({"steps": "x"}, "definition.flows[0].steps: must be a list"),
        ({"colour": 1}, "definition.flows[0].colour: unknown field"),
    ],
)
def test_flow_level_errors(changes: dict[str, Any], message: str) -> None:
    assert error_of(flows_with(**changes)).startswith(message)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"id": "s", "type": "email"}, "steps[2].type: unknown step type 'email'"),
        (
            {"id": "s", "type": "http", "connection": "slack", "path": "/"},
            "steps[2].connection: unknown connection slot",
        ),
        ({"id": "s", "type": "http", "path": "/"}, "steps[2].url: required when the step has no connection"),
        ({"id": "s", "type": "http", "url": "http://x", "method": "FETCH"}, "steps[2].method: must be one of"),
        ({"id": "s", "type": "map", "set": {"x": "{{ a + }}"}}, "steps[2].set.x: expression syntax error"),
        ({"id": "s", "type": "map", "set": {"x": {"y": ["{% if %}"]}}}, "steps[2].set.x.y[0]: expression syntax error"),
        ({"id": "s", "type": "if", "condition": "a ==", "then": []}, "steps[2].condition: expression syntax error"),
        ({"id": "s", "type": "foreach", "items": "x", "steps": [], "concurrency": 0}, "steps[2].concurrency: must be"),
        ({"id": "s", "type": "delay", "seconds": -1}, "steps[2].seconds: must be between"),
        ({"id": "s", "type": "respond", "status": 99}, "steps[2].status: must be between"),
        ({"id": "create", "type": "map", "set": {}}, "steps[2].id: duplicate step id 'create'"),
        ({"id": "9x", "type": "map", "set": {}}, "steps[2].id: must match"),
        ({"id": "s", "type": "map", "set": {}, "on_error": "ignore"}, "steps[2].on_error: must be fail or continue"),
        ({"id": "s", "type": "map", "set": {}, "retry": {"max_attempts": 0}}, "steps[2].retry.max_attempts: must be"),
        ({"id": "s", "type": "map", "set": {}, "retry": {"retry_on": {"errors": ["boom"]}}}, "retry_on.errors[0]"),
        ({"id": "s", "type": "map", "set": {}, "retry": {"retry_on": {"statuses": [700]}}}, "retry_on.statuses[0]"),
    ],
)
def test_step_errors_have_json_paths(step: dict[str, Any], message: str) -> None:
    flows = flows_with()
    flows[0]["steps"].append(step)
    text = error_of(flows)
    assert text.startswith("definition.flows[0].")
    assert message in text


def test_nested_step_paths_and_duplicate_keys() -> None:
    flows = flows_with()
    flows[0]["steps"][1]["then"] = [{"id": "inner", "type": "http", "connection": "nope", "path": "/"}]
    assert error_of(flows).startswith("definition.flows[0].steps[1].then[0].connection: unknown connection slot")
    assert error_of([BASE, BASE]).startswith("definition.flows[1].key: duplicate flow key")
    assert error_of({"key": "x"}).startswith("definition.flows: must be a list")


def nested_ifs(levels: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"id": "leaf", "type": "map", "set": {}}]
    for level in range(levels):
        steps = [{"id": f"if{level}", "type": "if", "condition": "true", "then": steps}]
    return steps


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": nested_ifs(9)}, "steps[0].then[0].then[0].then[0].then[0].then[0].then[0].then[0].then[0].then:"
         " steps nest deeper than 8 levels"),
        ({"steps": [{"id": f"s{i}", "type": "map", "set": {}} for i in range(201)]},
         "steps[200]: a flow has at most 200 steps"),
        ({"steps": [{"id": "r", "type": "respond", "headers": {"Bad Name": "x"}}]}, "steps[0].headers: "),
        ({"steps": [{"id": "h", "type": "http", "url": "http://x", "path": "/"}]},
         "steps[0].url: give either url or path, not both"),
        ({"steps": [{"id": "h", "type": "http", "url": "http://x", "json": {}, "body": ""}]},
         "steps[0].body: give either json or body, not both"),
        ({"steps": [{"id": "h", "type": "http", "url": "http://x", "expect": [200, 99]}]},
         "steps[0].expect[1]: must be between 100 and 599"),
        ({"steps": [{"id": "h", "type": "http", "url": "http://x", "query": {"a": ["{{ x + }}"]}}]},
         "steps[0].query.a[0]: expression syntax error"),
        ({"steps": [{"id": "h", "type": "http", "url": "http://x", "timeout": True}]},
         "steps[0].timeout: must be a number"),
        ({"steps": [5]}, "steps[0]: must be an object"),
        ({"steps": [{"id": "x"}]}, "steps[0].type: unknown step type None; expected one of http, map, if"),
        ({"steps": [{"id": "a", "type": "map"}]}, "steps[0].set: required"),
        ({"steps": [{"id": "a", "type": "delay", "seconds": 10**9}]}, "steps[0].seconds: must be between 0 and 604800"),
        ({"timeout": 5}, "timeout: only sync flows have a timeout"),
        ({"trigger": 5}, "trigger: must be an object"),
        ({"trigger": {"type": "jwt", "cron": "* * * * *"}}, "trigger.cron: unknown field"),
    ],
)  # fmt: skip
def test_limits_and_field_errors(changes: dict[str, Any], message: str) -> None:
    text = error_of(flows_with(**changes))
    assert text.startswith("definition.flows[0]." + message), text


def test_normalized_form_keeps_what_was_given() -> None:
    steps = [
        {"id": "h", "type": "http", "url": "http://x", "connection": None, "json": None, "method": "patch"},
        {"id": "r", "type": "respond"},
    ]
    schedule = {"type": "schedule", "cron": "0 * * * *", "timezone": "UTC"}
    [flow] = validate_flows(flows_with(steps=steps, trigger=schedule), SLOTS)
    http, respond = flow["steps"]
    assert "connection" not in http and http["json"] is None and http["method"] == "PATCH"
    assert list(http) == ["id", "type", "on_error", "retry", "method", "url", "json", "expect", "timeout"]
    assert respond["body"] is None and respond["status"] == 200 and "headers" not in respond
    assert flow["trigger"] == {"type": "schedule", "cron": "0 * * * *"}
    assert list(flow) == ["key", "name", "trigger", "mode", "steps"]
    assert validate_flows([flow], SLOTS) == [flow]
