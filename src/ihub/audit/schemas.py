"""API shapes and query parsing of the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ihub.audit.recorder import Channel
from ihub.audit.service import AuditFilter
from ihub.common.body import refuse_nul
from ihub.common.errors import bad_request
from ihub.common.ids import MAX_ID, parse_id


class AuditList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    entries: list[dict[str, Any]] = Field(
        description="Newest first: {id, at, channel, actor {userId, name, address, userAgent}, orgId, action, "
        'target {type, id}, changes [{entity, id, op, before, after}]}; secrets show as "[secret]".'
    )
    next_cursor: str | None = Field(serialization_alias="nextCursor", description="Pass as ?cursor= for the next page.")


def parse_optional_id(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_id(value)
    except ValueError:
        raise bad_request(f"{name} must be a decimal id from 1 to {MAX_ID}") from None


def parse_time(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_request(f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise bad_request(f"{name} is outside the calendar once converted to UTC") from None


def parse_channel(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in {channel.value for channel in Channel}:
        raise bad_request(f"channel must be one of {', '.join(Channel)}")
    return value


def audit_filter(
    *,
    actor: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    org: str | None,
    channel: str | None,
    since: datetime | None,
    until: datetime | None,
) -> AuditFilter:
    # The free-text filters are compared with text columns: PostgreSQL refuses a NUL in a query's text with a
    # database error, so it is a 400 here (no entry could hold one anyway).
    for name, text in (("action", action), ("targetType", target_type), ("targetId", target_id)):
        refuse_nul(text, (name,))
    return AuditFilter(
        actor_user_id=parse_optional_id(actor, "actor"),
        action=action,
        target_type=target_type,
        target_id=target_id,
        org_id=parse_optional_id(org, "org"),
        channel=parse_channel(channel),
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
    )
