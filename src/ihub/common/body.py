"""Request bodies: JSON or form-encoded (the seed clients send both), validated into pydantic models.

Routes declare `body: Model = json_or_form(Model)` and `openapi_extra=request_body(Model)` so the
OpenAPI document shows both media types with the model's schema.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from pydantic import TypeAdapter, ValidationError

from ihub.common.errors import ApiError
from ihub.common.json_errors import json_error_text

T = TypeVar("T")

JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"

# Every type used as a request body, by schema name, for the OpenAPI document.
BODY_SCHEMAS: dict[str, TypeAdapter[Any]] = {}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _nul_location(value: Any) -> tuple[int | str, ...] | None:
    """Where the first string holding a NUL character is (keys included), or None. Iterative: JSON may
    nest almost as deep as the parser's recursion limit."""
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return loc
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if "\x00" in str(key):
                    return (*loc, str(key).replace("\x00", "\\0"))
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, index), child) for index, child in reversed(list(enumerate(item))))
    return None


def refuse_nul(data: Any, prefix: tuple[int | str, ...] = ()) -> Any:
    """PostgreSQL text cannot hold NUL, and no name, email or setting needs one: refuse it up front (400)
    rather than let a query fail later with a database error."""
    loc = _nul_location(data)
    if loc is not None:
        field = location(prefix + loc)
        api_error = ApiError(400, f"{field}: text must not contain NUL characters", "validation_error")
        api_error.fields = [{"field": field, "message": "text must not contain NUL characters"}]
        raise api_error
    return data


async def read_body(request: Request) -> Any:
    """The parsed body: JSON (also when no content type is given) or form fields; 415 for anything else."""
    return refuse_nul(await parse_body(request))


async def parse_body(request: Request) -> Any:
    """Like `read_body` without the NUL check; the caller must run `refuse_nul` on what it keeps."""
    raw = await request.body()
    kind = media_type(request)
    if kind == FORM_TYPE:
        return dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    if kind == MULTIPART_TYPE:
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    if kind in JSON_TYPES or kind.endswith("+json") or kind == "":
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"body is not valid JSON: {json_error_text(error)}", "invalid_json") from None
        except RecursionError:
            raise ApiError(400, "body is not valid JSON: nested too deeply", "invalid_json") from None
    raise ApiError(
        415, f"unsupported content type {kind!r}: send application/json or {FORM_TYPE}", "unsupported_media_type"
    )


def location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def validation_error(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> ApiError:
    """One readable line per bad field: `users[1].email: value is not a valid email address`."""
    fields = []
    for item in error.errors(include_url=False):
        # Union branches add their type name to the location; it means nothing to a client.
        loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        fields.append({"field": location(prefix + loc), "message": message})
    text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    api_error = ApiError(400, text, "validation_error")
    api_error.fields = fields
    return api_error


def validate_as(kind: Any, data: Any) -> Any:
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as error:
        raise validation_error(error) from None


def json_or_form(kind: type[T] | Any) -> Any:
    """A dependency that reads the body as JSON or a form and validates it as `kind`."""
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    async def dependency(request: Request) -> Any:
        data = await read_body(request)
        try:
            return adapter.validate_python(data)
        except ValidationError as error:
            raise validation_error(error) from None

    return Depends(dependency)


def schema_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)


def request_body(
    kind: Any, name: str | None = None, example: Any = None, form: bool = True, required: bool = True
) -> dict[str, Any]:
    """`openapi_extra` describing the body (registered for the components section)."""
    name = name or schema_name(kind)
    BODY_SCHEMAS[name] = TypeAdapter(kind)
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{name}"}}
    if example is not None:
        media["example"] = example
    content = {"application/json": media}
    if form:
        form_media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{name}"}}
        # A form carries one flat object: for an array body, show its first element.
        form_example = example[0] if isinstance(example, list) and example else example
        if isinstance(form_example, dict):
            form_media["example"] = form_example
        content[FORM_TYPE] = form_media
    return {"requestBody": {"required": required, "content": content}}


def add_body_schemas(openapi: dict[str, Any]) -> None:
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, adapter in BODY_SCHEMAS.items():
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    _replace_422(openapi)


def _replace_422(openapi: dict[str, Any]) -> None:
    """FastAPI documents a 422 it never sends here: validation errors are rendered as 400 envelopes."""
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    uses_error_model = False
    for path, operations in openapi.get("paths", {}).items():
        # /incoming and /{env}/incoming answer RFC 6749 errors, documented by their own routes.
        oauth = "incoming" in path.strip("/").split("/")[:2]
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and not oauth:
                responses.setdefault(
                    "400", {"description": "Bad Request", "content": {"application/json": {"schema": error_ref}}}
                )
            uses_error_model = uses_error_model or "400" in responses
    schemas = openapi.get("components", {}).get("schemas", {})
    if uses_error_model and "ErrorResponse" not in schemas:
        from ihub.common.responses import ErrorResponse

        schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas["ErrorResponse"] = schema
    text = repr(openapi.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
