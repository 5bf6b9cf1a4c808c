"""The connection type registry: field checks, required fields, and expansion onto plain `http`."""

from __future__ import annotations

import pytest

from ihub.common.errors import ApiError
from ihub.templates.connection_types import TYPES, describe, expand, missing_required, validate_fields


def test_registry_lists_the_documented_types_and_fields():
    assert sorted(TYPES) == [
        "google_oauth", "http", "jira", "jira_cloud_oauth", "microsoft365_oauth", "oauth2_authorization_code",
        "salesforce_oauth", "servicenow", "slack", "slack_oauth",
    ]  # fmt: skip
    fields = {t["type"]: {f["name"]: f for f in t["fields"]} for t in describe()}
    assert list(fields["http"]) == [
        "baseUrl", "authType", "username", "password", "token", "apiKey", "apiKeyName", "apiKeyIn",
        "clientId", "clientSecret", "tokenUrl", "scope", "headers", "probePath",
    ]  # fmt: skip
    assert {name for name, f in fields["http"].items() if f["secret"]} == {
        "password", "token", "apiKey", "clientSecret"
    }  # fmt: skip
    assert fields["http"]["apiKeyName"]["default"] == "X-API-Key"
    assert fields["jira"]["apiToken"]["secret"] and fields["jira"]["apiToken"]["required"]
    assert fields["servicenow"]["tokenUrl"]["default"] == "{instanceUrl}/oauth_token.do"
    assert fields["slack"]["webhookUrl"]["secret"] and fields["slack"]["botToken"]["secret"]


def test_validate_fields_splits_config_and_secrets():
    config, secrets = validate_fields(
        "jira", {"siteUrl": "https://acme.atlassian.net/", "email": "a@b.co", "apiToken": "t0k"}, "c"
    )
    assert config == {"siteUrl": "https://acme.atlassian.net", "email": "a@b.co"}
    assert secrets == {"apiToken": "t0k"}
    # null is kept: it tells the merge to clear the field.
    assert validate_fields("jira", {"apiToken": None}, "c") == ({}, {"apiToken": None})


@pytest.mark.parametrize(
    "kind,values,expected",
    [
        ("jira", {"site": "x"}, "connections[0].details.site: unknown field for connection type 'jira'"),
        ("jira", {"siteUrl": 5}, "connections[0].details.siteUrl: must be a string"),
        ("jira", {"siteUrl": "ftp://x"}, "connections[0].details.siteUrl: must be an http:// or https:// URL"),
        ("jira", {"email": "nobody"}, "connections[0].details.email: must be an email address"),
        ("jira", {"apiToken": "  "}, "connections[0].details.apiToken: must not be empty"),
        ("http", {"authType": "digest"}, "connections[0].details.authType: must be one of none, basic"),
        ("http", {"apiKeyIn": "cookie"}, "connections[0].details.apiKeyIn: must be one of header, query"),
        ("http", {"headers": ["a"]}, "connections[0].details.headers: must be an object"),
        ("http", {"headers": {"X-A": 1}}, "connections[0].details.headers: header 'X-A' must have a string value"),
        ("nope", {}, "unknown connection type 'nope'"),
    ],
)
def test_validate_fields_errors_name_the_path(kind, values, expected):
    with pytest.raises(ApiError) as caught:
        validate_fields(kind, values, "connections[0].details")
    assert caught.value.status == 400
    assert caught.value.message.startswith(expected), caught.value.message


def test_missing_required_follows_type_auth_choice_one_of_and_slot_extras():
    assert missing_required("jira", {}, {}) == ["siteUrl", "email", "apiToken"]
    assert missing_required("jira", {"siteUrl": "https://x", "email": "a@b.co"}, {"apiToken": True}) == []
    assert missing_required("http", {}, {}) == ["baseUrl"]
    assert missing_required("http", {"baseUrl": "https://x", "authType": "basic"}, {}) == ["username", "password"]
    assert missing_required("http", {"baseUrl": "https://x", "authType": "oauth2_client_credentials"}, {}) == [
        "clientId", "clientSecret", "tokenUrl"
    ]  # fmt: skip
    # ServiceNow defaults to basic auth; its OAuth2 token URL has a default, so it is never missing.
    assert missing_required("servicenow", {"instanceUrl": "https://x"}, {}) == ["username", "password"]
    assert missing_required(
        "servicenow", {"instanceUrl": "https://x", "authType": "oauth2_client_credentials", "clientId": "c"},
        {"clientSecret": True},
    ) == []  # fmt: skip
    assert missing_required("slack", {}, {}) == ["webhookUrl", "botToken"]
    assert missing_required("slack", {}, {"botToken": True}) == []
    # A template slot may ask for more than the type requires.
    assert missing_required("http", {"baseUrl": "https://x"}, {}, ["scope"]) == ["scope"]


def test_expand_jira_to_basic_auth_http():
    config, secrets = expand("jira", {"siteUrl": "https://acme.atlassian.net", "email": "a@b.co"}, {"apiToken": "T"})
    assert config == {
        "baseUrl": "https://acme.atlassian.net", "authType": "basic", "username": "a@b.co",
        "apiKeyName": "X-API-Key", "apiKeyIn": "header",
    }  # fmt: skip
    assert secrets == {"password": "T"}


def test_expand_servicenow_both_auth_types():
    config, secrets = expand("servicenow", {"instanceUrl": "https://sn.example", "username": "u"}, {"password": "p"})
    assert (config["baseUrl"], config["authType"], config["username"], secrets) == (
        "https://sn.example", "basic", "u", {"password": "p"}
    )  # fmt: skip
    config, secrets = expand(
        "servicenow",
        {"instanceUrl": "https://sn.example", "authType": "oauth2_client_credentials", "clientId": "c"},
        {"clientSecret": "s", "password": "unused"},
    )
    assert config["tokenUrl"] == "https://sn.example/oauth_token.do"
    assert (config["authType"], config["clientId"], secrets) == (
        "oauth2_client_credentials",
        "c",
        {"clientSecret": "s"},
    )
    assert "username" not in config


def test_expand_slack_webhook_or_bot():
    config, secrets = expand("slack", {}, {"botToken": "xoxb-1"})
    assert (config["baseUrl"], config["authType"], secrets) == ("https://slack.com/api", "bearer", {"token": "xoxb-1"})
    config, secrets = expand("slack", {}, {"webhookUrl": "https://hooks.slack.com/services/T/B/X"})
    assert (config["baseUrl"], config["authType"]) == ("https://hooks.slack.com/services/T/B/X", "none")
    # The webhook URL is the credential: it stays among the secrets so it is redacted like one.
    assert secrets == {"webhookUrl": "https://hooks.slack.com/services/T/B/X"}


def test_expand_http_applies_defaults_and_drops_unset():
    config, secrets = expand("http", {"baseUrl": "https://api.example", "authType": "api_key"}, {"apiKey": "k"})
    assert config == {"baseUrl": "https://api.example", "authType": "api_key", "apiKeyName": "X-API-Key",
                      "apiKeyIn": "header"}  # fmt: skip
    assert secrets == {"apiKey": "k"}
