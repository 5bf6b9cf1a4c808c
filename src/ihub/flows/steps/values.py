"""Turning step values into text and record summaries (shared by the engine and the step handlers)."""

from __future__ import annotations

import json
from typing import Any

SUMMARY_CAP = 4096


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def summarize(value: Any, cap: int = SUMMARY_CAP) -> Any:
    """A value for a record: itself if small, else its JSON text cut at `cap` with a marker."""
    if value is None:
        return None
    text = value if isinstance(value, str) else dumps(value)
    if len(text) <= cap:
        return value
    return text[:cap] + f"...[truncated {len(text) - cap} chars]"


def as_text(value: Any) -> str:
    """A rendered value as a header, query parameter or body text (JSON for lists and objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return dumps(value)


def json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
