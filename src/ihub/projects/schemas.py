"""API shapes of projects and their connections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ihub.common.fields import Description, Name, json_text
from ihub.common.ids import IdIn, IdOut, parse_id
from ihub.common.jsonbounds import bounded_json

# Bounded before anything is stored: settings are read back by every project read and every run.
Settings = Annotated[dict[str, Any], BeforeValidator(json_text), AfterValidator(bounded_json())]
# Each entry is checked by the service (its fields depend on the slot's connection type).
ConnectionsIn = Annotated[list[Any], BeforeValidator(json_text), AfterValidator(bounded_json())]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"name": "Best Project Ever", "description": "Tickets to Jira", "templateId": "3"}]
        },
    )

    name: Name
    description: Description = ""
    template_id: IdIn = Field(alias="templateId")
    settings: Settings | None = None


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"connections": [{"id": "jira", "details": {"type": "jira"}}]},
                {
                    "connections": [
                        {
                            "id": "jira",
                            "type": "jira",
                            "siteUrl": "https://acme.atlassian.net",
                            "email": "bot@acme.com",
                            "apiToken": "<token>",
                        }
                    ]
                },
            ]
        },
    )

    name: Name | None = None
    description: Description | None = None
    settings: Settings | None = Field(default=None, description="Project settings, `config` in flow expressions.")
    connections: ConnectionsIn | None = Field(
        default=None,
        description="`[{id: <slot id>, details: {type, ...fields}}]` or the fields directly on each entry; "
        "`null` clears a field, fields not mentioned are kept.",
    )


class TemplateConnectionOut(BaseModel):
    id: str
    type: str
    name: str
    fields: list[str]


class ConnectionOut(BaseModel):
    id: str = Field(description="The template slot id.")
    type: str
    name: str
    configured: bool
    config: dict[str, Any] = Field(description="Non-secret fields that are set.")
    secrets_set: list[str] = Field(serialization_alias="secretsSet", description="Secret fields that are set.")
    missing: list[str] = Field(description="Required fields not set yet.")
    status: str = Field(
        default="connected",
        description="connected | expiring | needs_reconnect | error (POST .../connection/{slot}/test checks it now).",
    )
    status_message: str | None = Field(
        default=None,
        serialization_alias="statusMessage",
        description="The provider's message for error and needs_reconnect.",
    )
    last_refreshed_at: datetime | None = Field(default=None, serialization_alias="lastRefreshedAt")
    last_used_at: datetime | None = Field(
        default=None, serialization_alias="lastUsedAt", description="When a run last used it (to the minute)."
    )


class ConnectionList(BaseModel):
    connections: list[ConnectionOut]


class FlowOut(BaseModel):
    id: IdOut = Field(description="The flow id (the `sub` of JWT triggers).")
    key: str
    name: str
    trigger: dict[str, Any]
    mode: str


class ProjectOut(BaseModel):
    id: IdOut
    name: str
    description: str
    org_id: IdOut = Field(serialization_alias="orgId")
    template_id: IdOut = Field(serialization_alias="templateId")
    template_version: int = Field(
        serialization_alias="templateVersion",
        description="The template version the project is pinned to (moved by POST /project/{id}/upgrade).",
    )
    settings: dict[str, Any]
    template_connections: list[TemplateConnectionOut] = Field(serialization_alias="templateConnections")
    connections: list[ConnectionOut]
    flows: list[FlowOut]
    created_at: datetime = Field(serialization_alias="createdAt")
    updated_at: datetime = Field(serialization_alias="updatedAt")


class ProjectList(BaseModel):
    projects: list[ProjectOut]


def _version_number(value: Any) -> int:
    """`2` or `"2"` (form bodies carry strings); booleans, floats and 0 are refused."""
    try:
        return parse_id(value)
    except ValueError:
        raise ValueError("must be a template version number (1, 2, ...)") from None


class ProjectUpgrade(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"version": 2}, {}]})

    version: Annotated[int, BeforeValidator(_version_number)] | None = Field(
        default=None,
        description="The template version to pin (lower than the current one rolls back); "
        "the template's latest when omitted.",
    )
