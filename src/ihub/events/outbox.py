"""The outbox: `emit` inserts one delivery row per subscribed endpoint in the caller's transaction.

Invariants:
- An event exists exactly when the change it reports is committed: `emit` only adds rows to the caller's
  session (flush at most), so a rolled-back change leaves no event and a committed one always has its rows.
  The deliverer (events/delivery.py) sends them afterwards, however long the hub was down in between.
- Subscriptions apply to a subtree: an endpoint of organization O receives the events of O and of every
  organization below it. The event's organization path names its ancestors, so the lookup is one indexed query
  (`org_id IN (ancestors)`); an organization tree without endpoints costs that one query and nothing else.
- Each row gets its own `message_id` (`msg_<uuid>`, the `webhook-id`) when it is inserted; attempts and
  re-sends reuse it, so one event for one endpoint never arrives under two ids.
- A commit that emitted wakes this process's deliverer at once (a SQLAlchemy `after_commit` listener), so an
  event arrives within the time of one request; other processes' deliverers find it by polling.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ihub.db.base import utcnow
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.tenancy.models import Organization


class EventType(StrEnum):
    RUN_FAILED = "run.failed"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_PARKED = "run.parked"
    TRIGGER_KEY_EXPIRING = "trigger.key_expiring"
    TRIGGER_DISABLED = "trigger.disabled"
    CONNECTION_NEEDS_RECONNECT = "connection.needs_reconnect"
    PROJECT_CREATED = "project.created"
    PROJECT_DELETED = "project.deleted"
    USER_CREATED = "user.created"
    USER_DELETED = "user.deleted"
    # The hub's own notices to an organization's endpoints.
    ENDPOINT_DISABLED = "endpoint.disabled"
    ENDPOINT_TEST = "endpoint.test"


# What an endpoint created without `eventTypes` receives: everything except the opt-in `run.succeeded` (one per
# successful run: most receivers want only what needs attention) and the test event (sent on request only).
OPT_IN = frozenset({EventType.RUN_SUCCEEDED})
DEFAULT_TYPES = tuple(t for t in EventType if t not in OPT_IN and t is not EventType.ENDPOINT_TEST)
SUBSCRIBABLE = tuple(t for t in EventType if t is not EventType.ENDPOINT_TEST)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# How long a delivery is retried before it is marked failed (and how long an endpoint may fail before it is
# disabled): the "retried with backoff for 24 h". Settings may shorten it (IHUB_EVENT_RETRY_HOURS).
DEFAULT_RETRY_HOURS = 24.0


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def ancestor_ids(org_path: str) -> list[int]:
    """ "/1/5/9/" -> [1, 5, 9]: the organization and every organization above it."""
    return [int(part) for part in org_path.strip("/").split("/") if part]


def body_of(event_type: str, data: dict[str, Any], at: datetime) -> str:
    """The request body, fixed at insert time: compact JSON, the same bytes on every attempt."""
    payload = {"type": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(payload, separators=(",", ":"), default=str)


async def subscribed_endpoints(session: AsyncSession, org_path: str, event_type: str) -> list[int]:
    rows = (
        await session.execute(
            select(EventEndpoint.id, EventEndpoint.event_types).where(
                EventEndpoint.org_id.in_(ancestor_ids(org_path)), EventEndpoint.enabled.is_(True)
            )
        )
    ).all()
    return [row.id for row in rows if event_type in (row.event_types or ())]


async def org_path_of(session: AsyncSession, org_id: int) -> str | None:
    return await session.scalar(select(Organization.path).where(Organization.id == org_id))


async def emit(
    session: AsyncSession,
    event_type: EventType,
    org_path: str,
    data: dict[str, Any],
    *,
    retry_hours: float = DEFAULT_RETRY_HOURS,
    only: Sequence[int] | None = None,
) -> list[EventDelivery]:
    """Queue `event_type` for every enabled endpoint of the event's organization or an ancestor that subscribes
    to it (or for the endpoints `only`, whatever they subscribe to: the test event). Adds rows to the caller's
    transaction; nothing is sent before it commits."""
    endpoint_ids = list(only) if only is not None else await subscribed_endpoints(session, org_path, event_type)
    if not endpoint_ids:
        return []
    now = utcnow()
    body = body_of(event_type, data, now)
    rows = [
        EventDelivery(
            message_id=new_message_id(),
            endpoint_id=endpoint_id,
            event_type=event_type.value,
            body=body,
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            give_up_at=now + timedelta(hours=retry_hours),
        )
        for endpoint_id in endpoint_ids
    ]
    session.add_all(rows)
    await session.flush()
    session.info[EMITTED_KEY] = True
    return rows


async def emit_for_org(session: AsyncSession, event_type: EventType, org_id: int, data: dict[str, Any]) -> None:
    path = await org_path_of(session, org_id)
    if path is not None:
        await emit(session, event_type, path, data)


# -- waking the deliverer ------------------------------------------------------------------------------------

EMITTED_KEY = "ihub.events.emitted"
_wakers: set[asyncio.Event] = set()


def add_waker(signal: asyncio.Event) -> None:
    _wakers.add(signal)


def remove_waker(signal: asyncio.Event) -> None:
    _wakers.discard(signal)


def wake() -> None:
    for signal in _wakers:
        signal.set()


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    # Runs inside the commit, on the event loop's thread (AsyncSession drives the sync session in a greenlet):
    # setting an asyncio.Event there is safe. The rows are committed, so the deliverer will find them.
    if session.info.pop(EMITTED_KEY, False):
        wake()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(EMITTED_KEY, None)


# -- the events other domains emit ---------------------------------------------------------------------------
# Each takes the caller's session inside the transaction of the change; the data holds ids and texts the
# caller already made safe to show (a run's error is redacted by the engine), never a connection's values.


@dataclass(frozen=True)
class RunFacts:
    """What a run event says about the run, as the engine knows it when the run's status changes."""

    run_id: int
    status: str
    org_id: int
    org_path: str
    project_id: int
    flow_id: int
    flow_key: str
    attempt: int
    error: str | None

    def data(self) -> dict[str, Any]:
        return {
            "runId": str(self.run_id),
            "status": self.status,
            "orgId": str(self.org_id),
            "projectId": str(self.project_id),
            "flowId": str(self.flow_id),
            "flowKey": self.flow_key,
            "attempt": self.attempt,
            "error": self.error,
        }


