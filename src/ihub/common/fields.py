"""Field types shared by the API shapes of several domains."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import StringConstraints

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
