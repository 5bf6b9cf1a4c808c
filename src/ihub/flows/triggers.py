"""Triggers: what starts a flow's runs (`trigger` in the flow format) and the payload a run starts with.

Every run stores its trigger payload (`runs.trigger`, `trigger.*` in expressions). It is built here and nowhere
else, one builder per trigger type, so the three kinds of runs keep one format:

    {"receivedAt", "body", "contentType" [, "bodyEncoding"], "headers", "env", <who or when>}

with `clientId` (jwt webhook), `userId` (manual run) or `scheduledFor` (schedule tick) last. `receivedAt` is
stamped when the run row is made (ihub.runs.service.create_run, through `received`).
Every flow can also be run by hand, whatever its trigger type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BeforeValidator, Field, field_validator

from ihub.flows.steps.base import FormatModel
from ihub.flows.steps.fields import problem, text_checker

TRIGGER_TYPES = ("jwt", "manual", "schedule")
# The payload field the run row stamps; a replay drops it and gets a new one.
RECEIVED_AT = "receivedAt"


class JwtTrigger(FormatModel):
    """Started by `POST /api/v1/incoming/{env}` with an access token whose `sub` is the flow id."""

    type: Literal["jwt"]

    @staticmethod
    def payload(body: dict[str, Any], *, headers: dict[str, str], env: str, client_id: str) -> dict[str, Any]:
        """`body`: {"body", "contentType"[, "bodyEncoding"]} as parsed from the request."""
        return {**body, "headers": headers, "env": env, "clientId": client_id}


class ManualTrigger(FormatModel):
    """Started by hand only (`POST /api/v1/flow/{id}/run`)."""

    type: Literal["manual"]

    @staticmethod
    def payload(body: Any, *, content_type: str, user_id: str) -> dict[str, Any]:
        return {"body": body, "contentType": content_type, "headers": {}, "env": None, "userId": user_id}


class ScheduleTrigger(FormatModel):
    """Started at every tick of a five-field cron expression, in UTC."""

    type: Literal["schedule"]
    cron: Annotated[str, BeforeValidator(text_checker(max_len=200))] = Field(
        description="Five-field cron expression, UTC (e.g. `*/5 * * * *`)."
    )
    # Accepted for compatibility and ignored: schedules run in UTC.
    timezone: Any = Field(None, exclude=True, description="Ignored: schedules run in UTC.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        if not croniter.is_valid(cron):
            raise problem(f"invalid cron expression {cron!r}")
        return cron

    def latest_tick(self, now: datetime) -> datetime:
        tick: datetime = croniter(self.cron, now).get_prev(datetime)
        return tick

    @staticmethod
    def payload(tick: datetime) -> dict[str, Any]:
        return {"body": None, "headers": {}, "env": None, "scheduledFor": tick.isoformat()}


def _bare_type(value: Any) -> Any:
    # `trigger: jwt` is short for `trigger: {type: jwt}`.
    return {"type": value} if isinstance(value, str) else value


Trigger = Annotated[
    JwtTrigger | ManualTrigger | ScheduleTrigger, Field(discriminator="type"), BeforeValidator(_bare_type)
]


def received(payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The payload as a run stores it: stamped with the time the run was made (first, as runs always had)."""
    return {RECEIVED_AT: at.isoformat(), **payload}


def replayed(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A stored payload as a replay starts from (it gets a new `receivedAt`)."""
    return {key: value for key, value in (stored or {}).items() if key != RECEIVED_AT}
