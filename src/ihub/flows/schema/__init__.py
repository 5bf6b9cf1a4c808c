"""The published JSON schema of the flow format (`flow-v1.json` beside this file), generated from the models
in ihub.flows.definition and ihub.flows.steps: `python -m ihub.flows.schema` rewrites the file, and
tests/flows/test_schema_file.py fails while the committed file differs from what the models generate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ihub.flows.definition import FlowSpec

SCHEMA_FILE = Path(__file__).with_name("flow-v1.json")


class _EditorSchema(GenerateJsonSchema):
    """Optional fields are typed `X | None` in the models (None: not given), but null is not a value a flow
    may write for them: the schema shows `X` alone, without a null default."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        value = super().default_schema(schema)
        if value.get("default", ...) is None:
            del value["default"]
        return value


def generate() -> dict[str, Any]:
    body = FlowSpec.model_json_schema(by_alias=True, schema_generator=_EditorSchema)
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
