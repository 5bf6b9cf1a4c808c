"""Trigger keys that expire: the token endpoint refuses an expired key with an invalid_grant the client can act on,
IHUB_TRIGGER_KEY_MAX_AGE_DAYS bounds new keys, and `trigger.key_expiring` is queued once per expiry."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from incoming_support import Incoming, Trigger
from sqlalchemy import select, update
from test_trigger_cli import ihub, ok

from ihub.app import create_app
from ihub.config import Settings
from ihub.events.models import EventDelivery
from ihub.executors import local as local_executor
from ihub.incoming.expiry import notify_expiring_keys
from ihub.incoming.models import TriggerKey

pytestmark = pytest.mark.anyio


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def move_expiry(app: Any, kid: str, expires_at: datetime) -> None:
    """Put a key's expiry in the past, which the API refuses to do (the test cannot wait for time to pass)."""
    async with app.state.context.sessions() as session:
        await session.execute(update(TriggerKey).where(TriggerKey.kid == kid).values(expires_at=expires_at))
        await session.commit()
    app.state.context.incoming.clients.invalidate()


async def key_of(incoming: Incoming, flow_id: str, iss: str, kid: str) -> dict[str, Any]:
    response = await incoming.client.get(f"/api/v1/flow/{flow_id}/trigger/jwt", headers=incoming.auth)
    [trigger] = [t for t in response.json()["triggers"] if t["iss"] == iss]
    [key] = [k for k in trigger["keys"] if k["kid"] == kid]
    return key


async def test_an_expired_key_is_refused_and_a_key_not_yet_expired_is_accepted(
    app: Any, incoming: Incoming, client_key: tuple[str, str]
) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    trigger = await incoming.trigger(body={"publicKey": client_key[1], "expiresAt": iso(expires)})
    trigger.private_key = client_key[0]
    assert parsed(trigger.raw["keys"][0]["expiresAt"]) == expires and trigger.raw["keys"][0]["expired"] is False

    response = await incoming.token(trigger.assertion())
    assert response.status_code == 200, response.text
    access = response.json()["access_token"]

    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    await move_expiry(app, trigger.kid, past)
    response = await incoming.token(trigger.assertion())
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert f"key '{trigger.kid}'" in body["error_description"]
    assert f"expired at {iso(past)}" in body["error_description"]
    assert "register a new key" in body["error_description"]
    # A token the key obtained before it expired stops working too.
    hook = await incoming.client.post(
        "/prod/incoming/webhook/jwt", json={"a": 1}, headers={"Authorization": f"Bearer {access}"}
    )
    assert hook.status_code == 401 and "expired" in hook.headers["www-authenticate"]
    assert (await key_of(incoming, trigger.sub, trigger.iss, trigger.kid))["expired"] is True

    # A rotation: the client's new key (no expiry) works, the expired one stays refused.
    rotated = await incoming.trigger(body={"generateKey": True, "iss": trigger.iss})
    fresh = Trigger(trigger.iss, trigger.sub, trigger.aud, rotated.private_key, rotated.kid, rotated.raw)
    assert (await incoming.token(fresh.assertion())).status_code == 200
    assert (await incoming.token(trigger.assertion())).json()["error"] == "invalid_grant"


