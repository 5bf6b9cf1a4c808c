"""Flow definitions (format version 1): validation and normalization.

A template's `definition.flows` is a list of flows; each has a key, a trigger, a mode and a list of steps.
Validation reports the first problem as `ApiError(400, "<json path>: <message>", "invalid_definition")`, and
returns normalized flows (defaults filled in) that the engine runs without further checks.
The JSON schema in `schema/flow-v1.json` documents the same format for editors and clients.
"""

from __future__ import annotations

import re
from typing import Any

from croniter import croniter

from ihub.common.errors import ApiError
from ihub.flows.expressions import ExpressionError, check_expression, check_syntax
from ihub.flows.reply import MAX_STATUS, MIN_STATUS, InvalidReply, check_header_name

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
STEP_ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
TRIGGER_TYPES = ("jwt", "manual", "schedule")
MODES = ("async", "sync")
STEP_TYPES = ("http", "map", "if", "foreach", "delay", "respond", "fail")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RETRYABLE_ERRORS = ("timeout", "connect", "network", "expression", "status")
MAX_STEPS = 200
MAX_DEPTH = 8
MAX_SYNC_TIMEOUT = 120
MAX_DELAY_SECONDS = 7 * 24 * 3600

DEFAULT_RETRY: dict[str, Any] = {
    "max_attempts": 1,
    "initial_delay": 1.0,
    "max_delay": 60.0,
    "multiplier": 2.0,
    "retry_on": {"statuses": [408, 425, 429, 500, 502, 503, 504], "errors": ["timeout", "connect", "network"]},
}


def invalid(path: str, message: str) -> ApiError:
    return ApiError(400, f"{path}: {message}", "invalid_definition")


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object")
    return value


