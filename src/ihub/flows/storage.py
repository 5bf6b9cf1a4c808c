"""What a run may store: step state and results go into JSON columns on SQLite and PostgreSQL.

Those columns keep finite numbers only (PostgreSQL refuses NaN and Infinity; SQLite stores them and reads them
back as null) and integers within 64 bits (SQLite's JSON functions, and most JSON parsers, turn larger ones into
imprecise floats). A value outside that is refused again on every retry, so a run holding one fails at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DataError, StatementError

MAX_STORED_INT = 2**63 - 1


def unstorable(value: Any) -> str | None:
    """Why a step's state or a run's result cannot be stored as JSON, or None if it can (iterative)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not -MAX_STORED_INT - 1 <= item <= MAX_STORED_INT:
                return "an integer beyond 64 bits (keep it as text, e.g. {{ value | string }})"
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return "a number that is not finite (NaN or Infinity)"
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def cannot_store(error: BaseException) -> bool:
    """A database or conversion error that would repeat on every retry (the data, not an outage, is at fault)."""
    if isinstance(error, DataError | OverflowError):
        return True
    return isinstance(error, StatementError) and isinstance(error.orig, OverflowError | ValueError)
