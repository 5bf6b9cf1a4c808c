"""API shapes of the trigger page (`/api/v1/flow/{id}/trigger/jwt`) and the incoming endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _one_source(self) -> TriggerCreate:
        sources = [self.generate_key, self.public_key is not None, self.jwks_url is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of generateKey: true, publicKey or jwksUrl")
        return self


class TriggerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("jwksUrl", "jwks_url"), max_length=2000)


class KeyOut(BaseModel):
    kid: str
    alg: str
    source: str = Field(description="generated | uploaded | jwks")
    created_at: datetime | None = Field(default=None, serialization_alias="createdAt")
    revoked: bool
    revoked_at: datetime | None = Field(default=None, serialization_alias="revokedAt")


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
