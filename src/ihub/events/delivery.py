"""The deliverer: a background task in every hub process that sends due outbox rows to their endpoints.

- Claims are guarded UPDATEs (`WHERE status = pending AND due AND lease free`), so several hub processes can
  run deliverers over one database and each attempt is made by one of them. A process that dies mid-attempt
  leaves a lease that expires; the delivery is attempted again, under the same `webhook-id` (at-least-once,
  receivers dedupe by id: that is how Standard Webhooks receivers get exactly-once).
- Every request goes through the egress policy (ihub.egress), the same as flows' http steps: a refused
  destination is a failed attempt whose error says so; nothing is connected to.
- 2xx is delivered. Anything else (status, timeout, refusal) is retried with exponential backoff and jitter
  until `give_up_at` (created + IHUB_EVENT_RETRY_HOURS), then the delivery is failed.
- An endpoint whose attempts have all failed since `failing_since` for the retry window is disabled; its
  pending deliveries are failed, and an `endpoint.disabled` event goes to the organization's other endpoints
  (and the console shows why it was disabled).
- Fair to tenants: a process attempts at most PER_ENDPOINT deliveries of one endpoint and PER_TENANT of one
  tenant (tenancy.service.tenant_prefix) at a time, and claims no more than it has free slots. Due deliveries
  are taken oldest first among the others, so a tenant whose receiver answers slowly, with a backlog of
  thousands, holds a few slots and delays nobody else's `run.failed` by more than a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.db.base import utcnow
from ihub.egress import EgressRefused, egress_client, policy_from_settings
from ihub.events import outbox, signing
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.events.outbox import DeliveryStatus, EventType
from ihub.tenancy.models import Organization
from ihub.tenancy.service import tenant_prefix

if TYPE_CHECKING:
    from ihub.common.context import AppContext

log = logging.getLogger("ihub.events")

# (tenant organization id, its subtree's path prefix; None for the root): tenancy.service.tenant_prefix.
Tenant = tuple[int, str | None]

# The whole attempt, from resolving the host to the status line and headers of the answer.
ATTEMPT_TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60.0
CLAIM_BATCH = 20
# Deliveries attempted at the same time by one process: a slow receiver holds one slot, not the whole loop.
CONCURRENCY = 8
# Of those, at most this many for one endpoint and for one tenant (module docstring: fair to tenants).
PER_ENDPOINT = 2
PER_TENANT = 4
MAX_BACKOFF_SECONDS = 3600.0
# How often a deliverer deletes old finished deliveries (every process does; the DELETE is idempotent).
PURGE_EVERY_SECONDS = 3600.0


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts + 1`: base * 2^(attempts-1), capped at an hour, with ±20% jitter so a
    receiver coming back from an outage is not hit by every queued delivery in the same second."""
    delay = min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret


def secret_context(endpoint_id: int) -> str:
    return f"event-endpoint:{endpoint_id}"