async def emit_run_event(
    session: AsyncSession,
    event_type: EventType,
    facts: RunFacts | int,
    extra: dict[str, Any] | None = None,
) -> None:
    """run.failed / run.succeeded / run.parked for a run whose transition just succeeded in this transaction.

    The engine passes the facts it holds (then the only statement is the endpoint lookup: a finish costs one
    indexed query more when nobody listens); given only a run id, they are read from the database."""
    if isinstance(facts, int):
        read = await _run_facts(session, facts)
        if read is None:
            return
        facts = read
    await emit(session, event_type, facts.org_path, {**facts.data(), **(extra or {})})


async def _run_facts(session: AsyncSession, run_id: int) -> RunFacts | None:
    from ihub.flows.models import Flow
    from ihub.projects.models import Project
    from ihub.runs.models import Run

    row = (
        await session.execute(
            select(Run.project_id, Run.flow_id, Run.status, Run.error, Run.attempt, Flow.key, Project.org_id)
            .add_columns(Organization.path)
            .join(Flow, Flow.id == Run.flow_id)
            .join(Project, Project.id == Run.project_id)
            .join(Organization, Organization.id == Project.org_id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None:
        return None
    return RunFacts(
        run_id, row.status, row.org_id, row.path, row.project_id, row.flow_id, row.key, row.attempt, row.error
    )
