"""HTTP for incoming triggers: the trigger page API, the RFC 7523 token endpoint and the webhook."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from ihub.common.body import json_or_form, read_body, request_body
from ihub.common.context import Context, Session, client_address, get_context
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.flows.reply import BODYLESS, InvalidReply, check_reply
from ihub.incoming import grant, service, throttle
from ihub.incoming.access import InvalidToken, incoming_state, key_expired
from ihub.incoming.schemas import AccessTokenResponse, KeyUpdate, TriggerCreate, TriggersResponse, TriggerUpdate
from ihub.incoming.webhook import accept, wait_for
from ihub.observability import metrics
from ihub.provisioning.deps import Caller
from ihub.runs.status import RunStatus

router = APIRouter()

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(BaseModel):
    """RFC 6749 §5.2 / RFC 6750 §3 error body."""

    error: str
    error_description: str


def oauth_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OAuthError} for status in statuses}


REALM = 'Bearer realm="ihub"'


# --- trigger page (the console's trigger page calls the same service functions) ------------------------


@router.post(
    "/api/v1/flow/{flow_id}/trigger/jwt",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(400, 401, 403, 404, 409),
    openapi_extra=request_body(TriggerCreate, example={"generateKey": True}),
)
async def create_trigger(
    flow_id: str,
    response: Response,
    caller: Caller,
    context: Context,
    session: Session,
    body: TriggerCreate = json_or_form(TriggerCreate),
) -> TriggersResponse:
    """Create a JWT trigger client for a flow (or, with `iss`, add a key to one). A generated private key
    is returned once, in this response only."""
    created = await service.create_trigger(session, context, caller, path_id(flow_id, "flow"), body)
    response.headers.update(NO_STORE)
    return TriggersResponse(triggers=[created])


@router.get(
    "/api/v1/flow/{flow_id}/trigger/jwt",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(401, 404),
)
async def show_triggers(flow_id: str, caller: Caller, context: Context, session: Session) -> TriggersResponse:
    """What a client needs to call this flow: iss, sub, aud (token URL per env), webhook URLs, key ids."""
    return TriggersResponse(triggers=await service.show_triggers(session, context, caller, path_id(flow_id, "flow")))


@router.put(
    "/api/v1/flow/{flow_id}/trigger/jwt/{iss}",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(400, 401, 403, 404),
    openapi_extra=request_body(TriggerUpdate, example={"enabled": False}),
)
async def update_trigger(
    flow_id: str,
    iss: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: TriggerUpdate = json_or_form(TriggerUpdate),
) -> TriggersResponse:
    """Enable or disable a trigger client (tokens stop within 5 seconds), or change its JWKS URL."""
    updated = await service.update_trigger(
        session, context, caller, path_id(flow_id, "flow"), iss, enabled=body.enabled, jwks_url=body.jwks_url
    )
    return TriggersResponse(triggers=[updated])


@router.put(
    "/api/v1/flow/{flow_id}/trigger/jwt/{iss}/key/{kid}",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(400, 401, 403, 404),
    openapi_extra=request_body(KeyUpdate, example={"expiresAt": "2027-06-30T00:00:00Z"}),
)
async def update_key(
    flow_id: str,
    iss: str,
    kid: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: KeyUpdate = json_or_form(KeyUpdate),
) -> TriggersResponse:
    """Set (`expiresAt`, `expiresInDays`) or clear (`expiresAt: null`) one stored key's expiry; a new expiry
    re-arms the `trigger.key_expiring` event."""
    updated = await service.update_trigger_key(session, context, caller, path_id(flow_id, "flow"), iss, kid, body)
    return TriggersResponse(triggers=[updated])


@router.delete(
    "/api/v1/flow/{flow_id}/trigger/jwt/{iss}/key/{kid}",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(401, 403, 404),
)
async def revoke_key(
    flow_id: str, iss: str, kid: str, caller: Caller, context: Context, session: Session
) -> TriggersResponse:
    """Revoke one key: assertions signed with it are refused, and tokens it obtained stop within 5 seconds."""
    revoked = await service.revoke_trigger_key(session, context, caller, path_id(flow_id, "flow"), iss, kid)
    return TriggersResponse(triggers=[revoked])


@router.delete(
    "/api/v1/flow/{flow_id}/trigger/jwt/{iss}",
    response_model=TriggersResponse,
    response_model_exclude_none=True,
    tags=["triggers"],
    responses=errors(401, 403, 404),
)
async def delete_trigger(
    flow_id: str, iss: str, caller: Caller, context: Context, session: Session
) -> TriggersResponse:
    """Delete a trigger client with its keys; its tokens stop within 5 seconds."""
    deleted = await service.delete_trigger(session, context, caller, path_id(flow_id, "flow"), iss)
    return TriggersResponse(triggers=[deleted])


# --- RFC 7523 token endpoint -----------------------------------------------------------------------


def resolve_env(request: Request, env: str | None) -> str:
    envs = get_context(request).settings.incoming_envs
    if env is None:
        return envs[0]
    if env not in envs:
        raise ApiError(404, f"no environment {env!r}: use one of {', '.join(envs)}", "not_found")
    return env


async def _token(request: Request, context: Context, env: str | None) -> JSONResponse:
    resolved = resolve_env(request, env)
    try:
        form = await read_body(request)
    except ApiError as error:
        if error.status == 413:
            raise
        raise grant.invalid_request(error.message) from None
    state = incoming_state(context)
    audience = context.settings.public_url + request.url.path
    limits = throttle.failure_limits(context.settings, throttle.claimed_issuer(form), client_address(request))
    max_bytes = context.settings.incoming_max_assertion_bytes
    try:
        # Reads (mostly from caches) and the signature check hold no write lock; the jti insert alone does.
        async with context.readers() as session:
            await throttle.refuse_if_limited(session, limits, state.clean_addresses)
        verified = await grant.verify(context.readers, state, audience=audience, form=form, max_bytes=max_bytes)
        await grant.spend_jti(state, verified)
    except ApiError as error:
        if error.status in (400, 401):
            async with context.sessions() as session:
                await throttle.count_failure(session, limits, state.clean_addresses)
        raise
    issued = grant.issue(state, verified, resolved)
    body = AccessTokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)
    return JSONResponse(body.model_dump(), headers=NO_STORE)


_TOKEN_DOC: dict[str, Any] = {
    "tags": ["incoming"],
    "responses": oauth_errors(400, 401, 404, 413, 429),
    "response_model": AccessTokenResponse,
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                media: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type", "assertion"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": list(grant.GRANT_TYPES)},
                            "assertion": {"type": "string", "description": "JWT signed with the client's key"},
                        },
                    },
                    "example": {"grant_type": grant.GRANT_TYPES[0], "assertion": "eyJhbGciOiJSUzI1NiIs...(RS256 JWT)"},
                }
                for media in ("application/json", "application/x-www-form-urlencoded")
            },
        }
    },
}


async def _counted_token(request: Request, context: Context, env: str | None) -> JSONResponse:
    """`_token`, counted by outcome: issued, or rejected with the RFC 6749 §5.2 error code it answered."""
    try:
        response = await _token(request, context, env)
    except ApiError as error:
        metrics.incoming("token", "rejected", error.code)
        raise
    except Exception:
        metrics.incoming("token", "rejected", "internal_error")
        raise
    metrics.incoming("token", "accepted", "issued")
    return response


@router.post("/incoming/token", **_TOKEN_DOC)
async def token_default(request: Request, context: Context) -> JSONResponse:
    """RFC 7523 JWT bearer grant for the default environment."""
    return await _counted_token(request, context, None)


@router.post("/{env}/incoming/token", **_TOKEN_DOC)
async def token_env(env: str, request: Request, context: Context) -> JSONResponse:
    """RFC 7523 JWT bearer grant: exchange a signed assertion for an access token (RFC 6749 §5.2 errors)."""
    return await _counted_token(request, context, env)


# --- webhook ----------------------------------------------------------------------------------------


def _unauthorized(message: str, with_error: bool = True) -> ApiError:
    """RFC 6750 §3: no credentials → a bare challenge; bad credentials → error="invalid_token"."""
    challenge = f'{REALM}, error="invalid_token", error_description="{message}"' if with_error else REALM
    return ApiError(401, message, "invalid_token", {"WWW-Authenticate": challenge})


async def _webhook(request: Request, env: str | None) -> Response:
    context = request.app.state.context
    resolved = resolve_env(request, env)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <access_token> from /incoming/token", with_error=False)
    state = incoming_state(context)
    try:
        claims = state.tokens.verify(token)
    except InvalidToken as error:
        raise _unauthorized(str(error)) from None
    if claims.env != resolved:
        raise _unauthorized(f"token was issued for env {claims.env}, not {resolved}")
    client = await state.clients.get(context.readers, claims.client_id)
    if client is None or not client.enabled:
        raise _unauthorized("the trigger client is disabled or deleted")
    if client.flow_id != claims.flow_id or not client.triggerable:
        raise _unauthorized("the flow no longer accepts this trigger")
    if claims.key_id in client.revoked_kids:
        raise _unauthorized("the key that obtained this token is revoked")
    if key_expired(client.key_expiry(claims.key_id), time.time()):
        raise _unauthorized("the key that obtained this token has expired: register a new key for this client")

    raw = await request.body()
    try:
        accepted = await accept(
            context,
            client,
            env=resolved,
            raw=raw,
            content_type=request.headers.get("content-type", ""),
            headers=request.scope["headers"],
            idempotency_key=request.headers.get("idempotency-key"),
        )
    except IntegrityError:
        # The flow or client was deleted after the state was cached: the token names nothing any more.
        state.clients.invalidate(claims.client_id)
        raise _unauthorized("the flow of this token no longer exists") from None
    metrics.incoming("webhook", "accepted", "duplicate" if accepted.duplicate else "new")
    ids = {"runId": str(accepted.run_id), "flowId": str(accepted.flow_id)}
    if not client.sync:
        return JSONResponse({**ids, "status": accepted.status}, status_code=202)
    outcome = await wait_for(context, accepted.run_id, client.timeout)
    if outcome is None:
        return JSONResponse({**ids, "status": RunStatus.RUNNING, "timedOut": True}, status_code=202)
    return sync_reply(ids, outcome.status, outcome.result, outcome.error)


def sync_reply(ids: dict[str, str], status: str, result: Any, error: str | None) -> Response:
    """The respond step's reply, checked again here (a run stored before the checks existed, or by another
    version, must not write a malformed response); without a reply, or with a bad one, a run summary."""
    if status == RunStatus.SUCCEEDED and result is not None:
        try:
            reply = check_reply(result)
        except InvalidReply as invalid:
            status, result, error = RunStatus.FAILED, None, f"invalid reply: {invalid}"
        else:
            headers = {**reply["headers"], **ids_headers(ids)}
            if reply["status"] in BODYLESS:
                return Response(status_code=reply["status"], headers=headers)
            return JSONResponse(reply["body"], status_code=reply["status"], headers=headers)
    code = 200 if status == RunStatus.SUCCEEDED else 502
    return JSONResponse({**ids, "status": status, "result": result, "error": error}, status_code=code)


def ids_headers(ids: dict[str, str]) -> dict[str, str]:
    return {"X-Ihub-Run-Id": ids["runId"]}


_WEBHOOK_DOC: dict[str, Any] = {
    "tags": ["incoming"],
    "responses": {
        **oauth_errors(400, 401, 404, 413),
        200: {"description": "sync flow: the respond step's answer (its status, headers and JSON body)"},
        502: {
            "description": "sync flow: the run failed, or its respond step set a reply ihub refuses to send "
            "(a 1xx status, a connection header, a line break or non-latin-1 text in a header, a non-finite "
            'number): `{runId, flowId, status: "failed", result, error}` with the reason in `error`'
        },
    },
    "status_code": 202,
    "openapi_extra": {
        "requestBody": {"required": False, "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}}}
    },
}


async def _counted_webhook(request: Request, env: str | None) -> Response:
    """`_webhook`, its rejections counted by error code (an accepted one counts itself, once its run is stored)."""
    try:
        return await _webhook(request, env)
    except ApiError as error:
        metrics.incoming("webhook", "rejected", error.code)
        raise
    except Exception:
        metrics.incoming("webhook", "rejected", "internal_error")
        raise


@router.post("/incoming/webhook/jwt", **_WEBHOOK_DOC)
async def webhook_default(request: Request) -> Response:
    """Start the flow of the token's client with this body (default environment)."""
    return await _counted_webhook(request, None)


@router.post("/{env}/incoming/webhook/jwt", **_WEBHOOK_DOC)
async def webhook_env(env: str, request: Request) -> Response:
    """Start the flow of the token's client with this body. Async flows: 202 {runId, flowId, status}."""
    return await _counted_webhook(request, env)
