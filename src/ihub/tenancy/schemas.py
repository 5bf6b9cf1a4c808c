"""API shapes of organizations and users."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, GetPydanticSchema
from pydantic_core import core_schema

from ihub.common.fields import Name
from ihub.common.ids import IdIn, IdOut
from ihub.tenancy.permissions import Role

# A role in a request body: validated as a string (so the schema and the "valid string" error stay those of
# a string), then parsed case-insensitively into the Role enum that the code after validation works with.
RoleIn = Annotated[
    Role,
    GetPydanticSchema(
        lambda _source, _handler: core_schema.no_info_after_validator_function(Role.parse, core_schema.str_schema())
    ),
]


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class OrgCreate(ApiModel):
    name: Name
    parent_id: IdIn | None = Field(default=None, alias="parentId")

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme EMEA", "parentId": "1"}]})


class OrgUpdate(ApiModel):
    name: Name | None = None
    parent_id: IdIn | None = Field(default=None, alias="parentId")

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Europe"}]})


class OrgOut(ApiModel):
    id: IdOut
    name: str
    parent_id: IdOut | None = Field(serialization_alias="parentId")
    created_at: datetime = Field(serialization_alias="createdAt")


class OrgList(BaseModel):
    organizations: list[OrgOut]


class UserCreate(ApiModel):
    name: Name
    email: EmailStr
    role: RoleIn = Field(json_schema_extra={"enum": ["Owner", "Admin", "Member"]})

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Sally Member", "email": "sally@example.com", "role": "Member"}]}
    )


class UserUpdate(ApiModel):
    name: Name | None = None
    email: EmailStr | None = None
    role: RoleIn | None = Field(default=None, json_schema_extra={"enum": ["Owner", "Admin", "Member"]})


class UserOut(ApiModel):
    id: IdOut
    name: str
    email: str
    role: str
    org_id: IdOut = Field(serialization_alias="orgId")
    has_key: bool = Field(default=False, serialization_alias="hasKey")
    created_at: datetime = Field(serialization_alias="createdAt")


class UserList(BaseModel):
    users: list[UserOut]
