"""The `Authorization` dependency for `/api/v1`: `<token>` or `Bearer <token>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from ihub.audit.recorder import Channel, begin_request
from ihub.common.context import Session
from ihub.common.errors import ApiError
from ihub.provisioning.service import authenticate
from ihub.tenancy.permissions import Principal

# Declared for OpenAPI ("Authorize" in /docs); the value is parsed below.
_authorization = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="The token from POST /api/v1/token, bare or as `Bearer <token>`.",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ihub"'}


def request_token(header: Annotated[str | None, Depends(_authorization)] = None) -> str:
    """The token of `Authorization: <token>` or `Bearer <token>`; 401 when there is none."""
    if not header or not header.strip():
        raise ApiError(
            401, "missing Authorization header: send the token from POST /api/v1/token", "unauthorized", _CHALLENGE
        )
    scheme, _, rest = header.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else header.strip()


async def current_principal(
    request: Request, token: Annotated[str, Depends(request_token)], session: Session
) -> Principal:
    # FastAPI resolves these in order: a request without a token is refused before it gets a session.
    # The request's own session (common/context.py get_session): a read-only one for GET, so authenticating a
    # read never takes or waits for SQLite's write lock; for a write, its unit of work, so the caller is looked up
    # in the same transaction that writes (a user deleted or demoted meanwhile cannot write on an old lookup).
    # That lookup is the write transaction's first statement; the handler's own first statement would take
    # the lock a moment later anyway, and the body has already been received (see get_session).
    principal = await authenticate(session, token)
    if principal is None:
        raise ApiError(
            401, "invalid or expired token: get a new one from POST /api/v1/token", "invalid_token", _CHALLENGE
        )
    # A write request's unit of work is recorded in the audit log (a read's session records nothing).
    begin_request(request, session, principal, Channel.API)
    return principal


Caller = Annotated[Principal, Depends(current_principal)]
