"""`POST /api/v1/token` and `POST /api/v1/user/{id}/key`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Context, Session, client_address
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.provisioning import service
from ihub.provisioning.deps import Caller
from ihub.provisioning.schemas import KeyOut, KeyResponse, TokenOut, TokenRequest, TokenResponse

router = APIRouter(prefix="/api/v1")


@router.post(
    "/token",
    response_model=TokenResponse,
    tags=["authentication"],
    responses=errors(400, 401, 429),
    openapi_extra=request_body(
        TokenRequest,
        example={"userId": "1", "nonce": "6f1c2a4e-8d1e-11ef-b864-0242ac120002", "hash": "9f86d08...(64 hex)"},
    ),
)
async def issue_token(
    request: Request,
    response: Response,
    context: Context,
    session: Session,
    body: TokenRequest = json_or_form(TokenRequest),
) -> TokenResponse:
    """Exchange `userId`, a one-time `nonce` and `hash = hex(sha256(secret + nonce))` for a token."""
    issued = await service.exchange(
        session,
        context.box,
        context.settings,
        user_id=body.user_id,
        nonce=body.nonce,
        hash_hex=body.hash,
        client=client_address(request),
    )
    response.headers["Cache-Control"] = "no-store"
    tokens = [
        TokenOut(token=issued.token, expires=issued.expires, expires_in=issued.expires_in, user_id=issued.user_id)
    ]
    return TokenResponse(tokens=tokens, token=tokens)


@router.post("/user/{user_id}/key", response_model=KeyResponse, tags=["users"], responses=errors(401, 403, 404))
async def generate_key(
    user_id: str, response: Response, caller: Caller, context: Context, session: Session
) -> KeyResponse:
    """Generate a new secret key for a user (Owners only). The secret is shown once; the old key stops working."""
    issued = await service.generate_key_for(session, context.box, caller, path_id(user_id, "user"))
    response.headers["Cache-Control"] = "no-store"
    return KeyResponse(keys=[KeyOut(user_id=issued.user_id, secret=issued.secret, created_at=issued.created_at)])
