"""`http`: calls an API, through a project connection (credentials, base URL) or at a literal URL.

Its record is written before the request goes out (see StepType.side_effects): a worker that dies mid-call
leaves an `interrupted` attempt behind, and the resumed run sends the request again with the same
`Idempotency-Key: <run uid>-<step path>` so the target can deduplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from ihub.egress import DeadlineExceeded, EgressRefused, FetchedResponse, FetchLimits, ResponseTooLarge, fetch
from ihub.flows.connections import (
    ROUTING_HEADERS,
    ConnectionError_,
    build_url,
    fields_of,
    prepare_auth,
    redact_headers,
    same_origin,
)
from ihub.flows.steps.base import StepContext, StepError, StepModel, StepType
from ihub.flows.steps.fields import (
    Number,
    TemplatedObject,
    TemplatedText,
    TemplatedValue,
    problem,
    text_checker,
)
from ihub.flows.steps.values import as_text, dumps, json_safe, summarize

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _check_method(value: Any) -> Any:
    if not isinstance(value, str) or value.upper() not in HTTP_METHODS:
        raise problem(f"must be one of {', '.join(HTTP_METHODS)}")
    return value.upper()


def _check_expect(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise problem("must be a status code or a non-empty list of status codes")
    for index, status in enumerate(value):
        if isinstance(status, bool) or not isinstance(status, int):
            raise problem("must be an integer", f"[{index}]")
        if not 100 <= status <= 599:
            raise problem("must be between 100 and 599", f"[{index}]")
    return list(value)


_slot_name = text_checker(max_len=100)


def _check_connection(value: Any) -> Any:
    return None if value is None else _slot_name(value)


class HttpStep(StepModel):
    """Calls an API. Output: the response body (JSON parsed)."""

    null_is_a_value: ClassVar[frozenset[str]] = frozenset({"json"})

    type: Literal["http"]
    connection: Annotated[str | None, BeforeValidator(_check_connection)] = Field(
        None, description="Connection slot id: credentials and `baseUrl` come from the project's connection."
    )
    method: Annotated[HttpMethod, BeforeValidator(_check_method)] = Field("GET", description="HTTP method.")
    url: Annotated[str | None, TemplatedText(4000)] = Field(
        None, description="Absolute URL (template); without a connection, required."
    )
    path: Annotated[str | None, TemplatedText(4000)] = Field(
        None, description="Joined to the connection's `baseUrl` (template)."
    )
    query: TemplatedObject | None = Field(None, description="Query parameters (templates); null values are left out.")
    headers: TemplatedObject | None = Field(None, description="Request headers (templates).")
    json_body: TemplatedValue = Field(None, alias="json", description="A JSON body (templates inside).")
    body: Annotated[str | None, TemplatedText(1_000_000, allow_empty=True)] = Field(
        None, description="A text body (template)."
    )
    expect: Annotated[list[int], BeforeValidator(_check_expect)] = Field(
        default_factory=lambda: [200, 201, 202, 204], description="Statuses that count as success."
    )
    timeout: Annotated[float, Number(0.1, 300)] = Field(
        30.0, description="Seconds: one deadline over the token fetch, connecting, sending and the whole answer."
    )

    @field_validator("connection")
    @classmethod
    def _known_slot(cls, slot: str | None, info: ValidationInfo) -> str | None:
        slots = (info.context or {}).get("slots")
        if slot is not None and slots is not None and slot not in slots:
            known = ", ".join(sorted(slots)) or "none"
            raise problem(f"unknown connection slot {slot!r} (slots: {known})")
        return slot

    @model_validator(mode="after")
    def _one_target_one_body(self) -> HttpStep:
        given = self.model_fields_set
        if "url" in given and "path" in given:
            raise _at("url", "give either url or path, not both")
        if self.connection is None and "url" not in given:
            raise _at("url", "required when the step has no connection")
        if "json_body" in given and "body" in given:
            raise _at("body", "give either json or body, not both")
        return self

    def connections(self) -> set[str]:
        return {self.connection} if self.connection is not None else set()


def _at(field: str, message: str) -> Exception:
    # A model-level check names the field it is about (the converter appends the subpath).
    return problem(message, f".{field}")


async def run(step: HttpStep, ctx: StepContext) -> dict[str, Any]:
    runtime: dict[str, Any] = {"type": "http", "config": {}, "secrets": {}}
    if step.connection is not None:
        runtime = await ctx.connection(step.connection)
        await ctx.yield_to_writers()  # rendering is CPU work
    fields = fields_of(runtime)
    target_path = ctx.render(step.path) if step.path is not None else None
    target_url = ctx.render(step.url) if step.url is not None else None
    try:
        url = build_url(fields, target_path and str(target_path), target_url and str(target_url))
    except ConnectionError_ as error:
        raise StepError("config", str(error)) from None
    query = {str(k): as_text(v) for k, v in (ctx.render(step.query or {})).items() if v is not None}
    headers = {str(k): as_text(v) for k, v in (ctx.render(step.headers or {})).items() if v is not None}
    if step.connection is not None and (routing := ROUTING_HEADERS & {name.strip().lower() for name in headers}):
        raise StepError("config", f"header {min(routing)!r} cannot be set beside a connection's credentials")
    headers.setdefault("Idempotency-Key", f"{ctx.run_uid}-{ctx.path}")
    content: bytes | None = None
    if "json_body" in step.model_fields_set:
        headers.setdefault("Content-Type", "application/json")
        content = dumps(ctx.render(step.json_body)).encode()
    elif step.body is not None:
        content = as_text(ctx.render(step.body)).encode()
    record = ctx.record
    record.request = _request_summary(ctx, step.method, url, query, headers, content)
    response = await _send(ctx, step, runtime, Outgoing(url, query, headers, content))
    await ctx.yield_to_writers()  # parsing and redacting a 10 MiB answer is CPU work
    body = _parse_body(response)
    response_state = {
        "status": response.status_code,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "body": body,
    }
    record.response = ctx.redacted(
        {
            "status": response.status_code,
            "headers": redact_headers(dict(response.headers)),
            "body": summarize(ctx.redacted(json_safe(body))),
        }
    )
    state = {"response": response_state, "output": body}
    if response.status_code not in step.expect:
        raise StepError(
            "status",
            f"HTTP {response.status_code} from {step.method} {_shown(ctx, url)}"
            f" (expected {', '.join(map(str, step.expect))})",
            response.status_code,
            state,
        )
    return state


def _request_summary(
    ctx: StepContext, method: str, url: str, query: dict[str, str], headers: dict[str, str], content: bytes | None
) -> dict[str, Any]:
    body = content.decode("utf-8", "replace") if content else None
    summary = {
        "method": method,
        "url": url,
        "query": query,
        "headers": redact_headers(headers),
        "body": summarize(ctx.redacted(body)),
    }
    redacted: dict[str, Any] = ctx.redacted(summary)  # redaction keeps a dict a dict
    return redacted


@dataclass(frozen=True)
class Outgoing:
    """The rendered request, before the connection's credentials are added."""

    url: str
    query: dict[str, str]
    headers: dict[str, str]
    content: bytes | None


