"""API shapes of the token exchange and key generation."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from ihub.common.ids import IdIn, IdOut

# Unreserved URL characters plus ':' (a time-based UUID fits). Besides keeping nonces printable, the
# alphabet makes SHA-256 length extension useless: forged padding bytes (0x80, 0x00...) cannot appear.
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9._~:-]{8,128}$")


class TokenRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"userId": "1", "nonce": "6f1c2a4e-8d1e-11ef-b864-0242ac120002", "hash": "<64 hex chars>"}]
        }
    )

    user_id: IdIn = Field(validation_alias=AliasChoices("userId", "id", "user_id"), serialization_alias="userId")
    nonce: Annotated[str, StringConstraints(pattern=NONCE_PATTERN.pattern)] = Field(
        description="8-128 characters of [A-Za-z0-9._~:-], never reused"
    )
    hash: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9a-fA-F]{64}$")] = Field(
        description="hex SHA-256 of secret + nonce (UTF-8)"
    )


class TokenOut(BaseModel):
    token: str
    expires: datetime
    expires_in: int = Field(serialization_alias="expiresIn")
    user_id: IdOut = Field(serialization_alias="userId")


class TokenResponse(BaseModel):
    tokens: list[TokenOut]
    token: list[TokenOut] = Field(description="The same list as `tokens` (read by the JavaScript sample client).")


class KeyOut(BaseModel):
    user_id: IdOut = Field(serialization_alias="userId")
    secret: str = Field(description="Shown once; store it now.")
    created_at: datetime = Field(serialization_alias="createdAt")


class KeyResponse(BaseModel):
    keys: list[KeyOut]