async def test_expiry_is_set_cleared_and_checked_through_the_api(
    incoming: Incoming, client_key: tuple[str, str]
) -> None:
    trigger = await incoming.trigger(body={"publicKey": client_key[1]})
    assert "expiresAt" not in trigger.raw["keys"][0]  # no hub-wide maximum: no expiry
    url = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/{trigger.kid}"

    response = await incoming.client.put(url, json={"expiresInDays": 10}, headers=incoming.auth)
    assert response.status_code == 200, response.text
    expires = parsed(response.json()["triggers"][0]["keys"][0]["expiresAt"])
    assert timedelta(days=9, hours=23) < expires - datetime.now(UTC) <= timedelta(days=10)
    assert parsed((await key_of(incoming, trigger.sub, trigger.iss, trigger.kid))["expiresAt"]) == expires

    for bad in (
        {"expiresAt": iso(datetime.now(UTC) - timedelta(hours=1))},
        {"expiresAt": "soon"},
        # Unix seconds for 2100-01-01: a number is refused, not read as a time (ISO 8601 only).
        {"expiresAt": 4102444800},
        {"expiresAt": "4102444800"},
        {"expiresInDays": 0},
        {},
        {"expiresAt": iso(datetime.now(UTC) + timedelta(days=1)), "expiresInDays": 2},
    ):
        response = await incoming.client.put(url, json=bad, headers=incoming.auth)
        assert response.status_code == 400, (bad, response.text)
    assert parsed((await key_of(incoming, trigger.sub, trigger.iss, trigger.kid))["expiresAt"]) == expires

    response = await incoming.client.put(url, json={"expiresAt": None}, headers=incoming.auth)
    assert response.status_code == 200, response.text
    assert "expiresAt" not in (await key_of(incoming, trigger.sub, trigger.iss, trigger.kid))

    flow = incoming.flows["create-issue"]
    response = await incoming.create(flow, {"jwksUrl": "https://keys.example/jwks.json", "expiresInDays": 3})
    assert response.status_code == 400 and "JWKS" in response.text
    response = await incoming.client.put(
        f"/api/v1/flow/{flow}/trigger/jwt/{trigger.iss}/key/nope", json={"expiresInDays": 1}, headers=incoming.auth
    )
    assert response.status_code == 404


async def test_only_owners_and_admins_of_the_subtree_change_an_expiry(
    incoming: Incoming, client_key: tuple[str, str]
) -> None:
    trigger = await incoming.trigger(body={"publicKey": client_key[1]})
    url = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/{trigger.kid}"
    member = await incoming.login("1", "Member")
    stranger = await incoming.login(await incoming.org(), "Owner")
    for headers, status in ((member, 403), (stranger, 404)):
        response = await incoming.client.put(url, json={"expiresInDays": 3}, headers=headers)
        assert response.status_code == status, response.text
        assert "expiresAt" not in await key_of(incoming, trigger.sub, trigger.iss, trigger.kid)
    admin = await incoming.login("1", "Admin")
    response = await incoming.client.put(url, json={"expiresInDays": 3}, headers=admin)
    assert response.status_code == 200, response.text
    assert "expiresAt" in await key_of(incoming, trigger.sub, trigger.iss, trigger.kid)


@pytest.mark.parametrize("settings_overrides", [{"trigger_key_max_age_days": 30}])
async def test_the_hub_wide_maximum_age_applies_to_new_keys(incoming: Incoming, client_key: tuple[str, str]) -> None:
    before = datetime.now(UTC)
    trigger = await incoming.trigger(body={"publicKey": client_key[1]})
    expires = parsed(trigger.raw["keys"][0]["expiresAt"])
    assert before + timedelta(days=30) - timedelta(seconds=1) <= expires <= datetime.now(UTC) + timedelta(days=30)

    flow = incoming.flows["create-issue"]
    response = await incoming.create(flow, {"generateKey": True, "expiresInDays": 31})
    assert response.status_code == 400 and "IHUB_TRIGGER_KEY_MAX_AGE_DAYS" in response.text
    response = await incoming.create(flow, {"generateKey": True, "expiresInDays": 7})
    assert response.status_code == 200
    shorter = parsed(response.json()["triggers"][0]["keys"][0]["expiresAt"])
    assert shorter < datetime.now(UTC) + timedelta(days=7, seconds=1)

    url = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/{trigger.kid}"
    response = await incoming.client.put(url, json={"expiresAt": None}, headers=incoming.auth)
    assert response.status_code == 400 and "IHUB_TRIGGER_KEY_MAX_AGE_DAYS" in response.text
    assert parsed((await key_of(incoming, trigger.sub, trigger.iss, trigger.kid))["expiresAt"]) == expires


async def expiring_events(app: Any) -> list[dict[str, Any]]:
    async with app.state.context.sessions() as session:
        bodies = await session.scalars(
            select(EventDelivery.body)
            .where(EventDelivery.event_type == "trigger.key_expiring")
            .order_by(EventDelivery.id)
        )
        return [json.loads(body)["data"] for body in bodies]


