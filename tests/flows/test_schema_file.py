"""The published JSON schema (src/ihub/flows/schema/flow-v1.json) describes what the validator accepts,
and the shipped example validates."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ihub.flows import definition
from ihub.templates.service import validate_definition

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "src/ihub/flows/schema/flow-v1.json").read_text())


def test_schema_lists_the_validator_step_types_and_fields() -> None:
    kinds = [ref["$ref"].rsplit("/", 1)[1] for ref in SCHEMA["$defs"]["step"]["oneOf"]]
    assert kinds == list(definition.STEP_TYPES)
    for kind in kinds:
        props = set(SCHEMA["$defs"][kind]["properties"]) - {"type"}
        assert props == definition._COMMON - {"type"} | definition._FIELDS[kind], kind
    assert set(SCHEMA["properties"]) == {"key", "name", "description", "trigger", "mode", "timeout", "steps"}
    retry = SCHEMA["$defs"]["retry"]["properties"]
    assert set(retry) == set(definition.DEFAULT_RETRY)
    assert retry["retry_on"]["properties"]["errors"]["items"]["enum"] == list(definition.RETRYABLE_ERRORS)


def test_example_template_validates() -> None:
    data = yaml.safe_load((ROOT / "examples/servicenow-to-jira.yaml").read_text())
    normalized = validate_definition(data["definition"])
    [flow] = normalized["flows"]
    assert flow["trigger"] == {"type": "jwt"}
    assert [slot["type"] for slot in normalized["connections"]] == ["jira"]
