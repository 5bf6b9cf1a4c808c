"""X-Forwarded-For through a real `ihub serve` (uvicorn): believed only from IHUB_TRUSTED_PROXIES, so a client
cannot buy fresh login attempts by writing a new address into the header."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import requests

pytestmark = pytest.mark.slow

LIMITS = {"IHUB_TOKEN_FAILURES_PER_USER_AND_CLIENT": "2", "IHUB_TOKEN_FAILURES_PER_CLIENT": "50"}


@pytest.fixture
def hub_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment `live_hub` starts `ihub serve` with (request it before `live_hub`)."""
    monkeypatch.delenv("IHUB_TRUSTED_PROXIES", raising=False)
    for name, value in request.param.items():
        monkeypatch.setenv(name, value)


def attempt(hub, secret: str, forwarded_for: str | None = None) -> int:  # noqa: ANN001
    nonce = str(uuid.uuid4())
    body = {"userId": hub.user_id, "nonce": nonce, "hash": hashlib.sha256((secret + nonce).encode()).hexdigest()}
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(hub.url + "/api/v1/token", json=body, headers=headers, timeout=10).status_code


@pytest.mark.parametrize("hub_env", [LIMITS], indirect=True)
def test_without_trusted_proxies_the_header_buys_nothing(hub_env, live_hub) -> None:  # noqa: ANN001
    assert attempt(live_hub, "wrong", "198.51.100.1") == 401
    assert attempt(live_hub, "wrong", "198.51.100.2") == 401
    # Both failures were the peer's (127.0.0.1): a third made-up address is refused even with the secret.
    assert attempt(live_hub, live_hub.secret, "198.51.100.3") == 429


@pytest.mark.parametrize("hub_env", [{**LIMITS, "IHUB_TRUSTED_PROXIES": "127.0.0.0/8"}], indirect=True)
def test_a_trusted_proxy_names_the_client(hub_env, live_hub) -> None:  # noqa: ANN001
    assert attempt(live_hub, "wrong", "198.51.100.1") == 401
    assert attempt(live_hub, "wrong", "10.1.1.1, 198.51.100.1") == 401
    assert attempt(live_hub, live_hub.secret, "198.51.100.1") == 429
    # Another client behind the same proxy, and the proxy itself, are other addresses.
    assert attempt(live_hub, live_hub.secret, "198.51.100.2") == 200
    assert attempt(live_hub, live_hub.secret) == 200
