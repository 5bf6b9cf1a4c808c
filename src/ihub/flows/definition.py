"""Flow definitions (format version 1): the typed model, its compilation and its normalized form.

A template's `definition.flows` is a list of flows; each has a key, a trigger, a mode and a list of steps.
Steps are a tagged union on `type` over the registered step types (ihub.flows.steps.registry).

API used by the rest of the hub:
- `compile_flow(raw, slots, path) -> FlowSpec`: validate one flow against the template's connection slots
  ({slot id: type}); `compile_flows(definition) -> list[FlowSpec]` does a whole template definition.
  The engine runs a `FlowSpec` (typed, immutable) without further checks; `ihub.flows.service.flow_spec`
  gives the one for a flow key, or None when the template no longer defines it.
- `validate_flows(flows, slots, path) -> list[dict]`: the normalized flows (defaults filled in) as templates
  store them; `normalized(spec)` turns one `FlowSpec` into that form. Normalizing twice changes nothing.

Every problem is `ApiError(400, "<json path>: <message>", "invalid_definition")` for the first one found, e.g.
`definition.flows[0].steps[2].retry.max_attempts: must be between 1 and 100`.
The JSON schema in `schema/flow-v1.json` is generated from these models (`python -m ihub.flows.schema`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from ihub.common.errors import ApiError
from ihub.flows.steps.base import REGISTERED, FormatModel, StepModel, Steps
from ihub.flows.steps.fields import Number, Text, problem
from ihub.flows.steps.registry import rebuild_with_steps, step_types
from ihub.flows.triggers import TRIGGER_TYPES, Trigger

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MODES = ("async", "sync")
MAX_STEPS = 200
MAX_DEPTH = 8
MAX_SYNC_TIMEOUT = 120
DEFAULT_SYNC_TIMEOUT = 30.0


def invalid(path: str, message: str) -> ApiError:
    return ApiError(400, f"{path}: {message}", "invalid_definition")


def _check_key(value: Any) -> Any:
    if not isinstance(value, str) or not KEY_PATTERN.match(value):
        raise problem("must match [A-Za-z0-9_-]{1,100}")
    return value


def _check_mode(value: Any) -> Any:
    if value not in MODES:
        raise problem("must be async or sync")
    return value


class FlowSpec(FormatModel):
    """One entry of a template's `definition.flows`. See docs/flows.md."""

    key: Annotated[str, BeforeValidator(_check_key), Field(pattern=KEY_PATTERN.pattern)] = Field(
        description="Unique in the template; one flow row per project per key."
    )
    name: Annotated[str, Text(200)] = Field(description="Shown in the console; defaults to the key.")
    description: Annotated[str | None, Text(allow_empty=True)] = Field(None, description="Free text.")
    trigger: Trigger = Field(description="What starts the flow's runs (a bare type name works too).")
    mode: Annotated[Literal["async", "sync"], BeforeValidator(_check_mode)] = Field(
        "async", description="`sync`: a caller waits up to `timeout` seconds for the `respond` result."
    )
    timeout: Annotated[float | None, Number(1, MAX_SYNC_TIMEOUT)] = Field(
        None, description=f"Sync flows only: seconds a caller waits (default {DEFAULT_SYNC_TIMEOUT:g})."
    )
    steps: Steps = Field(description="Run in order; see the step types.")

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_other_fields(cls, value: Any) -> Any:
        # The name defaults to the key, a sync flow's timeout to DEFAULT_SYNC_TIMEOUT.
        if not isinstance(value, dict):
            return value
        filled = dict(value)
        if "name" not in filled and "key" in filled:
            filled["name"] = filled["key"]
        if filled.get("mode") == "sync" and "timeout" not in filled:
            filled["timeout"] = DEFAULT_SYNC_TIMEOUT
        return filled

    @model_validator(mode="after")
    def _timeout_for_sync_only(self) -> FlowSpec:
        if self.mode == "async" and "timeout" in self.model_fields_set:
            raise problem("only sync flows have a timeout", ".timeout")
        return self

    def walk(self) -> Iterator[tuple[StepModel, str]]:
        """Every step with its JSON path below the flow (`steps[1].then[0]`), depth first, in order."""
        yield from _walk(self.steps, "steps")

    def connections(self) -> set[str]:
        """Connection slots the flow's steps use."""
        return {slot for step, _ in self.walk() for slot in step.connections()}


rebuild_with_steps(FlowSpec)


def _walk(steps: Sequence[StepModel], path: str) -> Iterator[tuple[StepModel, str]]:
    for index, step in enumerate(steps):
        yield step, f"{path}[{index}]"
        for key, children in step.children():
            yield from _walk(children, f"{path}[{index}].{key}")


