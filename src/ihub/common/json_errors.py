"""JSON parse errors worded for the client who sent the text."""

from __future__ import annotations

import json
import sys


def json_error_text(error: ValueError | RecursionError) -> str:
    """What is wrong with a JSON text, in a client's terms. Python words an integer longer than its conversion
    limit as advice to call `sys.set_int_max_str_digits()`, which means nothing to a client."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if not isinstance(error, json.JSONDecodeError) and "integer string conversion" in str(error):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(error)