# The deliverer stays off: the test reads the outbox rows the check queued, not a receiver.
@pytest.mark.parametrize("settings_overrides", [{"event_delivery": False}])
async def test_key_expiring_is_queued_once_per_expiry_for_keys_inside_the_notice_window(
    app: Any, incoming: Incoming, client_key: tuple[str, str]
) -> None:
    response = await incoming.client.post(
        "/api/v1/event-endpoint/org/1",
        json={"url": "http://127.0.0.1:9/hook", "eventTypes": ["trigger.key_expiring"]},
        headers=incoming.auth,
    )
    assert response.status_code == 200, response.text
    context = app.state.context
    soon = await incoming.trigger(body={"publicKey": client_key[1], "expiresInDays": 5})
    later = await incoming.trigger(body={"generateKey": True, "expiresInDays": 60})
    await incoming.trigger(body={"generateKey": True})  # no expiry: never a notice

    for _ in range(2):  # two checks (or two hub processes): one event
        await notify_expiring_keys(context.sessions, context.settings)
    [event] = await expiring_events(app)
    assert event == {
        "orgId": "1",
        "projectId": incoming.project_id,
        "flowId": soon.sub,
        "flowKey": "create-issue",
        "clientId": soon.iss,
        "kid": soon.kid,
        "expiresAt": soon.raw["keys"][0]["expiresAt"].replace("+00:00", "Z"),
        "expired": False,
    }

    # A new expiry re-arms the notice: the key gets one for its new date; moving the other one into the window
    # gets it its first.
    for trigger, days in ((soon, 7), (later, 2)):
        url = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/{trigger.kid}"
        response = await incoming.client.put(url, json={"expiresInDays": days}, headers=incoming.auth)
        assert response.status_code == 200, response.text
    for _ in range(2):
        await notify_expiring_keys(context.sessions, context.settings)
    events = await expiring_events(app)
    assert len(events) == 3 and sorted(e["kid"] for e in events[1:]) == sorted([soon.kid, later.kid])
    [renewed] = [e for e in events[1:] if e["kid"] == soon.kid]
    assert parsed(renewed["expiresAt"]) - parsed(events[0]["expiresAt"]) > timedelta(days=1, hours=23)

    # A check "a week later" finds nothing new; notices off (0 days) emit nothing at all.
    week_later = datetime.now(UTC) + timedelta(days=7)
    assert await notify_expiring_keys(context.sessions, context.settings, now=week_later) == 0
    off = context.settings.model_copy(update={"trigger_key_expiry_notice_days": 0})
    assert await notify_expiring_keys(context.sessions, off) == 0
    assert len(await expiring_events(app)) == 3


async def test_the_cli_sets_and_prints_a_key_expiry(
    incoming: Incoming, settings: Settings, client_key: tuple[str, str], db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI calls the service layer tested on both backends above; one backend keeps this fast")
    trigger = await incoming.trigger(body={"publicKey": client_key[1]})
    unset = await ihub(settings, "show", "--flow", trigger.sub)
    assert unset.returncode == 0 and "never" in unset.stdout  # as the console shows a key without expiry
    result = await ihub(settings, "expire", "--client", trigger.iss, "--kid", trigger.kid, "--in-days", "5", "--json")
    [key] = ok(result)["keys"]
    assert timedelta(days=4, hours=23) < parsed(key["expiresAt"]) - datetime.now(UTC) <= timedelta(days=5)
    printed = await ihub(settings, "show", "--flow", trigger.sub)
    assert printed.returncode == 0 and "expires" in printed.stdout and key["expiresAt"][:10] in printed.stdout
    assert "never" not in printed.stdout


@pytest.mark.parametrize("settings_overrides", [{"event_delivery": False}])
async def test_the_executors_housekeeping_runs_the_check(
    app: Any, incoming: Incoming, settings: Settings, client_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wiring: a hub process's executor runs the hourly housekeeping (here at once instead of a minute after its
    start), which sends the notice."""
    response = await incoming.client.post(
        "/api/v1/event-endpoint/org/1",
        json={"url": "http://127.0.0.1:9/hook", "eventTypes": ["trigger.key_expiring"]},
        headers=incoming.auth,
    )
    assert response.status_code == 200, response.text
    soon = await incoming.trigger(body={"publicKey": client_key[1], "expiresInDays": 1})
    assert await expiring_events(app) == []  # this app's first housekeeping pass is a minute away

    monkeypatch.setattr(local_executor, "FIRST_HOUSEKEEPING_DELAY", 0.0)
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        for _ in range(200):
            if await expiring_events(app):
                break
            await asyncio.sleep(0.05)
    assert [event["kid"] for event in await expiring_events(app)] == [soon.kid]
