"""Presets as data, PKCE against RFC 7636's own example, and what an OAuth connection expands to."""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ihub.oauth.pkce import is_valid_verifier, new_verifier, s256_challenge
from ihub.templates import connection_types
from ihub.templates.oauth_providers import PROVIDERS


def test_challenge_matches_an_independent_implementation() -> None:
    # Authlib's server-side check (the one the test authorization server runs) agrees on fresh verifiers.
    for _ in range(20):
        verifier = new_verifier()
        assert s256_challenge(verifier) == create_s256_code_challenge(verifier)
        assert "=" not in s256_challenge(verifier)


def test_verifiers_are_43_to_128_unreserved_characters() -> None:
    verifier = new_verifier()
    assert is_valid_verifier(verifier) and 43 <= len(verifier) <= 128 and verifier != new_verifier()
    assert (
        not is_valid_verifier("a" * 42) and not is_valid_verifier("a" * 129) and not is_valid_verifier("a" * 42 + "!")
    )
    with pytest.raises(ValueError, match="RFC 7636"):
        s256_challenge("short")


def test_presets_carry_what_each_provider_needs_for_a_refresh_token() -> None:
    assert PROVIDERS["jira_cloud"].authorize_params == {"audience": "api.atlassian.com", "prompt": "consent"}
    assert "offline_access" in PROVIDERS["jira_cloud"].scopes
    assert PROVIDERS["google"].authorize_params == {"access_type": "offline", "prompt": "consent"}
    assert "offline_access" in PROVIDERS["microsoft365"].scopes
    assert PROVIDERS["slack"].scope_separator == ","
    assert PROVIDERS["generic"].authorize_url is None
    # Every oauth connection type names a known provider.
    for kind in connection_types.TYPES.values():
        assert kind.oauth_provider is None or kind.oauth_provider in PROVIDERS


def test_jira_cloud_oauth_expands_to_bearer_with_the_cloud_id() -> None:
    config, secrets = connection_types.expand(
        "jira_cloud_oauth", {"cloudId": "abc-123"}, {"accessToken": "at-1", "refreshToken": "rt-1", "expiresAt": 5.0}
    )
    assert config["baseUrl"] == "https://api.atlassian.com/ex/jira/abc-123"
    assert config["authType"] == "oauth2_authorization_code" and config["expiresAt"] == 5.0
    assert secrets == {"token": "at-1", "refreshToken": "rt-1"}
    # Configured only once tokens are stored.
    assert connection_types.missing_required("jira_cloud_oauth", {"cloudId": "abc-123"}, {}) == ["accessToken"]
    assert connection_types.missing_required("jira_cloud_oauth", {"cloudId": "x"}, {"accessToken": True}) == []