@dataclass(frozen=True)
class Attempt:
    """What one attempt found: delivered, or the error (and status code) to record."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None


class Deliverer:
    def __init__(self, context: AppContext) -> None:
        settings = context.settings
        self.context = context
        self.owner = f"events-{uuid.uuid4().hex[:12]}"
        self.poll_interval = float(getattr(settings, "event_poll_interval", 1.0))
        self.retry_base = float(getattr(settings, "event_retry_base_seconds", 5.0))
        self.retry_hours = outbox.DEFAULT_RETRY_HOURS
        self.retention_days = float(getattr(settings, "run_retention_days", 30))
        self.http = egress_client(policy_from_settings(settings), timeout=ATTEMPT_TIMEOUT_SECONDS)
        self.signal = asyncio.Event()
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.task: asyncio.Task[None] | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        # delivery id -> (endpoint id, tenant) of the attempts this process is making.
        self.busy: dict[int, tuple[int, Tenant]] = {}

    async def start(self) -> None:
        outbox.add_waker(self.signal)
        self.task = asyncio.create_task(self._loop(), name="ihub-event-deliverer")

    async def stop(self) -> None:
        outbox.remove_waker(self.signal)
        interrupted = bool(self.inflight)
        tasks = [t for t in (self.task, *self.inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.http.aclose()
        if interrupted:
            await self.release_leases()

    async def release_leases(self) -> None:
        """On shutdown: attempts cut short are due again at once (another process, or this one restarted, sends
        them under the same id) instead of waiting for their leases to expire."""
        try:
            async with self.context.sessions() as session, session.begin():
                await session.execute(
                    update(EventDelivery)
                    .where(
                        EventDelivery.lease_owner == self.owner, EventDelivery.status == DeliveryStatus.PENDING.value
                    )
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception:  # noqa: BLE001 - the leases expire by themselves
            log.warning("could not release event delivery leases on shutdown", exc_info=True)

    async def _loop(self) -> None:
        # The first purge a minute after start (not at once: a process restarted often still purges, and a
        # start does not begin with a write).
        purged_at = time.monotonic() - PURGE_EVERY_SECONDS + 60
        while True:
            self.signal.clear()
            try:
                claimed = await self.deliver_due()
                if time.monotonic() - purged_at > PURGE_EVERY_SECONDS:
                    purged_at = time.monotonic()
                    await self.purge()
            except Exception:  # noqa: BLE001 - a database hiccup must not end delivery for good
                log.warning("event delivery pass failed; retrying", exc_info=True)
                claimed = 0
            if claimed >= CLAIM_BATCH:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.signal.wait(), timeout=self.poll_interval)

    async def deliver_due(self) -> int:
        """Claim due deliveries, as many as there are free slots and fair shares (module docstring), and start
        an attempt for each; returns how many."""
        free = CONCURRENCY - len(self.busy)
        if free <= 0:
            return 0
        now = utcnow()
        by_endpoint = Counter(endpoint for endpoint, _ in self.busy.values())
        by_tenant = Counter(tenant for _, tenant in self.busy.values())
        query = (
            select(EventDelivery.id, EventDelivery.endpoint_id, EventEndpoint.org_id, Organization.path)
            .join(EventEndpoint, EventEndpoint.id == EventDelivery.endpoint_id)
            .join(Organization, Organization.id == EventEndpoint.org_id)
            .where(_claimable(now))
        )
        # Endpoints and tenants at their share are left out in the query, so their backlog cannot fill the page.
        full_endpoints = [endpoint for endpoint, count in by_endpoint.items() if count >= PER_ENDPOINT]
        if full_endpoints:
            query = query.where(EventDelivery.endpoint_id.not_in(full_endpoints))
        for tenant, count in by_tenant.items():
            if count >= PER_TENANT:
                query = query.where(~_in_tenant(tenant))
        async with self.context.readers() as session:
            rows = (await session.execute(query.order_by(EventDelivery.next_attempt_at).limit(CLAIM_BATCH))).all()
        chosen: list[tuple[int, int, Tenant]] = []
        for delivery_id, endpoint_id, org_id, path in rows:
            tenant = tenant_prefix(path) if path else (org_id, None)
            if len(chosen) >= free or by_endpoint[endpoint_id] >= PER_ENDPOINT or by_tenant[tenant] >= PER_TENANT:
                continue
            by_endpoint[endpoint_id] += 1
            by_tenant[tenant] += 1
            chosen.append((delivery_id, endpoint_id, tenant))
        if not chosen:
            return 0
        async with self.context.sessions() as session, session.begin():
            claimed = [item for item in chosen if await self._claim(session, item[0], now)]
        for delivery_id, endpoint_id, tenant in claimed:
            await self.slots.acquire()
            self.busy[delivery_id] = (endpoint_id, tenant)
            task = asyncio.create_task(self._attempt_and_release(delivery_id))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        return len(claimed)

    async def purge(self) -> int:
        """Delete delivered and failed deliveries older than the run retention (IHUB_RUN_RETENTION_DAYS): the
        outbox keeps history as long as runs do. Pending ones are never purged."""
        cutoff = utcnow() - timedelta(days=self.retention_days)
        async with self.context.sessions() as session, session.begin():
            result: Any = await session.execute(
                delete(EventDelivery)
                .where(
                    EventDelivery.status.in_([DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value]),
                    EventDelivery.created_at < cutoff,
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)

    async def _claim(self, session: AsyncSession, delivery_id: int, now: datetime) -> bool:
        result: Any = await session.execute(
            update(EventDelivery)
            .where(EventDelivery.id == delivery_id, _claimable(now))
            .values(lease_owner=self.owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)

    async def _attempt_and_release(self, delivery_id: int) -> None:
        try:
            await self.attempt(delivery_id)
        except Exception:  # noqa: BLE001 - the lease expires and another pass tries again
            log.warning("event delivery %s: attempt failed unexpectedly", delivery_id, exc_info=True)
        finally:
            self.busy.pop(delivery_id, None)
            self.slots.release()
            self.signal.set()  # a slot is free: deliveries held back for want of one may be due

    async def attempt(self, delivery_id: int) -> None:
        """Send one claimed delivery and record the outcome (only while the lease is still ours)."""
        async with self.context.readers() as session:
            row = (
                await session.execute(
                    select(EventDelivery, EventEndpoint)
                    .join(EventEndpoint, EventEndpoint.id == EventDelivery.endpoint_id)
                    .where(EventDelivery.id == delivery_id)
                )
            ).first()
        if row is None:
            return
        delivery, endpoint = row.tuple()
        if not endpoint.enabled:
            await self._record(delivery, endpoint, Attempt(False, error="the endpoint is disabled"), final=True)
            return
        try:
            outcome = await self.send(delivery, endpoint)
        except Exception as error:  # noqa: BLE001 - recorded as a failed attempt, below
            # Whatever stops an attempt from being made (a secret that no longer opens, a URL stored before it
            # was checked as strictly) is a failed attempt like any other: left unrecorded, the lease would
            # expire and the delivery be claimed again every minute, forever, never failing and never counted.
            log.warning("event delivery %s: the attempt could not be made", delivery_id, exc_info=True)
            outcome = Attempt(False, error=f"the hub could not make the attempt ({type(error).__name__})")
        await self._record(delivery, endpoint, outcome)

    def secrets_of(self, endpoint: EventEndpoint) -> list[str]:
        box = self.context.box
        secrets = [box.open(endpoint.secret_sealed, secret_context(endpoint.id))]
        until = endpoint.previous_secret_until
        if endpoint.previous_secret_sealed and until is not None and until > utcnow():
            secrets.append(box.open(endpoint.previous_secret_sealed, secret_context(endpoint.id)))
        return secrets

    async def send(self, delivery: EventDelivery, endpoint: EventEndpoint) -> Attempt:
        body = delivery.body.encode()
        timestamp = int(utcnow().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "ihub-webhooks",
            **signing.headers(self.secrets_of(endpoint), delivery.message_id, timestamp, body),
        }
        try:
            status = await self.post(endpoint.url, body, headers)
        except EgressRefused as refused:
            return Attempt(False, error=f"refused by the egress policy: {refused} (see IHUB_EGRESS_ALLOW)")
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(False, error=f"no answer within {ATTEMPT_TIMEOUT_SECONDS:g} s")
        except (httpx.ProtocolError, httpx.DecodingError) as error:
            # Their text quotes what the receiver sent (`illegal status line: b'...'`): not kept, like its body.
            return Attempt(False, error=f"the answer is not valid HTTP ({type(error).__name__})")
        except httpx.ConnectError as error:
            # Its text names the address resolved and connected to: the class says enough (as egress refusals,
            # which never show a tenant what a name resolved to).
            return Attempt(False, error=f"could not connect to the endpoint ({type(error).__name__})")
        except httpx.HTTPError as error:
            # The exception's class names the failure; its text may quote the URL or addresses, so it is not kept.
            return Attempt(False, error=f"the attempt failed ({type(error).__name__})")
        if 200 <= status < 300:
            return Attempt(True, status)
        return Attempt(False, status, f"the endpoint answered {status}")

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST and return the answer's status, never reading its body: the status is the whole verdict
        (Standard Webhooks), so a receiver that answers 200 with a large or endless page has received the
        event, and its body neither holds a delivery slot nor takes memory. Closing the unread stream drops
        the connection. The deadline covers resolving, connecting, sending and the answer's headers."""
        async with (
            asyncio.timeout(ATTEMPT_TIMEOUT_SECONDS),
            self.http.stream("POST", url, content=body, headers=headers, timeout=ATTEMPT_TIMEOUT_SECONDS) as answer,
        ):
            return answer.status_code

    async def _record(
        self, delivery: EventDelivery, endpoint: EventEndpoint, outcome: Attempt, *, final: bool = False
    ) -> None:
        now = utcnow()
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error[:500] if outcome.error else None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if outcome.delivered:
            values.update(status=DeliveryStatus.DELIVERED.value, delivered_at=now)
        else:
            retry_at = now + timedelta(seconds=backoff(attempts, self.retry_base))
            if final or retry_at > delivery.give_up_at:
                values.update(status=DeliveryStatus.FAILED.value)
            else:
                values.update(next_attempt_at=retry_at)
        async with self.context.sessions() as session, session.begin():
            result: Any = await session.execute(
                update(EventDelivery)
                .where(EventDelivery.id == delivery.id, EventDelivery.lease_owner == self.owner)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return  # the lease expired and someone else owns the delivery now
            if outcome.delivered:
                await session.execute(
                    update(EventEndpoint)
                    .where(EventEndpoint.id == endpoint.id, EventEndpoint.failing_since.is_not(None))
                    .values(failing_since=None)
                    .execution_options(synchronize_session=False)
                )
            elif not final:
                await self._note_failure(session, endpoint, now)
        if values.get("status") == DeliveryStatus.FAILED.value:
            log.warning("event %s to endpoint %s failed for good: %s", delivery.message_id, endpoint.id, outcome.error)

    async def _note_failure(self, session: AsyncSession, endpoint: EventEndpoint, now: datetime) -> None:
        """Start the endpoint's failing clock, or disable it once it has failed for the whole retry window."""
        since = await session.scalar(select(EventEndpoint.failing_since).where(EventEndpoint.id == endpoint.id))
        if since is None:
            await session.execute(
                update(EventEndpoint)
                .where(EventEndpoint.id == endpoint.id, EventEndpoint.failing_since.is_(None))
                .values(failing_since=now)
                .execution_options(synchronize_session=False)
            )
            return
        if now - since < timedelta(hours=self.retry_hours):
            return
        await disable_endpoint(session, endpoint.id, f"every delivery failed for {self.retry_hours:g} h", now=now)


async def disable_endpoint(
    session: AsyncSession, endpoint_id: int, reason: str, *, now: datetime | None = None
) -> bool:
    """Disable a failing endpoint, fail its pending deliveries, tell the organization's other endpoints."""
    now = now or utcnow()
    result: Any = await session.execute(
        update(EventEndpoint)
        .where(EventEndpoint.id == endpoint_id, EventEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_at=now, disabled_reason=reason[:500])
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await session.execute(
        update(EventDelivery)
        .where(EventDelivery.endpoint_id == endpoint_id, EventDelivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.FAILED.value, last_error="the endpoint was disabled", lease_owner=None)
        .execution_options(synchronize_session=False)
    )
    row = (
        await session.execute(select(EventEndpoint.org_id, EventEndpoint.url).where(EventEndpoint.id == endpoint_id))
    ).first()
    if row is not None:
        log.warning("event endpoint %s (organization %s) disabled: %s", endpoint_id, row.org_id, reason)
        path = await outbox.org_path_of(session, row.org_id)
        if path is not None:
            # The origin only: a receiver URL often carries its own secret in the path or query (Slack-style
            # hooks), and this event goes to other receivers, which may belong to third parties.
            data = {"endpointId": str(endpoint_id), "orgId": str(row.org_id), "origin": url_origin(row.url)}
            data["reason"] = reason
            await outbox.emit(session, EventType.ENDPOINT_DISABLED, path, data)
    return True


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: where it points, without what its path or query may hold."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _in_tenant(tenant: Tenant) -> Any:
    """Deliveries whose endpoint belongs to `tenant` (the query joins the endpoint and its organization)."""
    tenant_id, prefix = tenant
    if prefix is None:
        return EventEndpoint.org_id == tenant_id
    return Organization.path.startswith(prefix, autoescape=True)


def _claimable(now: datetime) -> Any:
    return and_(
        EventDelivery.status == DeliveryStatus.PENDING.value,
        EventDelivery.next_attempt_at <= now,
        or_(EventDelivery.lease_expires_at.is_(None), EventDelivery.lease_expires_at < now),
    )


# -- starting and stopping with the app ---------------------------------------------------------------------


def install(app: Any) -> None:
    app.state.lifecycle.append((start, stop))


async def start(app: Any) -> None:
    context: AppContext = app.state.context
    if not getattr(context.settings, "event_delivery", True):
        return
    deliverer = Deliverer(context)
    await deliverer.start()
    app.state.event_deliverer = deliverer


async def stop(app: Any) -> None:
    deliverer: Deliverer | None = getattr(app.state, "event_deliverer", None)
    app.state.event_deliverer = None
    if deliverer is not None:
        await deliverer.stop()
