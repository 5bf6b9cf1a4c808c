"""RFC 8259 JSON, strictly: what is parsed here can be stored in any database JSON column."""

from __future__ import annotations

import json
import math
from typing import Any

from ihub.common.json_errors import json_error_text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


def strict_json(raw: bytes) -> Any:
    """RFC 8259 JSON only: NaN, Infinity and numbers beyond double range are refused, because no database
    JSON column (nor most consumers) can hold them."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as error:
        raise ValueError(json_error_text(error)) from None
