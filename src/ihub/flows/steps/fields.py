"""Field types shared by the step models: each checks its value itself and fails with the message the
definition API has always given (`must be between 1 and 100`, `expression syntax error ...`), so a pydantic
error converts into `ApiError(400, "<json path>: <message>")` without rewording (ihub.flows.definition).

A validator that finds a problem inside a JSON value (a template deep in `set`) reports the inner path in the
error's `subpath` context; the converter appends it to the field's path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from ihub.flows.expressions import ExpressionError, check_expression, check_syntax

STEP_ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def problem(message: str, subpath: str = "") -> PydanticCustomError:
    """A validation error that keeps `message` as is (the client sees it after the JSON path)."""
    return PydanticCustomError("invalid_definition", "{message}", {"message": message, "subpath": subpath})


def text_checker(*, max_len: int = 10_000, allow_empty: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or (not value and not allow_empty):
            raise problem("must be a non-empty string" if not allow_empty else "must be a string")
        if len(value) > max_len:
            raise problem(f"must be at most {max_len} characters")
        return value

    return check


def number_checker(minimum: float, maximum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise problem("must be a number")
        if not minimum <= value <= maximum:
            raise problem(f"must be between {minimum:g} and {maximum:g}")
        return float(value)

    return check


def integer_checker(minimum: int, maximum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise problem("must be an integer")
        if not minimum <= value <= maximum:
            raise problem(f"must be between {minimum} and {maximum}")
        return value

    return check


def check_templates(value: Any, subpath: str = "") -> Any:
    """Syntax-check every string template in a JSON value (keys too); return the value unchanged."""
    if isinstance(value, str):
        try:
            check_syntax(value)
        except ExpressionError as error:
            raise problem(f"expression {error}", subpath) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_templates(key, f"{subpath}.{key}")
            check_templates(item, f"{subpath}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_templates(item, f"{subpath}[{index}]")
    return value


def check_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise problem("must be an object")
    return value


def check_expression_field(value: Any) -> str:
    """A Jinja expression (`a == 1`, with or without braces); booleans are accepted as `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = text_checker()(value)
    try:
        check_expression(text)
    except ExpressionError as error:
        raise problem(f"expression {error}") from None
    return text


def check_identifier(value: Any) -> str:
    if not isinstance(value, str) or not STEP_ID_PATTERN.match(value):
        raise problem("must match [A-Za-z_][A-Za-z0-9_]*")
    return value


def _text_then_templates(max_len: int, allow_empty: bool = False) -> Callable[[Any], str]:
    as_text = text_checker(max_len=max_len, allow_empty=allow_empty)

    def check(value: Any) -> str:
        text = as_text(value)
        check_templates(text)
        return text

    return check


def _object_then_templates(value: Any) -> dict[str, Any]:
    return check_templates(check_object(value))  # type: ignore[no-any-return]


def Text(max_len: int = 10_000, *, allow_empty: bool = False) -> Any:  # noqa: N802 - reads as a type
    """A string of at most `max_len` characters (non-empty unless `allow_empty`)."""
    return BeforeValidator(text_checker(max_len=max_len, allow_empty=allow_empty))


def TemplatedText(max_len: int = 10_000, *, allow_empty: bool = False) -> Any:  # noqa: N802
    """A string that may hold `{{ expressions }}`, syntax-checked."""
    return BeforeValidator(_text_then_templates(max_len, allow_empty))


@dataclass(frozen=True)
class Number:
    """Annotation: a number (not a bool) between `minimum` and `maximum`, shown as such in the JSON schema."""

    minimum: float
    maximum: float

    def checker(self) -> Callable[[Any], Any]:
        return number_checker(self.minimum, self.maximum)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.checker(), handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        value = handler(schema)
        value.update(minimum=self.minimum, maximum=self.maximum)
        return value


@dataclass(frozen=True)
class Integer(Number):
    """Annotation: an integer (not a bool) between `minimum` and `maximum`."""

    minimum: int
    maximum: int

    def checker(self) -> Callable[[Any], Any]:
        return integer_checker(self.minimum, self.maximum)


# A JSON object whose strings (keys and values, at any depth) may be templates.
TemplatedObject = Annotated[dict[str, Any], BeforeValidator(_object_then_templates)]
# Any JSON value whose strings may be templates.
TemplatedValue = Annotated[Any, BeforeValidator(check_templates)]
# A boolean Jinja expression or a value-producing one (`condition`, `items`).
Expression = Annotated[str, BeforeValidator(check_expression_field), Field(min_length=1)]
Identifier = Annotated[str, BeforeValidator(check_identifier), Field(pattern=STEP_ID_PATTERN.pattern)]
