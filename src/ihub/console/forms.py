"""Reading what people type into console forms: YAML or JSON documents in a textarea, and the path-prefixed
messages of a rejected input turned into errors shown next to the field they are about.

Only input handling lives here; what a definition, a setting or a connection may hold is decided by the
services, exactly as for `/api/v1`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from fastapi import Form
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError

# Form fields several pages share, with the same bounds as the API's (a longer input is a 400, not stored).
NameField = Annotated[str, Form(max_length=400)]
DescriptionField = Annotated[str, Form(max_length=20_000)]
# A YAML/JSON document typed into a textarea (a template definition, a trigger body).
DocumentField = Annotated[str, Form(max_length=1_000_000)]

# The errors a person fixes in the form itself (bad input, a name already taken): the form comes back with them.
FORM_ERRORS = frozenset({400, 409})


@dataclass
class FormAttempt:
    """What `form_errors` caught: None when the services accepted the form."""

    error: ApiError | None = None


@asynccontextmanager
async def form_errors(session: AsyncSession) -> AsyncIterator[FormAttempt]:
    """Run a form's service calls; an input error is rolled back (nothing of the form is stored) and kept in the
    attempt for the page to show at its fields, with what was typed. Any other error (403, 404 ...) propagates
    to the console's error page."""
    attempt = FormAttempt()
    try:
        yield attempt
    except ApiError as error:
        if error.status not in FORM_ERRORS:
            raise
        await session.rollback()
        attempt.error = error


@dataclass(frozen=True)
class FieldError:
    """One rejected input: the form field it belongs to, the path inside it (`definition.flows[0].key`) and why."""

    field: str
    path: str
    message: str


def parse_document(text: str, field: str) -> Any:
    """A YAML or JSON document (YAML is a superset of JSON); ApiError 400 at `field` when it does not parse or
    holds values JSON cannot (YAML dates, for one)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ApiError(400, f"{field}: not valid YAML or JSON{where}: {problem}", "invalid_document") from None
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ApiError(400, f"{field}: {error} (put such values in quotes)", "invalid_document") from None
    return value


def as_yaml(value: Any) -> str:
    """How a stored definition or settings object is shown for editing."""
    if value in (None, {}, []):
        return ""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=120)


def field_errors(error: ApiError, fields: tuple[str, ...]) -> list[FieldError]:
    """The error's messages, each placed at the form field its path starts with (`definition.flows[0]: ...` →
    `definition`); a message naming no field of the form is placed at "" (shown above the form)."""
    items = error.fields or [{"field": "", "message": error.message}]
    found = []
    for item in items:
        path, message = item["field"], item["message"]
        if not path and ": " in message:
            path, message = message.split(": ", 1)
        root = path.split(".", 1)[0].split("[", 1)[0]
        found.append(FieldError(root if root in fields else "", path, message))
    return found


def errors_by_field(errors: list[FieldError]) -> dict[str, list[FieldError]]:
    grouped: dict[str, list[FieldError]] = {}
    for item in errors:
        grouped.setdefault(item.field, []).append(item)
    return grouped
