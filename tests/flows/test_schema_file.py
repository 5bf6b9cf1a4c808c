"""The published JSON schema (src/ihub/flows/schema/flow-v1.json) is the one the models generate, it lists
every registered step type, and the shipped example validates."""

from __future__ import annotations

from pathlib import Path

import yaml

from ihub.flows import schema
from ihub.flows.steps.registry import step_types
from ihub.templates.service import validate_definition

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_the_generated_one() -> None:
    committed = (ROOT / "src/ihub/flows/schema/flow-v1.json").read_text(encoding="utf-8")
    assert committed == schema.render(), "flow-v1.json is stale: run `python -m ihub.flows.schema` and commit it"


def test_schema_lists_every_step_type_with_descriptions() -> None:
    generated = schema.generate()
    steps = generated["properties"]["steps"]["items"]
    assert set(steps["discriminator"]["mapping"]) == set(step_types())
    for ref in steps["discriminator"]["mapping"].values():
        model = generated["$defs"][ref.rsplit("/", 1)[1]]
        assert model["description"], ref
        assert all("description" in field for name, field in model["properties"].items() if name != "type"), ref
    retry = generated["$defs"]["RetryPolicy"]["properties"]
    assert set(retry) == {"max_attempts", "initial_delay", "max_delay", "multiplier", "retry_on"}


def test_example_template_validates() -> None:
    data = yaml.safe_load((ROOT / "examples/servicenow-to-jira.yaml").read_text())
    normalized = validate_definition(data["definition"])
    [flow] = normalized["flows"]
    assert flow["trigger"] == {"type": "jwt"}
    assert [slot["type"] for slot in normalized["connections"]] == ["jira"]
