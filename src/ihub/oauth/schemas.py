"""API shapes of OAuth apps and of the authorize request."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ihub.common.ids import IdOut
from ihub.flows.connections import origin

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


def _url(value: str | None) -> str | None:
    if value is not None and (not value.lower().startswith(("https://", "http://")) or origin(value) is None):
        raise ValueError("must be an http:// or https:// URL")
    return value


Url = Annotated[str | None, StringConstraints(max_length=2000), AfterValidator(_url)]


class OAuthAppIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    client_id: Text = Field(alias="clientId")
    client_secret: Text = Field(alias="clientSecret", description="Stored encrypted; never returned.")
    authorize_url: Url = Field(None, alias="authorizeUrl", description="Overrides the provider's (generic: required).")
    token_url: Url = Field(None, alias="tokenUrl", description="Overrides the provider's (generic: required).")
    scope: Annotated[str | None, StringConstraints(max_length=2000)] = Field(
        None, description="Default scopes for this app's connections (else the provider's)."
    )


class OAuthAppOut(BaseModel):
    org_id: IdOut = Field(serialization_alias="orgId", description="The organization that owns the app.")
    provider: str
    client_id: str = Field(serialization_alias="clientId")
    authorize_url: str | None = Field(serialization_alias="authorizeUrl")
    token_url: str | None = Field(serialization_alias="tokenUrl")
    scope: str | None
    inherited: bool = Field(description="True when the app belongs to an ancestor organization.")
    updated_at: datetime = Field(serialization_alias="updatedAt")


class OAuthAppList(BaseModel):
    apps: list[OAuthAppOut]


class AuthorizeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    return_url: Annotated[str | None, StringConstraints(max_length=2000)] = Field(
        None, alias="returnUrl", description="Where the callback page links back to; only on this hub."
    )


class AuthorizeOut(BaseModel):
    authorization_url: str = Field(
        serialization_alias="authorizationUrl", description="Open it in the person's browser; single use."
    )