async def _send(ctx: StepContext, step: HttpStep, runtime: dict[str, Any], request: Outgoing) -> FetchedResponse:
    try:
        # The step's timeout is one deadline over everything it waits for: the token fetch, connecting,
        # sending, and every byte of the answer (inner fetches carry it too, as their own limit).
        async with asyncio.timeout(step.timeout):
            return await _send_within_deadline(ctx, step, runtime, request)
    except TimeoutError:
        raise StepError("timeout", f"timed out after {step.timeout:g}s: {_shown(ctx, request.url)}") from None


async def _send_within_deadline(
    ctx: StepContext, step: HttpStep, runtime: dict[str, Any], request: Outgoing
) -> FetchedResponse:
    http, tokens = ctx.http, ctx.tokens
    url, query, headers, content = request.url, request.query, request.headers, request.content
    limits = FetchLimits(step.timeout, ctx.max_response_bytes)
    for attempt in (1, 2):
        try:
            auth = await prepare_auth(http, tokens, runtime, url, limits)
        except ConnectionError_ as error:
            raise StepError(error.kind, ctx.redact(str(error))) from None
        ctx.add_secrets(auth.secrets)
        sent_query, sent_headers = {**query, **auth.params}, {**auth.headers, **headers}
        ctx.record.request = _request_summary(ctx, step.method, url, sent_query, sent_headers, content)
        shown = _shown(ctx, url)
        try:
            response = await fetch(
                http,
                step.method,
                url,
                deadline=limits.deadline,
                max_bytes=limits.max_bytes,
                params=sent_query or None,
                headers=sent_headers,
                content=content,
            )
        except EgressRefused as error:
            raise StepError("egress", f"not sent to {shown}: {ctx.redact(str(error))}") from None
        except DeadlineExceeded:
            raise StepError("timeout", f"timed out after {step.timeout:g}s: {shown}") from None
        except ResponseTooLarge as error:
            raise StepError(
                "too_large", f"{shown}: {error} (IHUB_HTTP_MAX_RESPONSE_BYTES); the rest was not read"
            ) from None
        except httpx.InvalidURL:
            raise StepError("config", f"not a valid URL: {shown}") from None
        except httpx.ConnectError as error:
            raise StepError("connect", f"cannot connect to {shown}: {error}") from None
        except httpx.HTTPError as error:
            raise StepError("network", f"{type(error).__name__} calling {shown}: {error}") from None
        auth_type = fields_of(runtime).get("authType")
        if response.status_code == 401 and auth_type == "oauth2_client_credentials" and attempt == 1:
            # The token may have been revoked or expired early: fetch a fresh one, once.
            tokens.invalidate(fields_of(runtime))
            continue
        user_tokens = tokens.user_tokens
        if (
            response.status_code == 401
            and auth_type == "oauth2_authorization_code"
            and attempt == 1
            and user_tokens is not None
            and same_origin(str(fields_of(runtime).get("baseUrl") or ""), url)
        ):
            # Expired early or revoked: refresh once (a refused refresh means a person must reconnect).
            try:
                await user_tokens.access_token(http, runtime, limits, force=True)
            except ConnectionError_ as error:
                raise StepError(error.kind, ctx.redact(str(error))) from None
            continue
        return response
    raise AssertionError("unreachable")


def _shown(ctx: StepContext, url: str) -> str:
    """A target URL as a run record may show it: no query string, no known secret."""
    return ctx.redact(url.split("?", 1)[0])


def _parse_body(response: FetchedResponse) -> Any:
    if not response.content:
        return None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type:
        try:
            return response.json()
        except ValueError:
            pass
    return response.text


STEP = StepType(HttpStep, run, "Calls an API.", side_effects=True, waits=True)
