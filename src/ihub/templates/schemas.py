"""API shapes of templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ihub.common.fields import Description, Name, json_text
from ihub.common.ids import IdOut
from ihub.common.jsonbounds import MAX_DEFINITION_DEPTH, bounded_json

# Checked in depth by the service (JSON paths in errors); here only bounded, so it can always be read back.
Definition = Annotated[
    Any,
    BeforeValidator(json_text),
    AfterValidator(bounded_json(MAX_DEFINITION_DEPTH, max_bytes=None)),
    WithJsonSchema({"type": "object"}),
]

EXAMPLE_DEFINITION: dict[str, Any] = {
    "connections": [{"id": "jira", "type": "jira", "name": "Jira Cloud"}],
    "flows": [
        {
            "key": "create-issue",
            "name": "Create a Jira issue",
            "trigger": {"type": "jwt"},
            "mode": "async",
            "steps": [
                {
                    "id": "create",
                    "type": "http",
                    "connection": "jira",
                    "method": "POST",
                    "path": "/rest/api/3/issue",
                    "json": {"fields": {"summary": "{{ trigger.body.summary }}"}},
                }
            ],
        }
    ],
}


class TemplateCreate(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"name": "ServiceNow to Jira", "description": "", "definition": EXAMPLE_DEFINITION}]
        },
    )

    name: Name
    description: Description = ""
    definition: Definition = Field(description="`{connections: [{id, type, name, fields}], flows: [...]}`")


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"description": "v2"}]})

    name: Name | None = None
    description: Description | None = None
    definition: Definition | None = None


class SlotOut(BaseModel):
    id: str
    type: str
    name: str
    fields: list[str] = Field(description="Fields this slot needs beyond those its type requires.")


class TemplateOut(BaseModel):
    id: IdOut
    org_id: IdOut = Field(serialization_alias="orgId")
    name: str
    description: str
    version: int
    definition: dict[str, Any]
    connections: list[SlotOut] = Field(description="The connection slots a project fills in.")
    flows: list[dict[str, Any]]
    created_at: datetime = Field(serialization_alias="createdAt")
    updated_at: datetime = Field(serialization_alias="updatedAt")


class TemplateList(BaseModel):
    templates: list[TemplateOut]


class VersionOut(BaseModel):
    version: int
    created_at: datetime = Field(serialization_alias="createdAt")
    created_by: IdOut | None = Field(
        serialization_alias="createdBy", description="The user who saved it; null for imports and migrated versions."
    )
    flows: list[str] = Field(description="The flow keys this version defines.")


class VersionDetail(VersionOut):
    definition: dict[str, Any]


class VersionList(BaseModel):
    template_id: IdOut = Field(serialization_alias="templateId")
    latest: int
    versions: list[VersionOut]


class VersionOne(BaseModel):
    template_id: IdOut = Field(serialization_alias="templateId")
    versions: list[VersionDetail]
