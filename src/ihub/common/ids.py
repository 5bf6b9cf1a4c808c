"""Public ids are decimal strings; clients may send numbers or strings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from ihub.common.errors import ApiError

# Every id column is a 32-bit INTEGER; PostgreSQL fails a query comparing one with a larger number.
MAX_ID = 2**31 - 1


def parse_id(value: Any) -> int:
    """Accept `7`, `"7"`; reject booleans, floats, signs and anything non-decimal."""
    if isinstance(value, bool):
        raise ValueError("must be a decimal id")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError('must be a decimal id such as "1"')
    if not 1 <= number <= MAX_ID:
        raise ValueError(f"must be a decimal id from 1 to {MAX_ID}")
    return number


def path_id(value: str, kind: str) -> int:
    """Ids from the URL path: a malformed one names nothing, so it is a 404 like an unknown one."""
    try:
        return parse_id(value)
    except ValueError:
        # Quoted as sent, cut short: a client's 5,000-digit "id" need not come back whole.
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ApiError(404, f"{kind} {shown!r} not found", "not_found") from None


IdIn = Annotated[
    int,
    BeforeValidator(parse_id),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+$", "examples": ["1"]}),
]
IdOut = Annotated[int, PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string", "examples": ["1"]})]
