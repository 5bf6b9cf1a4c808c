"""Field types shared by the API shapes of several domains."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints
from pydantic_core import PydanticCustomError

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=10_000)]


def json_text(value: Any) -> Any:
    """Form-encoded bodies carry objects and arrays as JSON text; JSON bodies carry them as they are.
    Use as `BeforeValidator(json_text)`."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("must be JSON (form fields carry objects and arrays as JSON text)") from None
    return value


def iso_time(value: Any) -> Any:
    """A time must be ISO 8601 text. Pydantic alone also reads a number, or text of digits, as Unix seconds:
    `since=20260101` (a date typed without dashes) would silently mean 1970-08-23T03:28:21Z and list the wrong
    runs. Use as `BeforeValidator(iso_time)` (the `IsoTime` type)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
    # A custom error: its message is shown as is (a ValueError's would start with "Value error, ").
    raise PydanticCustomError("iso_time", "must be an ISO 8601 date and time with a zone, e.g. 2026-01-01T00:00:00Z")


IsoTime = Annotated[datetime, BeforeValidator(iso_time)]
