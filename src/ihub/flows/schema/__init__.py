"""The published JSON schema of the flow format (`flow-v1.json` beside this file), generated from the models
in ihub.flows.definition and ihub.flows.steps: `python -m ihub.flows.schema` rewrites the file, and
tests/flows/test_schema_file.py fails while the committed file differs from what the models generate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ihub.flows.definition import FlowSpec

SCHEMA_FILE = Path(__file__).with_name("flow-v1.json")


def generate() -> dict[str, Any]:
    body = FlowSpec.model_json_schema(by_alias=True)
    header = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ihub.dev/schema/flow-v1.json",
        "title": "ihub flow definition, format version 1",
        "description": "One entry of a template's `definition.flows`. See docs/flows.md.",
    }
    return {**header, **{key: value for key, value in body.items() if key not in ("title", "description")}}


def render() -> str:
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