def _string(value: Any, path: str, *, max_len: int = 10_000, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise invalid(path, "must be a non-empty string" if not allow_empty else "must be a string")
    if len(value) > max_len:
        raise invalid(path, f"must be at most {max_len} characters")
    return value


def _number(value: Any, path: str, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(path, "must be a number")
    if not minimum <= value <= maximum:
        raise invalid(path, f"must be between {minimum:g} and {maximum:g}")
    return float(value)


def _integer(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(path, "must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(path, f"must be between {minimum} and {maximum}")
    return value


def _unknown_keys(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise invalid(f"{path}.{key}", "unknown field")


def _templates(value: Any, path: str) -> None:
    """Syntax-check every string template in a JSON value."""
    if isinstance(value, str):
        try:
            check_syntax(value)
        except ExpressionError as error:
            raise invalid(path, f"expression {error}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _templates(key, f"{path}.{key}")
            _templates(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _templates(item, f"{path}[{index}]")


def _expression(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _string(value, path)
    try:
        check_expression(text)
    except ExpressionError as error:
        raise invalid(path, f"expression {error}") from None
    return text


def _trigger(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"type": value}
    trigger = _mapping(value, path)
    kind = trigger.get("type")
    if kind not in TRIGGER_TYPES:
        raise invalid(f"{path}.type", f"must be one of {', '.join(TRIGGER_TYPES)}")
    if kind == "schedule":
        _unknown_keys(trigger, {"type", "cron", "timezone"}, path)
        cron = _string(trigger.get("cron"), f"{path}.cron", max_len=200)
        if not croniter.is_valid(cron):
            raise invalid(f"{path}.cron", f"invalid cron expression {cron!r}")
        return {"type": "schedule", "cron": cron}
    _unknown_keys(trigger, {"type"}, path)
    return {"type": kind}


def _retry(value: Any, path: str) -> dict[str, Any]:
    retry = _mapping(value, path)
    _unknown_keys(retry, {"max_attempts", "initial_delay", "max_delay", "multiplier", "retry_on"}, path)
    out = {**DEFAULT_RETRY, "retry_on": dict(DEFAULT_RETRY["retry_on"])}
    if "max_attempts" in retry:
        out["max_attempts"] = _integer(retry["max_attempts"], f"{path}.max_attempts", minimum=1, maximum=100)
    if "initial_delay" in retry:
        out["initial_delay"] = _number(retry["initial_delay"], f"{path}.initial_delay", minimum=0, maximum=3600)
    if "max_delay" in retry:
        out["max_delay"] = _number(retry["max_delay"], f"{path}.max_delay", minimum=0, maximum=86400)
    if "multiplier" in retry:
        out["multiplier"] = _number(retry["multiplier"], f"{path}.multiplier", minimum=1, maximum=10)
    if "retry_on" in retry:
        retry_on = _mapping(retry["retry_on"], f"{path}.retry_on")
        _unknown_keys(retry_on, {"statuses", "errors"}, f"{path}.retry_on")
        if "statuses" in retry_on:
            statuses = retry_on["statuses"]
            if not isinstance(statuses, list):
                raise invalid(f"{path}.retry_on.statuses", "must be a list of HTTP status codes")
            for index, status in enumerate(statuses):
                _integer(status, f"{path}.retry_on.statuses[{index}]", minimum=100, maximum=599)
            out["retry_on"]["statuses"] = list(statuses)
        if "errors" in retry_on:
            errors = retry_on["errors"]
            if not isinstance(errors, list):
                raise invalid(f"{path}.retry_on.errors", "must be a list")
            for index, error in enumerate(errors):
                if error not in RETRYABLE_ERRORS:
                    raise invalid(f"{path}.retry_on.errors[{index}]", f"must be one of {', '.join(RETRYABLE_ERRORS)}")
            out["retry_on"]["errors"] = list(errors)
    return out


_COMMON = {"id", "type", "name", "retry", "on_error"}
_FIELDS = {
    "http": {"connection", "method", "path", "url", "query", "headers", "json", "body", "expect", "timeout"},
    "map": {"set"},
    "if": {"condition", "then", "else"},
    "foreach": {"items", "as", "concurrency", "steps"},
    "delay": {"seconds"},
    "respond": {"status", "body", "headers"},
    "fail": {"message"},
}


class _Walker:
    def __init__(self, slots: dict[str, str]) -> None:
        self.slots = slots
        self.ids: set[str] = set()
        self.count = 0

    def steps(self, value: Any, path: str, depth: int) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise invalid(path, "must be a list of steps")
        if depth > MAX_DEPTH:
            raise invalid(path, f"steps nest deeper than {MAX_DEPTH} levels")
        return [self.step(item, f"{path}[{index}]", depth) for index, item in enumerate(value)]

    def step(self, value: Any, path: str, depth: int) -> dict[str, Any]:
        step = _mapping(value, path)
        self.count += 1
        if self.count > MAX_STEPS:
            raise invalid(path, f"a flow has at most {MAX_STEPS} steps")
        step_id = step.get("id")
        if not isinstance(step_id, str) or not STEP_ID_PATTERN.match(step_id):
            raise invalid(f"{path}.id", "must match [A-Za-z_][A-Za-z0-9_]{0,99}")
        if step_id in self.ids:
            raise invalid(f"{path}.id", f"duplicate step id {step_id!r}")
        self.ids.add(step_id)
        kind = step.get("type")
        if kind not in STEP_TYPES:
            raise invalid(f"{path}.type", f"unknown step type {kind!r}; expected one of {', '.join(STEP_TYPES)}")
        _unknown_keys(step, _COMMON | _FIELDS[kind], path)
        out: dict[str, Any] = {"id": step_id, "type": kind}
        if "name" in step:
            out["name"] = _string(step["name"], f"{path}.name", max_len=200)
        on_error = step.get("on_error", "fail")
        if on_error not in ("fail", "continue"):
            raise invalid(f"{path}.on_error", "must be fail or continue")
        out["on_error"] = on_error
        out["retry"] = _retry(step["retry"], f"{path}.retry") if "retry" in step else {**DEFAULT_RETRY}
        getattr(self, f"_{kind}")(step, out, path, depth)
        return out

    def _http(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        connection = step.get("connection")
        if connection is not None:
            _string(connection, f"{path}.connection", max_len=100)
            if connection not in self.slots:
                known = ", ".join(sorted(self.slots)) or "none"
                raise invalid(f"{path}.connection", f"unknown connection slot {connection!r} (slots: {known})")
            out["connection"] = connection
        if "url" in step and "path" in step:
            raise invalid(f"{path}.url", "give either url or path, not both")
        if connection is None and "url" not in step:
            raise invalid(f"{path}.url", "required when the step has no connection")
        method = step.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            raise invalid(f"{path}.method", f"must be one of {', '.join(HTTP_METHODS)}")
        out["method"] = method.upper()
        for field in ("url", "path"):
            if field in step:
                out[field] = _string(step[field], f"{path}.{field}", max_len=4000)
                _templates(out[field], f"{path}.{field}")
        for field in ("query", "headers"):
            if field in step:
                _mapping(step[field], f"{path}.{field}")
                _templates(step[field], f"{path}.{field}")
                out[field] = step[field]
        if "json" in step and "body" in step:
            raise invalid(f"{path}.body", "give either json or body, not both")
        if "json" in step:
            _templates(step["json"], f"{path}.json")
            out["json"] = step["json"]
        if "body" in step:
            out["body"] = _string(step["body"], f"{path}.body", allow_empty=True, max_len=1_000_000)
            _templates(out["body"], f"{path}.body")
        expect = step.get("expect", [200, 201, 202, 204])
        if isinstance(expect, int) and not isinstance(expect, bool):
            expect = [expect]
        if not isinstance(expect, list) or not expect:
            raise invalid(f"{path}.expect", "must be a status code or a non-empty list of status codes")
        for index, status in enumerate(expect):
            _integer(status, f"{path}.expect[{index}]", minimum=100, maximum=599)
        out["expect"] = list(expect)
        out["timeout"] = _number(step.get("timeout", 30), f"{path}.timeout", minimum=0.1, maximum=300)

    def _map(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        values = _mapping(step.get("set"), f"{path}.set")
        for name in values:
            if not STEP_ID_PATTERN.match(name):
                raise invalid(f"{path}.set.{name}", "variable names must match [A-Za-z_][A-Za-z0-9_]*")
        _templates(values, f"{path}.set")
        out["set"] = values

    def _if(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        out["condition"] = _expression(step.get("condition"), f"{path}.condition")
        out["then"] = self.steps(step.get("then", []), f"{path}.then", depth + 1)
        out["else"] = self.steps(step.get("else", []), f"{path}.else", depth + 1)

    def _foreach(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        out["items"] = _expression(step.get("items"), f"{path}.items")
        name = step.get("as", "item")
        if not isinstance(name, str) or not STEP_ID_PATTERN.match(name):
            raise invalid(f"{path}.as", "must match [A-Za-z_][A-Za-z0-9_]*")
        out["as"] = name
        out["concurrency"] = _integer(step.get("concurrency", 1), f"{path}.concurrency", minimum=1, maximum=50)
        out["steps"] = self.steps(step.get("steps"), f"{path}.steps", depth + 1)

    def _delay(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        seconds = step.get("seconds")
        if isinstance(seconds, str):
            _templates(seconds, f"{path}.seconds")
            out["seconds"] = seconds
        else:
            out["seconds"] = _number(seconds, f"{path}.seconds", minimum=0, maximum=MAX_DELAY_SECONDS)

    def _respond(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        status = step.get("status", 200)
        if isinstance(status, str):
            _templates(status, f"{path}.status")
        else:
            _integer(status, f"{path}.status", minimum=MIN_STATUS, maximum=MAX_STATUS)
        out["status"] = status
        if "headers" in step:
            _mapping(step["headers"], f"{path}.headers")
            _templates(step["headers"], f"{path}.headers")
            for name in step["headers"]:
                if "{{" in name:
                    continue  # a templated name is checked by the engine once rendered
                try:
                    check_header_name(name)
                except InvalidReply as error:
                    raise invalid(f"{path}.headers", str(error)) from None
            out["headers"] = step["headers"]
        out["body"] = step.get("body")
        _templates(out["body"], f"{path}.body")

    def _fail(self, step: dict[str, Any], out: dict[str, Any], path: str, depth: int) -> None:
        out["message"] = _string(step.get("message", "flow failed"), f"{path}.message", max_len=2000)
        _templates(out["message"], f"{path}.message")


def validate_flow(value: Any, slots: dict[str, str], path: str) -> dict[str, Any]:
    flow = _mapping(value, path)
    _unknown_keys(flow, {"key", "name", "description", "trigger", "mode", "timeout", "steps"}, path)
    key = flow.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise invalid(f"{path}.key", "must match [A-Za-z0-9_-]{1,100}")
    name = flow.get("name", key)
    out: dict[str, Any] = {"key": key, "name": _string(name, f"{path}.name", max_len=200)}
    if "description" in flow:
        out["description"] = _string(flow["description"], f"{path}.description", allow_empty=True)
    if "trigger" not in flow:
        raise invalid(f"{path}.trigger", "required")
    out["trigger"] = _trigger(flow["trigger"], f"{path}.trigger")
    mode = flow.get("mode", "async")
    if mode not in MODES:
        raise invalid(f"{path}.mode", "must be async or sync")
    out["mode"] = mode
    if mode == "sync":
        out["timeout"] = _number(flow.get("timeout", 30), f"{path}.timeout", minimum=1, maximum=MAX_SYNC_TIMEOUT)
    elif "timeout" in flow:
        raise invalid(f"{path}.timeout", "only sync flows have a timeout")
    if "steps" not in flow:
        raise invalid(f"{path}.steps", "required")
    out["steps"] = _Walker(slots).steps(flow["steps"], f"{path}.steps", 0)
    return out


def validate_flows(flows: Any, slots: dict[str, str], path: str = "definition.flows") -> list[dict[str, Any]]:
    """Validate a template's flow list against its connection slots ({slot id: type}); return normalized flows."""
    if flows is None:
        return []
    if not isinstance(flows, list):
        raise invalid(path, "must be a list of flows")
    normalized: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, flow in enumerate(flows):
        item = validate_flow(flow, slots, f"{path}[{index}]")
        if item["key"] in seen:
            raise invalid(f"{path}[{index}].key", f"duplicate flow key {item['key']!r}")
        seen.add(item["key"])
        normalized.append(item)
    return normalized
