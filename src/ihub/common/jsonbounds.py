"""Bounds on free-form JSON a client may store (project settings, connection details, template definitions).

Stored JSON is read back on every later request and on every run: a value nested 400 deep is accepted by the
parser but then fails serialization (pydantic stops at depth 512, `json` at Python's recursion limit), so one
write would break every read of the project and of its organization's project list. Bounds are checked before
anything is written. 32 levels and 64 KiB are far beyond any real settings object (the seed's are 2 levels and
under 1 KiB) and far below where any reader fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024
# Definitions nest steps up to 8 deep (two JSON levels each) and carry request bodies: more room, same reason.
MAX_DEFINITION_DEPTH = 64
# Trigger payloads (manual runs, webhooks) are stored with the run and shown by the run API, which fails past
# a depth of about 250: one deep payload would break the whole project's run list.
MAX_PAYLOAD_DEPTH = 64


def json_depth(value: Any, give_up_at: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0, `{}` is 1), iteratively; stops counting past `give_up_at`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > give_up_at:
                return depth
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def payload_depth_error(value: Any) -> str | None:
    """Why a trigger payload is too deep to store, or None."""
    if json_depth(value, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        return f"body is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    return None


def bounded_json(max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = MAX_JSON_BYTES) -> Callable[[Any], Any]:
    """A pydantic validator (`AfterValidator(bounded_json())`) refusing values too deep or too large
    (`max_bytes=None`: the request body limit is the only size bound)."""

    def check(value: Any) -> Any:
        if json_depth(value, max_depth) > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        try:
            size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
        except ValueError:
            raise ValueError("numbers must be finite (no NaN or Infinity)") from None
        if max_bytes is not None and size > max_bytes:
            raise ValueError(f"larger than {max_bytes // 1024} KiB as JSON ({size} bytes)")
        return value

    return check