def _check_limits(steps: Sequence[StepModel], path: str, depth: int, ids: set[str]) -> None:
    """What one step cannot see: ids unique in the whole flow, the step count, the nesting depth."""
    if depth > MAX_DEPTH:
        raise invalid(path, f"steps nest deeper than {MAX_DEPTH} levels")
    for index, step in enumerate(steps):
        step_path = f"{path}[{index}]"
        if len(ids) >= MAX_STEPS:
            raise invalid(step_path, f"a flow has at most {MAX_STEPS} steps")
        if step.id in ids:
            raise invalid(f"{step_path}.id", f"duplicate step id {step.id!r}")
        ids.add(step.id)
        for key, children in step.children():
            _check_limits(children, f"{step_path}.{key}", depth + 1, ids)


def _json_path(base: str, loc: tuple[int | str, ...]) -> str:
    path, previous = base, None
    for position, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(previous, int) and part in REGISTERED:
            pass  # the tagged union names the step type it validated against: not part of the JSON path
        elif position == 1 and previous == "trigger" and part in TRIGGER_TYPES:
            pass  # the same for the trigger
        else:
            path += f".{part}"
        previous = part
    return path


def _first_problem(error: ValidationError, base: str) -> ApiError:
    """The first pydantic error as the definition API reports it: `<json path>: <message>`."""
    detail: ErrorDetails = error.errors(include_url=False)[0]
    loc, kind, context = detail["loc"], detail["type"], detail.get("ctx") or {}
    path = _json_path(base, loc)
    if kind == "invalid_definition":
        return invalid(path + str(context.get("subpath", "")), str(context.get("message")))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        if not isinstance(detail.get("input"), dict):
            return invalid(path, "must be an object")
        if loc and loc[-1] == "trigger":
            return invalid(f"{path}.type", f"must be one of {', '.join(TRIGGER_TYPES)}")
        tag = context.get("tag")
        return invalid(f"{path}.type", f"unknown step type {tag!r}; expected one of {', '.join(step_types())}")
    messages = {
        "missing": "required",
        "extra_forbidden": "unknown field",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "dict_type": "must be an object",
        "list_type": "must be a list",
    }
    return invalid(path, messages.get(kind, detail["msg"]))


def compile_flow(raw: Any, slots: dict[str, str], path: str) -> FlowSpec:
    """Validate one flow against the template's connection slots; raise the first problem as an ApiError."""
    if not isinstance(raw, dict):
        raise invalid(path, "must be an object")
    try:
        spec = FlowSpec.model_validate(raw, context={"slots": slots})
    except ValidationError as error:
        raise _first_problem(error, path) from None
    _check_limits(spec.steps, f"{path}.steps", 0, set())
    return spec


def template_slots(definition: dict[str, Any] | None) -> dict[str, str]:
    """{slot id: type} from a template definition's `connections` (a list of {id, type, ...} or a mapping)."""
    slots: dict[str, str] = {}
    raw = (definition or {}).get("connections") or []
    if isinstance(raw, dict):
        raw = [{"id": key, **(value if isinstance(value, dict) else {})} for key, value in raw.items()]
    if isinstance(raw, list):
        for slot in raw:
            if isinstance(slot, dict) and isinstance(slot.get("id"), str):
                slots[slot["id"]] = str(slot.get("type", "http"))
    return slots


def compile_flows(definition: dict[str, Any] | None, path: str = "definition.flows") -> list[FlowSpec]:
    """Every flow of a template definition, compiled against its connection slots."""
    flows = (definition or {}).get("flows")
    slots = template_slots(definition)
    if flows is None:
        return []
    if not isinstance(flows, list):
        raise invalid(path, "must be a list of flows")
    specs: list[FlowSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(flows):
        spec = compile_flow(raw, slots, f"{path}[{index}]")
        if spec.key in seen:
            raise invalid(f"{path}[{index}].key", f"duplicate flow key {spec.key!r}")
        seen.add(spec.key)
        specs.append(spec)
    return specs


def normalized(spec: FlowSpec) -> dict[str, Any]:
    """A compiled flow as templates store it (defaults filled in, JSON names)."""
    return spec.model_dump(by_alias=True)


def validate_flow(value: Any, slots: dict[str, str], path: str) -> dict[str, Any]:
    return normalized(compile_flow(value, slots, path))


def validate_flows(flows: Any, slots: dict[str, str], path: str = "definition.flows") -> list[dict[str, Any]]:
    """Validate a template's flow list against its connection slots ({slot id: type}); return normalized flows."""
    if flows is None:
        return []
    if not isinstance(flows, list):
        raise invalid(path, "must be a list of flows")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw in enumerate(flows):
        spec = compile_flow(raw, slots, f"{path}[{index}]")
        if spec.key in seen:
            raise invalid(f"{path}[{index}].key", f"duplicate flow key {spec.key!r}")
        seen.add(spec.key)
        out.append(normalized(spec))
    return out
