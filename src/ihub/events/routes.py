"""`/api/v1` routes for event endpoints and their deliveries (docs/operations.md "Event webhooks")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Context, Session
from ihub.common.errors import bad_request
from ihub.common.ids import MAX_ID, parse_id, path_id
from ihub.common.responses import errors
from ihub.egress import policy_from_settings
from ihub.events import service
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.events.schemas import DeliveryList, DeliveryOut, EndpointCreate, EndpointList, EndpointOut, EndpointUpdate
from ihub.provisioning.deps import Caller

router = APIRouter(prefix="/api/v1", tags=["events"], responses=errors(400, 401, 403, 404))


def endpoint_out(endpoint: EventEndpoint, secret: str | None = None) -> EndpointOut:
    out = EndpointOut.model_validate(endpoint, from_attributes=True)
    return out.model_copy(update={"secret": secret})


def delivery_out(delivery: EventDelivery, *, with_payload: bool = False) -> DeliveryOut:
    out = DeliveryOut.model_validate(delivery, from_attributes=True)
    if delivery.status != "pending":
        out = out.model_copy(update={"next_attempt_at": None})
    if with_payload:
        out = out.model_copy(update={"payload": service.delivery_payload(delivery)})
    return out


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return parse_id(cursor)
    except ValueError:
        raise bad_request(f"cursor must be the nextCursor of a previous answer (a decimal id up to {MAX_ID})") from None


@router.post(
    "/event-endpoint/org/{org_id}",
    response_model=EndpointList,
    response_model_by_alias=True,
    responses=errors(409),
    openapi_extra=request_body(
        EndpointCreate, example={"url": "https://ops.example.com/ihub-events", "eventTypes": ["run.failed"]}
    ),
)
async def create_endpoint(
    org_id: str, caller: Caller, session: Session, context: Context, body: EndpointCreate = json_or_form(EndpointCreate)
) -> EndpointList:
    """Register an endpoint for the events of the organization's whole subtree. The answer carries the signing
    secret (`whsec_...`) this once. Owners and Admins."""
    policy = policy_from_settings(context.settings)
    endpoint, secret = await service.create_endpoint(
        session, context.box, policy, caller, path_id(org_id, "organization"), body
    )
    return EndpointList(endpoints=[endpoint_out(endpoint, secret)])


@router.get("/event-endpoint/org/{org_id}", response_model=EndpointList, response_model_by_alias=True)
async def list_endpoints(org_id: str, caller: Caller, session: Session) -> EndpointList:
    """The organization's own endpoints (never their secrets)."""
    endpoints = await service.list_endpoints(session, caller, path_id(org_id, "organization"))
    return EndpointList(endpoints=[endpoint_out(e) for e in endpoints])


@router.get("/event-endpoint/{endpoint_id}", response_model=EndpointList, response_model_by_alias=True)
async def get_endpoint(endpoint_id: str, caller: Caller, session: Session) -> EndpointList:
    endpoint = await service.visible_endpoint(session, caller, path_id(endpoint_id, "event endpoint"))
    return EndpointList(endpoints=[endpoint_out(endpoint)])


@router.put(
    "/event-endpoint/{endpoint_id}",
    response_model=EndpointList,
    response_model_by_alias=True,
    openapi_extra=request_body(EndpointUpdate, example={"eventTypes": ["run.failed", "run.parked"]}),
)
async def update_endpoint(
    endpoint_id: str,
    caller: Caller,
    session: Session,
    context: Context,
    body: EndpointUpdate = json_or_form(EndpointUpdate),
) -> EndpointList:
    """Change the URL, event types or description; `enabled: true` re-enables a disabled endpoint."""
    policy = policy_from_settings(context.settings)
    endpoint = await service.update_endpoint(session, policy, caller, path_id(endpoint_id, "event endpoint"), body)
    return EndpointList(endpoints=[endpoint_out(endpoint)])


@router.delete("/event-endpoint/{endpoint_id}", response_model=EndpointList, response_model_by_alias=True)
async def delete_endpoint(endpoint_id: str, caller: Caller, session: Session) -> EndpointList:
    """Delete the endpoint with its deliveries (pending ones are not sent)."""
    endpoint = await service.delete_endpoint(session, caller, path_id(endpoint_id, "event endpoint"))
    return EndpointList(endpoints=[endpoint_out(endpoint)])


@router.post("/event-endpoint/{endpoint_id}/rotate-secret", response_model=EndpointList, response_model_by_alias=True)
async def rotate_secret(endpoint_id: str, caller: Caller, session: Session, context: Context) -> EndpointList:
    """A new signing secret, in this answer only. For 24 hours deliveries carry two signatures (new and old)."""
    endpoint, secret = await service.rotate_secret(session, context.box, caller, path_id(endpoint_id, "event endpoint"))
    return EndpointList(endpoints=[endpoint_out(endpoint, secret)])


@router.post(
    "/event-endpoint/{endpoint_id}/test",
    status_code=202,
    response_model=DeliveryList,
    response_model_by_alias=True,
    responses=errors(409),
)
async def send_test(endpoint_id: str, caller: Caller, session: Session) -> DeliveryList:
    """Queue an `endpoint.test` event for this endpoint (whatever types it subscribes to). At most 3 test events
    of an endpoint wait for delivery at a time (409 `tests_pending`)."""
    delivery = await service.send_test(session, caller, path_id(endpoint_id, "event endpoint"))
    return DeliveryList(deliveries=[delivery_out(delivery)])


@router.get("/event-endpoint/{endpoint_id}/deliveries", response_model=DeliveryList, response_model_by_alias=True)
async def list_deliveries(
    endpoint_id: str,
    caller: Caller,
    session: Session,
    status: Annotated[str | None, Query(description="pending | delivered | failed")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first, in pages (keyset pagination)."""
    rows, next_cursor = await service.list_deliveries(
        session,
        caller,
        path_id(endpoint_id, "event endpoint"),
        status=status,
        limit=limit,
        cursor=parse_cursor(cursor),
    )
    return DeliveryList(
        deliveries=[delivery_out(d) for d in rows], next_cursor=str(next_cursor) if next_cursor else None
    )


@router.get("/event-delivery/{delivery_id}", response_model=DeliveryList, response_model_by_alias=True)
async def get_delivery(delivery_id: str, caller: Caller, session: Session) -> DeliveryList:
    """One delivery with the payload it sends."""
    delivery = await service.visible_delivery(session, caller, path_id(delivery_id, "event delivery"))
    return DeliveryList(deliveries=[delivery_out(delivery, with_payload=True)])


@router.post(
    "/event-delivery/{delivery_id}/resend",
    status_code=202,
    response_model=DeliveryList,
    response_model_by_alias=True,
    responses=errors(409),
)
async def resend(delivery_id: str, caller: Caller, session: Session) -> DeliveryList:
    """Send a delivery again (delivered or failed ones too) under the same `webhook-id`: receivers that
    dedupe by id process it once."""
    delivery = await service.resend(session, caller, path_id(delivery_id, "event delivery"))
    return DeliveryList(deliveries=[delivery_out(delivery)])
