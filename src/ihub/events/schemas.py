"""API shapes of event endpoints and deliveries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ihub.common.ids import IdOut

MAX_URL_LENGTH = 2000
MAX_DESCRIPTION = 500


def _types_text(value: Any) -> Any:
    """A form sends the list as text: `run.failed, run.parked` or a JSON array."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return value
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


EventTypes = Annotated[list[Annotated[str, Field(max_length=64)]], BeforeValidator(_types_text), Field(max_length=32)]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]


class EndpointCreate(BaseModel):
    # Unknown fields are refused, not ignored: a misspelt `event_types` ignored would subscribe the endpoint to
    # every event type, a misspelt `enabled` would leave a disabled endpoint off without a word.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://ops.example.com/ihub-events", "eventTypes": ["run.failed", "run.parked"]}]
        },
    )

    url: Url
    event_types: EventTypes | None = Field(
        default=None,
        alias="eventTypes",
        description="Event types to receive; left out = every type except the opt-in `run.succeeded`.",
    )
    description: Description = ""


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": True}]})

    url: Url | None = None
    event_types: EventTypes | None = Field(default=None, alias="eventTypes")
    description: Description | None = None
    enabled: bool | None = Field(default=None, description="true re-enables an endpoint the hub disabled.")


class EndpointOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: IdOut
    org_id: IdOut = Field(serialization_alias="orgId")
    url: str
    description: str
    event_types: list[str] = Field(serialization_alias="eventTypes")
    enabled: bool
    failing_since: datetime | None = Field(serialization_alias="failingSince")
    disabled_at: datetime | None = Field(serialization_alias="disabledAt")
    disabled_reason: str | None = Field(serialization_alias="disabledReason")
    created_at: datetime = Field(serialization_alias="createdAt")
    secret: str | None = Field(
        default=None,
        description="The `whsec_...` signing secret: only in the answer that created or rotated it.",
    )


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: IdOut
    message_id: str = Field(serialization_alias="webhookId", description="The `webhook-id` header of every attempt.")
    endpoint_id: IdOut = Field(serialization_alias="endpointId")
    event_type: str = Field(serialization_alias="type")
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    created_at: datetime = Field(serialization_alias="createdAt")
    next_attempt_at: datetime | None = Field(serialization_alias="nextAttemptAt")
    last_attempt_at: datetime | None = Field(serialization_alias="lastAttemptAt")
    last_status_code: int | None = Field(serialization_alias="lastStatusCode")
    last_error: str | None = Field(serialization_alias="lastError")
    delivered_at: datetime | None = Field(serialization_alias="deliveredAt")
    payload: Any = Field(default=None, description="The body sent (on GET of one delivery).")


class DeliveryList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(default=None, serialization_alias="nextCursor")
