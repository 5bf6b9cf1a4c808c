"""The `Authorization` dependency for `/api/v1`: `<token>` or `Bearer <token>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

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


async def current_principal(
    request: Request, header: Annotated[str | None, Depends(_authorization)] = None
) -> Principal:
    if not header or not header.strip():
        raise ApiError(
            401, "missing Authorization header: send the token from POST /api/v1/token", "unauthorized", _CHALLENGE
        )
    scheme, _, rest = header.strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header.strip()
    # Read-only: authenticating a GET must not queue behind (or take) the database's write lock.
    async with request.app.state.context.readers() as session:
        principal = await authenticate(session, token)
    if principal is None:
        raise ApiError(
            401, "invalid or expired token: get a new one from POST /api/v1/token", "invalid_token", _CHALLENGE
        )
    return principal


Caller = Annotated[Principal, Depends(current_principal)]
