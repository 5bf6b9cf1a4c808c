"""Admin → Events: the organization's event endpoints, one selected with its latest deliveries; register (the
signing secret is shown once), rotate, test, enable/disable, delete, and re-send a delivery. The same services as
`/api/v1/event-endpoint` (ihub.events.service), so the same permission rules apply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.body import validate_as
from ihub.common.context import Context, Session
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.egress import policy_from_settings
from ihub.events import service
from ihub.events.outbox import DEFAULT_TYPES, SUBSCRIBABLE
from ihub.events.schemas import EndpointCreate, EndpointUpdate

router = APIRouter()

# Deliveries shown for the selected endpoint; the API pages through all of them.
SHOWN_DELIVERIES = 50


async def events_page(
    request: Request, session: AsyncSession, viewer: Viewer, org_id: int, selected_id: int | None, **extra: Any
) -> HTMLResponse:
    shell = await load_shell(session, viewer, org_id, "admin", "events")
    endpoints = list(await service.list_endpoints(session, viewer.principal, shell.org.id))
    selected = next((e for e in endpoints if e.id == selected_id), None)
    if selected is None and selected_id is not None:
        selected = await service.visible_endpoint(session, viewer.principal, selected_id)
    deliveries: list[Any] = []
    if selected is not None:
        rows, _ = await service.list_deliveries(
            session, viewer.principal, selected.id, status=None, limit=SHOWN_DELIVERIES, cursor=None
        )
        deliveries = list(rows)
    return render(
        request,
        "events.html",
        **shell.context(),
        tab="events",
        endpoints=endpoints,
        selected=selected,
        deliveries=deliveries,
        event_types=[t.value for t in SUBSCRIBABLE],
        default_types=[t.value for t in DEFAULT_TYPES],
        **{"issued_secret": None, **extra},
    )


@router.get("/org/{org_id}/events")
async def list_endpoints(
    request: Request, org_id: str, viewer: SignedIn, session: Session, endpoint: str | None = None
) -> HTMLResponse:
    selected = path_id(endpoint, "event endpoint") if endpoint else None
    return await events_page(request, session, viewer, path_id(org_id, "organization"), selected)


@router.post("/org/{org_id}/events")
async def create_endpoint(
    request: Request,
    org_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    url: Annotated[str, Form(max_length=2100)] = "",
    description: Annotated[str, Form(max_length=600)] = "",
    event_types: Annotated[list[str] | None, Form(alias="eventTypes")] = None,
) -> HTMLResponse:
    """Register the endpoint; the page shows its signing secret this once."""
    data = validate_as(EndpointCreate, {"url": url, "description": description, "eventTypes": event_types or []})
    org = path_id(org_id, "organization")
    policy = policy_from_settings(context.settings)
    endpoint, secret = await service.create_endpoint(session, context.box, policy, viewer.principal, org, data)
    return await events_page(request, session, viewer, org, endpoint.id, issued_secret=secret)


@router.post("/event-endpoint/{endpoint_id}/rotate")
async def rotate_secret(
    request: Request, endpoint_id: str, viewer: Acting, session: Session, context: Context
) -> HTMLResponse:
    endpoint, secret = await service.rotate_secret(
        session, context.box, viewer.principal, path_id(endpoint_id, "event endpoint")
    )
    return await events_page(request, session, viewer, endpoint.org_id, endpoint.id, issued_secret=secret)


@router.post("/event-endpoint/{endpoint_id}/enabled")
async def set_enabled(
    request: Request,
    endpoint_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    enabled: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    change = validate_as(EndpointUpdate, {"enabled": enabled == "true"})
    policy = policy_from_settings(context.settings)
    endpoint = await service.update_endpoint(
        session, policy, viewer.principal, path_id(endpoint_id, "event endpoint"), change
    )
    state = "enabled" if endpoint.enabled else "disabled"
    return redirect(request, f"/console/org/{endpoint.org_id}/events?endpoint={endpoint.id}", f"Endpoint {state}.")


@router.post("/event-endpoint/{endpoint_id}/test")
async def send_test(request: Request, endpoint_id: str, viewer: Acting, session: Session) -> Response:
    delivery = await service.send_test(session, viewer.principal, path_id(endpoint_id, "event endpoint"))
    endpoint = await service.visible_endpoint(session, viewer.principal, delivery.endpoint_id)
    return redirect(
        request, f"/console/org/{endpoint.org_id}/events?endpoint={endpoint.id}", "A test event is on its way."
    )


@router.post("/event-endpoint/{endpoint_id}/delete")
async def delete_endpoint(request: Request, endpoint_id: str, viewer: Acting, session: Session) -> Response:
    endpoint = await service.delete_endpoint(session, viewer.principal, path_id(endpoint_id, "event endpoint"))
    return redirect(request, f"/console/org/{endpoint.org_id}/events", f"Endpoint {endpoint.url} was deleted.")


@router.post("/event-delivery/{delivery_id}/resend")
async def resend(request: Request, delivery_id: str, viewer: Acting, session: Session) -> Response:
    delivery = await service.resend(session, viewer.principal, path_id(delivery_id, "event delivery"))
    endpoint = await service.visible_endpoint(session, viewer.principal, delivery.endpoint_id)
    return redirect(
        request,
        f"/console/org/{endpoint.org_id}/events?endpoint={endpoint.id}",
        f"Event {delivery.message_id} will be sent again.",
    )
