"""Endpoints and deliveries as the API and the console manage them (HTTP-free; the caller's unit of work commits).

Who may do what (ihub.tenancy.permissions): anyone who sees an organization reads its endpoints and their
deliveries (they hold what the runs and projects of the subtree already show); only an Owner or Admin creates,
changes, deletes, rotates, tests or re-sends. An endpoint or delivery of an organization outside the caller's
subtree is a 404.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.crypto import SecretBox
from ihub.common.errors import bad_request, conflict, not_found
from ihub.db.base import utcnow
from ihub.egress import EgressPolicy, EgressRefused
from ihub.events import outbox, signing
from ihub.events.delivery import secret_context
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.events.outbox import DEFAULT_TYPES, SUBSCRIBABLE, DeliveryStatus, EventType
from ihub.events.schemas import EndpointCreate, EndpointUpdate
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal, require_admin
from ihub.tenancy.service import lock_org_for_limit, tenant_prefix, visible_org

# An organization's endpoints: each event is one row per endpoint, so this bounds the rows one change writes.
MAX_ENDPOINTS_PER_ORG = 20
MAX_ENDPOINTS_PER_TENANT = 100
MAX_PENDING_TESTS = 3
# After a rotation the old secret signs too for this long (a second `v1,` signature), so receivers can switch.
ROTATION_OVERLAP = timedelta(hours=24)


# -- checks --------------------------------------------------------------------------------------------------


def check_url(url: str, policy: EgressPolicy) -> str:
    """An absolute http(s) URL without credentials; https unless the operator allowed its host
    (IHUB_EGRESS_ALLOW: an internal receiver); a destination the egress policy refuses is refused now too."""
    url = url.strip()
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise bad_request("url: must not contain spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad_request(f"url: {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise bad_request("url: must be an absolute http(s) URL such as https://ops.example.com/ihub-events")
    if parts.username is not None or parts.password is not None:
        raise bad_request("url: must not contain credentials (the signature authenticates the hub)")
    if "#" in url:  # an empty fragment too: `https://x/#` has none to urlsplit
        raise bad_request("url: must not contain a #fragment")
    try:
        # The deliverer sends with httpx, whose parser differs from urlsplit's: a URL it cannot send (a broken
        # IDNA label such as `xn--`) is refused now, and the host checked is also the one it would connect to
        # (`127。0。0。1` is 127.0.0.1 to httpx, a name to urlsplit).
        sent_host = httpx.Request("POST", url).url.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError):
        raise bad_request(f"url: {url!r} is not a valid URL") from None
    try:
        for checked in dict.fromkeys((host, sent_host)):
            policy.check_host(checked)
    except EgressRefused as refused:
        raise bad_request(f"url: {refused}", "egress_refused") from None
    if parts.scheme == "http" and not _operator_allowed(host, policy):
        raise bad_request("url: must use https (plain http only to hosts named in IHUB_EGRESS_ALLOW)", "https_required")
    return url


def _operator_allowed(host: str, policy: EgressPolicy) -> bool:
    """The allow-list opens this host by name, or its address (an IP literal; `localhost`: loopback)."""
    if policy.allows_name(host):
        return True
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    else:
        try:
            addresses = [ipaddress.ip_address(name)]
        except ValueError:
            return False
    return any(
        address.version == net.version and address in net for address in addresses for net in policy.allowed_networks
    )


def check_description(text: str) -> str:
    if "\x00" in text:
        raise bad_request("description: must not contain NUL characters")
    return text


def check_types(types: Sequence[str] | None) -> list[str]:
    if types is None:
        return [t.value for t in DEFAULT_TYPES]
    known = {t.value for t in SUBSCRIBABLE}
    unknown = [t for t in types if t not in known]
    if unknown:
        raise bad_request(f"eventTypes: unknown {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    if not types:
        raise bad_request("eventTypes: name at least one event type")
    return list(dict.fromkeys(types))


# -- endpoints -----------------------------------------------------------------------------------------------


async def visible_endpoint(session: AsyncSession, principal: Principal, endpoint_id: int) -> EventEndpoint:
    row = (
        await session.execute(
            select(EventEndpoint, Organization.path)
            .join(Organization, Organization.id == EventEndpoint.org_id)
            .where(EventEndpoint.id == endpoint_id)
        )
    ).first()
    if row is None or not principal.sees(row.path):
        raise not_found("event endpoint", endpoint_id)
    endpoint, _path = row.tuple()
    return endpoint


async def list_endpoints(session: AsyncSession, principal: Principal, org_id: int) -> Sequence[EventEndpoint]:
    org = await visible_org(session, principal, org_id)
    query = select(EventEndpoint).where(EventEndpoint.org_id == org.id).order_by(EventEndpoint.id)
    return (await session.scalars(query)).all()


async def _check_limits(session: AsyncSession, org: Organization) -> None:
    """At most MAX_ENDPOINTS_PER_ORG in the organization and MAX_ENDPOINTS_PER_TENANT in its tenant
    (tenancy.service.tenant_prefix): a tenant's Owner adds sub-organizations at will, and every endpoint on an
    organization's ancestor chain gets a row per event. Counted under the tenant's lock, so two creations at
    once cannot both pass."""
    tenant, prefix = tenant_prefix(org.path)
    await lock_org_for_limit(session, tenant)
    count = await session.scalar(select(func.count()).select_from(EventEndpoint).where(EventEndpoint.org_id == org.id))
    if (count or 0) >= MAX_ENDPOINTS_PER_ORG:
        raise conflict(f"organization {org.id} already has {MAX_ENDPOINTS_PER_ORG} event endpoints", "limit_reached")
    if prefix is None:
        return
    in_tenant = await session.scalar(
        select(func.count())
        .select_from(EventEndpoint)
        .join(Organization, Organization.id == EventEndpoint.org_id)
        .where(Organization.path.startswith(prefix, autoescape=True))
    )
    if (in_tenant or 0) >= MAX_ENDPOINTS_PER_TENANT:
        raise conflict(
            f"organization {tenant} and its sub-organizations already have {MAX_ENDPOINTS_PER_TENANT} event endpoints",
            "limit_reached",
        )


async def create_endpoint(
    session: AsyncSession, box: SecretBox, policy: EgressPolicy, principal: Principal, org_id: int, data: EndpointCreate
) -> tuple[EventEndpoint, str]:
    """The new endpoint and its signing secret (returned this once)."""
    org = await visible_org(session, principal, org_id)
    require_admin(principal, "manage event endpoints")
    url = check_url(data.url, policy)
    types = check_types(data.event_types)
    await _check_limits(session, org)
    secret = signing.new_secret()
    endpoint = EventEndpoint(
        org_id=org.id,
        url=url,
        description=check_description(data.description),
        event_types=types,
        secret_sealed="",
        enabled=True,
        created_by=principal.user_id,
    )
    session.add(endpoint)
    await session.flush()  # the id is part of the sealing context
    endpoint.secret_sealed = box.seal(secret, secret_context(endpoint.id))
    await session.flush()
    return endpoint, secret


async def update_endpoint(
    session: AsyncSession, policy: EgressPolicy, principal: Principal, endpoint_id: int, data: EndpointUpdate
) -> EventEndpoint:
    endpoint = await visible_endpoint(session, principal, endpoint_id)
    require_admin(principal, "manage event endpoints")
    if data.url is not None:
        endpoint.url = check_url(data.url, policy)
    if data.event_types is not None:
        endpoint.event_types = check_types(data.event_types)
    if data.description is not None:
        endpoint.description = check_description(data.description)
    if data.enabled is not None and data.enabled != endpoint.enabled:
        endpoint.enabled = data.enabled
        if data.enabled:
            # A fresh start: the failing clock restarts and the reason it was disabled is history.
            endpoint.failing_since = None
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
        else:
            endpoint.disabled_at = utcnow()
            endpoint.disabled_reason = "disabled by a user"
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, principal: Principal, endpoint_id: int) -> EventEndpoint:
    """Deletes the endpoint and (by cascade) its deliveries, pending ones included."""
    endpoint = await visible_endpoint(session, principal, endpoint_id)
    require_admin(principal, "manage event endpoints")
    await session.delete(endpoint)
    await session.flush()
    return endpoint


async def rotate_secret(
    session: AsyncSession, box: SecretBox, principal: Principal, endpoint_id: int
) -> tuple[EventEndpoint, str]:
    """A new secret (returned this once); the old one keeps signing alongside it for ROTATION_OVERLAP."""
    endpoint = await visible_endpoint(session, principal, endpoint_id)
    require_admin(principal, "manage event endpoints")
    secret = signing.new_secret()
    endpoint.previous_secret_sealed = endpoint.secret_sealed
    endpoint.previous_secret_until = utcnow() + ROTATION_OVERLAP
    endpoint.secret_sealed = box.seal(secret, secret_context(endpoint.id))
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint, secret


async def _check_pending_tests(session: AsyncSession, endpoint_id: int) -> None:
    """At most MAX_PENDING_TESTS test events of an endpoint wait for delivery: a test is for seeing one arrive,
    and a loop of them (40 a second measured) would queue thousands of deliveries, each retried for 24 h against
    a receiver that does not answer. Counted under the endpoint's row lock (PostgreSQL), so two at once cannot
    both pass."""
    await session.execute(
        select(EventEndpoint.id).where(EventEndpoint.id == endpoint_id).with_for_update(key_share=True)
    )
    waiting = await session.scalar(
        select(func.count())
        .select_from(EventDelivery)
        .where(
            EventDelivery.endpoint_id == endpoint_id,
            EventDelivery.event_type == EventType.ENDPOINT_TEST.value,
            EventDelivery.status == DeliveryStatus.PENDING.value,
        )
    )
    if (waiting or 0) >= MAX_PENDING_TESTS:
        raise conflict(
            f"event endpoint {endpoint_id} already has {MAX_PENDING_TESTS} test events waiting to be delivered: "
            "see its deliveries (a receiver that does not answer 2xx keeps them waiting)",
            "tests_pending",
        )


async def send_test(session: AsyncSession, principal: Principal, endpoint_id: int) -> EventDelivery:
    endpoint = await visible_endpoint(session, principal, endpoint_id)
    require_admin(principal, "manage event endpoints")
    if not endpoint.enabled:
        raise conflict(f"event endpoint {endpoint.id} is disabled; enable it first", "endpoint_disabled")
    await _check_pending_tests(session, endpoint.id)
    path = await outbox.org_path_of(session, endpoint.org_id) or ""
    data = {"endpointId": str(endpoint.id), "orgId": str(endpoint.org_id), "message": "a test event from ihub"}
    (delivery,) = await outbox.emit(session, EventType.ENDPOINT_TEST, path, data, only=[endpoint.id])
    return delivery


# -- deliveries ----------------------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: int,
    *,
    status: str | None,
    limit: int,
    cursor: int | None,
) -> tuple[Sequence[EventDelivery], int | None]:
    """Newest first; the next page starts below `cursor` (the last id of the previous page)."""
    endpoint = await visible_endpoint(session, principal, endpoint_id)
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise bad_request(f"status must be one of {', '.join(s.value for s in DeliveryStatus)}")
    query = select(EventDelivery).where(EventDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(EventDelivery.status == status)
    if cursor is not None:
        query = query.where(EventDelivery.id < cursor)
    rows = (await session.scalars(query.order_by(EventDelivery.id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def visible_delivery(session: AsyncSession, principal: Principal, delivery_id: int) -> EventDelivery:
    row = (
        await session.execute(
            select(EventDelivery, Organization.path)
            .join(EventEndpoint, EventEndpoint.id == EventDelivery.endpoint_id)
            .join(Organization, Organization.id == EventEndpoint.org_id)
            .where(EventDelivery.id == delivery_id)
        )
    ).first()
    if row is None or not principal.sees(row.path):
        raise not_found("event delivery", delivery_id)
    delivery, _path = row.tuple()
    return delivery


async def resend(session: AsyncSession, principal: Principal, delivery_id: int) -> EventDelivery:
    """Queue a delivery again, due now, with a fresh retry window and the same `webhook-id` and body."""
    delivery = await visible_delivery(session, principal, delivery_id)
    require_admin(principal, "manage event endpoints")
    endpoint = await session.get(EventEndpoint, delivery.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise conflict(f"event endpoint {delivery.endpoint_id} is disabled; enable it first", "endpoint_disabled")
    now = utcnow()
    leased = delivery.lease_expires_at is not None and delivery.lease_expires_at > now
    if delivery.status == DeliveryStatus.PENDING.value and leased:
        raise conflict(f"event delivery {delivery.id} is being attempted right now; try again shortly", "in_progress")
    delivery.status = DeliveryStatus.PENDING.value
    delivery.next_attempt_at = now
    delivery.give_up_at = now + timedelta(hours=outbox.DEFAULT_RETRY_HOURS)
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    await session.flush()
    session.info[outbox.EMITTED_KEY] = True
    return delivery


def delivery_payload(delivery: EventDelivery) -> Any:
    return json.loads(delivery.body)
