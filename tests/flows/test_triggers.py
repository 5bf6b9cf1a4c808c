"""Trigger payloads keep the format runs have always stored (field names and order), whoever starts the run."""

from __future__ import annotations

from datetime import UTC, datetime

from ihub.flows.triggers import JwtTrigger, ManualTrigger, ScheduleTrigger, received, replayed

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_jwt_payload() -> None:
    body = {"body": {"a": 1}, "contentType": "application/json"}
    payload = received(JwtTrigger.payload(body, headers={"x-a": "1"}, env="prod", client_id="c1"), AT)
    assert payload == {
        "receivedAt": AT.isoformat(),
        "body": {"a": 1},
        "contentType": "application/json",
        "headers": {"x-a": "1"},
        "env": "prod",
        "clientId": "c1",
    }
    assert list(payload) == ["receivedAt", "body", "contentType", "headers", "env", "clientId"]
    encoded = {"body": "AAE=", "bodyEncoding": "base64", "contentType": "application/octet-stream"}
    payload = JwtTrigger.payload(encoded, headers={}, env="dev", client_id="c2")
    assert list(payload) == ["body", "bodyEncoding", "contentType", "headers", "env", "clientId"]


def test_manual_and_schedule_payloads() -> None:
    manual = ManualTrigger.payload([1], content_type="application/json", user_id="7")
    assert manual == {"body": [1], "contentType": "application/json", "headers": {}, "env": None, "userId": "7"}
    assert list(manual) == ["body", "contentType", "headers", "env", "userId"]
    tick = ScheduleTrigger.model_validate({"type": "schedule", "cron": "0 * * * *"}).latest_tick(AT)
    assert tick == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    schedule = ScheduleTrigger.payload(tick)
    assert schedule == {"body": None, "headers": {}, "env": None, "scheduledFor": tick.isoformat()}


def test_replay_drops_the_old_stamp_only() -> None:
    stored = received(ManualTrigger.payload(None, content_type="text/plain", user_id="1"), AT)
    assert replayed(stored) == ManualTrigger.payload(None, content_type="text/plain", user_id="1")
    assert replayed(None) == {}
