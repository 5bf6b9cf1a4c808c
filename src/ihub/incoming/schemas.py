"""API shapes of the trigger page (`/api/v1/flow/{id}/trigger/jwt`) and the incoming endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ihub.common.fields import IsoTime
from ihub.common.ids import IdOut


class TriggerCreate(BaseModel):
    """Exactly one key source. With `iss`, the key is added to that existing client (rotation)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    generate_key: bool = Field(
        default=False,
        validation_alias=AliasChoices("generateKey", "generate_key"),
        description="ihub makes an RSA-2048 pair and returns the private key PEM once.",
    )
    public_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("publicKey", "public_key"),
        max_length=16_384,
        description="A PEM public key (RSA >= 2048 bits or EC P-256).",
    )
    jwks_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("jwksUrl", "jwks_url"),
        max_length=2000,
        description="https URL of the client's JWK Set.",
    )
    alg: str | None = Field(default=None, description="PS256 to register an RSA key for PS256 instead of RS256.")
    iss: str | None = Field(
        default=None,
        validation_alias=AliasChoices("iss", "clientId", "client_id"),
        max_length=64,
        description="Add the key to this existing client instead of creating a new one.",
    )
    expires_at: IsoTime | None = Field(
        default=None,
        validation_alias=AliasChoices("expiresAt", "expires_at"),
        description="When the key stops obtaining tokens (ISO 8601; without an offset it is UTC). Must be in the "
        "future and, when IHUB_TRIGGER_KEY_MAX_AGE_DAYS is set, within that many days.",
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        validation_alias=AliasChoices("expiresInDays", "expires_in_days"),
        description="The key expires this many days from now (instead of expiresAt).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TriggerCreate:
        sources = [self.generate_key, self.public_key is not None, self.jwks_url is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of generateKey: true, publicKey or jwksUrl")
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expiresAt or expiresInDays, not both")
        if self.jwks_url is not None and (self.expires_at is not None or self.expires_in_days is not None):
            raise ValueError("an expiry applies to a stored key (generateKey or publicKey), not to a JWKS URL")
        return self


class TriggerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("jwksUrl", "jwks_url"), max_length=2000)


class KeyUpdate(BaseModel):
    """A key's expiry: `expiresAt` (null clears it) or `expiresInDays`; changing it re-arms the expiry notice."""

    model_config = ConfigDict(extra="forbid")

    expires_at: IsoTime | None = Field(default=None, validation_alias=AliasChoices("expiresAt", "expires_at"))
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, validation_alias=AliasChoices("expiresInDays", "expires_in_days")
    )

    @model_validator(mode="after")
    def _one_change(self) -> KeyUpdate:
        if len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of expiresAt (a time, or null to clear it) or expiresInDays")
        return self


class KeyOut(BaseModel):
    kid: str
    alg: str
    source: str = Field(description="generated | uploaded | jwks")
    created_at: datetime | None = Field(default=None, serialization_alias="createdAt")
    revoked: bool
    revoked_at: datetime | None = Field(default=None, serialization_alias="revokedAt")
    expires_at: datetime | None = Field(
        default=None, serialization_alias="expiresAt", description="After it the key obtains no token; null: never."
    )
    expired: bool = False


class TriggerOut(BaseModel):
    iss: str = Field(description="Client id: the assertion's iss.")
    sub: str = Field(description="Flow id: the assertion's sub.")
    aud: str = Field(description="Token URL of the default env: the assertion's aud.")
    token_urls: dict[str, str] = Field(serialization_alias="tokenUrls", description="Token URL (= aud) per env.")
    webhook_url: str = Field(serialization_alias="webhookUrl")
    webhook_urls: dict[str, str] = Field(serialization_alias="webhookUrls")
    flow_id: IdOut = Field(serialization_alias="flowId")
    enabled: bool
    jwks_url: str | None = Field(default=None, serialization_alias="jwksUrl")
    keys: list[KeyOut]
    created_at: datetime = Field(serialization_alias="createdAt")
    kid: str | None = Field(default=None, description="Key id of the key just added.")
    private_key: str | None = Field(
        default=None,
        serialization_alias="privateKey",
        description="PEM private key, returned only in the response that generated it. Store it now.",
    )


class TriggersResponse(BaseModel):
    triggers: list[TriggerOut]


class AccessTokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class AcceptedRun(BaseModel):
    run_id: IdOut = Field(serialization_alias="runId")
    flow_id: IdOut = Field(serialization_alias="flowId")
    status: str
