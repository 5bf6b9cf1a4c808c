"""Connection types as data: the fields each type takes, which are secret, which are required.

Every type ends up as the one type the flow engine speaks, `http`: a preset (`jira`, `servicenow`,
`slack`) is a list of documented fields plus a mapping onto `http` fields (`expand`), never a code
path of its own. docs/connections.md describes the same registry for people.

Values are strings unless a field says otherwise. A field's `default` may name other fields in braces
(`{instanceUrl}/oauth_token.do`); it is filled in from the connection's values when expanded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ihub.common.errors import ApiError
from ihub.flows.connections import ROUTING_HEADERS, origin

# Longest value accepted for one field; keeps a connection row (and its sealed secrets) small.
MAX_VALUE_LENGTH = 8192
MAX_HEADERS = 50


@dataclass(frozen=True)
class Field:
    name: str
    description: str
    secret: bool = False
    required: bool = False
    default: Any = None
    # "string", "url" (http:// or https://), "email", "enum" (one of `choices`), "headers" (object of strings)
    kind: str = "string"
    choices: tuple[str, ...] = ()
    # For an enum: the fields each choice makes required (authType basic → username, password).
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Set by ihub itself (the tokens Connect obtains), never entered through the API.
    obtained: bool = False


@dataclass(frozen=True)
class Probe:
    """The request that checks a connection now (POST /project/{id}/connection/{slot}/test): cheap, read-only,
    answered 2xx by the provider when the credentials are good. `path` is joined to the base URL as a step's is.
    `requires`: a field that must be set for the probe to mean anything (a Slack webhook cannot be checked
    without posting a message). `any_answer`: every answer but 401/403 counts (a HEAD of an unknown API)."""

    method: str
    path: str
    requires: str | None = None
    any_answer: bool = False


@dataclass(frozen=True)
class ConnectionType:
    name: str
    description: str
    fields: tuple[Field, ...]
    # Groups of which at least one field must be set (slack: webhookUrl or botToken).
    one_of: tuple[tuple[str, ...], ...] = ()
    # Maps (config, secrets) with defaults applied onto `http` (config, secrets); None for `http` itself.
    to_http: Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]] | None = None
    probe: Probe = Probe("HEAD", "", any_answer=True)
    # For a connection a person authorizes (OAuth2 authorization code): the provider's name (oauth_providers).
    oauth_provider: str | None = None

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


AUTH_TYPES = ("none", "basic", "bearer", "api_key", "oauth2_client_credentials")

HTTP = ConnectionType(
    name="http",
    description="Any HTTP API: a base URL and one authentication scheme.",
    fields=(
        Field(
            "baseUrl",
            "Base URL that step paths are joined to, e.g. https://api.example.com/v2",
            required=True,
            kind="url",
        ),
        Field(
            "authType",
            "How requests authenticate.",
            default="none",
            kind="enum",
            choices=AUTH_TYPES,
            requires={
                "basic": ("username", "password"),
                "bearer": ("token",),
                "api_key": ("apiKey",),
                "oauth2_client_credentials": ("clientId", "clientSecret", "tokenUrl"),
            },
        ),
        Field("username", "User name for basic auth."),
        Field("password", "Password for basic auth.", secret=True),
        Field("token", "Bearer token.", secret=True),
        Field("apiKey", "API key value.", secret=True),
        Field("apiKeyName", "Header or query parameter that carries the API key.", default="X-API-Key"),
        Field("apiKeyIn", "Where the API key goes.", default="header", kind="enum", choices=("header", "query")),
        Field("clientId", "OAuth2 client id (client credentials grant)."),
        Field("clientSecret", "OAuth2 client secret.", secret=True),
        Field("tokenUrl", "OAuth2 token endpoint.", kind="url"),
        Field("scope", "OAuth2 scope, space-separated."),
        Field("headers", "Extra headers sent with every request (object of strings).", kind="headers"),
        Field("probePath", "Path that POST .../test checks with a GET (2xx: connected); a HEAD of baseUrl without."),
    ),
)


def _jira_to_http(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"baseUrl": config.get("siteUrl"), "authType": "basic", "username": config.get("email")},
        {"password": secrets.get("apiToken")},
    )


JIRA = ConnectionType(
    name="jira",
    description="Jira Cloud: the site URL and an Atlassian API token, sent as basic auth (email:token).",
    fields=(
        Field("siteUrl", "The Jira Cloud site, e.g. https://acme.atlassian.net", required=True, kind="url"),
        Field("email", "Email of the Atlassian account that owns the API token.", required=True, kind="email"),
        Field("apiToken", "API token from id.atlassian.com → Security → API tokens.", secret=True, required=True),
    ),
    to_http=_jira_to_http,
    probe=Probe("GET", "/rest/api/3/myself"),
)


def _servicenow_to_http(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    http = {"baseUrl": config.get("instanceUrl"), "authType": config.get("authType")}
    if config.get("authType") == "oauth2_client_credentials":
        http.update(clientId=config.get("clientId"), tokenUrl=config.get("tokenUrl"))
        return http, {"clientSecret": secrets.get("clientSecret")}
    http["username"] = config.get("username")
    return http, {"password": secrets.get("password")}


SERVICENOW = ConnectionType(
    name="servicenow",
    description="A ServiceNow instance, with basic auth or OAuth2 client credentials.",
    fields=(
        Field("instanceUrl", "The instance, e.g. https://acme.service-now.com", required=True, kind="url"),
        Field(
            "authType",
            "How requests authenticate.",
            default="basic",
            kind="enum",
            choices=("basic", "oauth2_client_credentials"),
            requires={"basic": ("username", "password"), "oauth2_client_credentials": ("clientId", "clientSecret")},
        ),
        Field("username", "User name for basic auth."),
        Field("password", "Password for basic auth.", secret=True),
        Field("clientId", "OAuth2 client id (System OAuth → Application Registry)."),
        Field("clientSecret", "OAuth2 client secret.", secret=True),
        Field("tokenUrl", "OAuth2 token endpoint.", default="{instanceUrl}/oauth_token.do", kind="url"),
    ),
    to_http=_servicenow_to_http,
    probe=Probe("GET", "/api/now/table/sys_user?sysparm_limit=1"),
)


def _slack_to_http(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if secrets.get("botToken"):
        return {"baseUrl": "https://slack.com/api", "authType": "bearer"}, {"token": secrets["botToken"]}
    # The webhook URL is itself the credential: it becomes the base URL, and stays among the secrets
    # (as `webhookUrl`, which `http` ignores) so that whoever redacts secret values redacts it too.
    return {"baseUrl": secrets.get("webhookUrl"), "authType": "none"}, {"webhookUrl": secrets.get("webhookUrl")}


SLACK = ConnectionType(
    name="slack",
    description="Slack: an incoming-webhook URL (post to one channel) or a bot token (Web API, bearer).",
    fields=(
        Field("webhookUrl", "Incoming webhook URL, https://hooks.slack.com/services/...", secret=True, kind="url"),
        Field("botToken", "Bot user OAuth token (xoxb-...); requests go to https://slack.com/api.", secret=True),
    ),
    one_of=(("webhookUrl", "botToken"),),
    to_http=_slack_to_http,
    probe=Probe("POST", "auth.test", requires="botToken"),
)


# -- OAuth2 authorization code: a person connects their own account (ihub.oauth) ----------------------------
# The tokens are obtained by Connect, never entered; `accessToken` is required, so the connection counts as
# configured only once a person has connected it. `expiresAt` (epoch seconds) is sealed with the tokens but is a
# number, so redaction (strings only) never scrubs a timestamp out of a run record.
OAUTH_TOKEN_FIELDS = (
    Field("accessToken", "Access token (obtained by Connect).", secret=True, required=True, obtained=True),
    Field("refreshToken", "Refresh token (obtained by Connect).", secret=True, obtained=True),
    Field(
        "expiresAt", "When the access token expires, epoch seconds (obtained by Connect).", secret=True, obtained=True
    ),
    # Tokens belong to the client that obtained them: refreshes use this app even if another one applies later.
    Field("appId", "The OAuth app the tokens were obtained with (set by Connect).", secret=True, obtained=True),
)


def _oauth_to_http(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # Bearer auth with the current access token; the engine refreshes it through the refresh token.
    return (
        {
            "baseUrl": config.get("baseUrl"),
            "authType": "oauth2_authorization_code",
            "expiresAt": secrets.get("expiresAt"),
        },
        {"token": secrets.get("accessToken"), "refreshToken": secrets.get("refreshToken")},
    )


# What `POST .../connection/{slot}/test` asks each provider: an identity endpoint every granted scope may read.
OAUTH_PROBES = {
    "jira_cloud_oauth": Probe("GET", "/rest/api/3/myself"),
    "slack_oauth": Probe("POST", "auth.test"),
    "google_oauth": Probe("GET", "/oauth2/v3/userinfo"),
    "microsoft365_oauth": Probe("GET", "/me"),
    "salesforce_oauth": Probe("GET", "/services/oauth2/userinfo"),
}


def _oauth_type(name: str, provider: str, description: str, *fields: Field) -> ConnectionType:
    return ConnectionType(
        name=name,
        description=description,
        fields=(
            *fields,
            Field("scope", "Scopes to ask for, space-separated (default: the provider's, or the OAuth app's)."),
            *OAUTH_TOKEN_FIELDS,
        ),
        to_http=_oauth_to_http,
        oauth_provider=provider,
        probe=OAUTH_PROBES.get(name, Probe("HEAD", "", any_answer=True)),
    )


OAUTH2_AUTHORIZATION_CODE = _oauth_type(
    "oauth2_authorization_code",
    "generic",
    "Any OAuth2 API a person connects (authorization code with PKCE); the organization's `generic` OAuth app "
    "gives the authorize and token URLs.",
    Field("baseUrl", "Base URL that step paths are joined to.", required=True, kind="url"),
)
JIRA_CLOUD_OAUTH = _oauth_type(
    "jira_cloud_oauth",
    "jira_cloud",
    "Jira Cloud through Atlassian OAuth 2.0 (3LO): a person connects their Atlassian account.",
    Field("cloudId", "The site's cloud id (https://<site>.atlassian.net/_edge/tenant_info).", required=True),
    Field("baseUrl", "API base URL.", default="https://api.atlassian.com/ex/jira/{cloudId}", kind="url"),
)
SLACK_OAUTH = _oauth_type(
    "slack_oauth",
    "slack",
    "Slack Web API with a bot token a workspace admin installs (OAuth v2).",
    Field("baseUrl", "API base URL.", default="https://slack.com/api", kind="url"),
)
GOOGLE_OAUTH = _oauth_type(
    "google_oauth",
    "google",
    "Google APIs on behalf of a person (offline access: refreshed by ihub).",
    Field("baseUrl", "API base URL.", default="https://www.googleapis.com", kind="url"),
)
MICROSOFT365_OAUTH = _oauth_type(
    "microsoft365_oauth",
    "microsoft365",
    "Microsoft Graph on behalf of a person (Microsoft 365).",
    Field("baseUrl", "API base URL.", default="https://graph.microsoft.com/v1.0", kind="url"),
)
SALESFORCE_OAUTH = _oauth_type(
    "salesforce_oauth",
    "salesforce",
    "Salesforce REST API on behalf of a person.",
    Field("baseUrl", "The org's My Domain URL, e.g. https://acme.my.salesforce.com", required=True, kind="url"),
)

TYPES: dict[str, ConnectionType] = {
    t.name: t
    for t in (
        HTTP,
        JIRA,
        SERVICENOW,
        SLACK,
        OAUTH2_AUTHORIZATION_CODE,
        JIRA_CLOUD_OAUTH,
        SLACK_OAUTH,
        GOOGLE_OAUTH,
        MICROSOFT365_OAUTH,
        SALESFORCE_OAUTH,
    )
}


def get_type(name: str) -> ConnectionType:
    try:
        return TYPES[name]
    except KeyError:
        raise ApiError(400, f"unknown connection type {name!r}", "unknown_connection_type") from None


def is_known(name: object) -> bool:
    return isinstance(name, str) and name in TYPES


def describe() -> list[dict[str, Any]]:
    """The registry as JSON (for documentation, the console and clients)."""
    return [
        {
            "type": t.name,
            "description": t.description,
            "oneOf": [list(group) for group in t.one_of],
            "oauthProvider": t.oauth_provider,
            "fields": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "secret": f.secret,
                    "required": f.required,
                    "default": f.default,
                    "choices": list(f.choices),
                    "requires": {k: list(v) for k, v in f.requires.items()},
                    "description": f.description,
                    "obtained": f.obtained,
                }
                for f in t.fields
            ],
            "probe": {"method": t.probe.method, "path": t.probe.path},
        }
        for t in TYPES.values()
    ]


# -- validation ----------------------------------------------------------------------------------


def _check_value(spec: Field, value: Any, where: str) -> Any:
    def bad(message: str) -> ApiError:
        return ApiError(400, f"{where}: {message}", "invalid_connection_field")

    if spec.kind == "headers":
        if not isinstance(value, dict):
            raise bad("must be an object of header names to string values")
        if len(value) > MAX_HEADERS:
            raise bad(f"at most {MAX_HEADERS} headers")
        for key, item in value.items():
            if not key or not isinstance(item, str) or len(key) + len(item) > MAX_VALUE_LENGTH:
                raise bad(f"header {key!r} must have a string value")
            if key.strip().lower() in ROUTING_HEADERS:
                raise bad(f"header {key!r} is not allowed: it would decide which server gets the credentials")
        return dict(value)
    if not isinstance(value, str):
        raise bad("must be a string")
    value = value.strip()
    if not value:
        raise bad("must not be empty (send null to clear it)")
    if len(value) > MAX_VALUE_LENGTH:
        raise bad(f"longer than {MAX_VALUE_LENGTH} characters")
    if spec.kind == "url" and (not value.lower().startswith(("https://", "http://")) or origin(value) is None):
        raise bad("must be an http:// or https:// URL")
    if spec.kind == "url" and not spec.secret and httpx.URL(value).userinfo:
        # The URL is plain config, returned by the API and outside the credential binding: no credentials in it.
        raise bad("must not contain a user name or password (use the connection's secret fields)")
    if spec.kind == "email" and ("@" not in value or value.startswith("@") or value.endswith("@")):
        raise bad("must be an email address")
    if spec.kind == "enum" and value not in spec.choices:
        raise bad(f"must be one of {', '.join(spec.choices)}")
    if spec.kind == "url":
        value = value.rstrip("/")
    return value


def validate_fields(type_name: str, values: Mapping[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split incoming fields into non-secret config and secrets, each value checked.

    A value of None is kept as None: it means "clear this field" to whoever merges the result.
    Errors name the field's JSON path: `connections[0].details.siteUrl: must be an http:// or https:// URL`.
    """
    kind = get_type(type_name)
    config: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for name, value in values.items():
        spec = kind.field(name)
        if spec is None:
            raise ApiError(
                400,
                f"{path}.{name}: unknown field for connection type {kind.name!r} "
                f"(fields: {', '.join(kind.field_names)})",
                "invalid_connection_field",
            )
        if spec.obtained:
            raise ApiError(
                400,
                f"{path}.{name}: set by Connect (POST /api/v1/project/{{id}}/connection/{{slot}}/authorize), "
                "not entered",
                "invalid_connection_field",
            )
        checked = None if value is None else _check_value(spec, value, f"{path}.{name}")
        (secrets if spec.secret else config)[name] = checked
    return config, secrets


def with_defaults(type_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Config with every unset non-secret default filled in (`{field}` placeholders resolved)."""
    kind = get_type(type_name)
    result = dict(config)
    for spec in kind.fields:
        if spec.secret or spec.default is None or result.get(spec.name) is not None:
            continue
        default = spec.default
        if isinstance(default, str) and "{" in default:
            try:
                default = default.format_map({k: v for k, v in result.items() if isinstance(v, str)})
            except KeyError:
                continue  # the field it derives from is not set yet; nothing to default to
        result[spec.name] = default
    return result


def missing_required(
    type_name: str, config: Mapping[str, Any], secrets: Mapping[str, Any], extra: tuple[str, ...] | list[str] = ()
) -> list[str]:
    """Required fields not set: the type's own, those the chosen enum values require (authType basic →
    username, password), every member of a one-of group none of which is set, and `extra` (fields a
    template slot asks for). `secrets` only needs the names of the secrets that are set."""
    kind = get_type(type_name)
    values = {**with_defaults(type_name, config), **{k: v for k, v in secrets.items() if v is not None}}

    def is_set(name: str) -> bool:
        return values.get(name) not in (None, "", {})

    needed: list[str] = [f.name for f in kind.fields if f.required]
    for spec in kind.fields:
        choice = values.get(spec.name)
        if spec.requires and isinstance(choice, str):
            needed.extend(spec.requires.get(choice, ()))
    needed.extend(extra)
    for group in kind.one_of:
        if not any(is_set(name) for name in group):
            needed.extend(group)
    missing: list[str] = []
    for name in needed:
        if not is_set(name) and name not in missing:
            missing.append(name)
    return missing


# The `http` fields that decide where, and in what form, a connection's secrets are sent: the origins they go to
# (base URL, OAuth2 token URL) and their placement (auth type, API key header or query parameter name).
TARGET_FIELDS = ("baseUrl", "tokenUrl", "authType", "apiKeyName", "apiKeyIn")


def target(type_name: str, config: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Where a connection's secrets go, as `TARGET_FIELDS` of its expansion to `http`.

    Taken after expansion, so every preset field that feeds one (a Jira `siteUrl`, a ServiceNow `instanceUrl`
    and the token URL defaulted from it, a Slack webhook URL) is covered without a list per type. Stored secrets
    are bound to this value: see ihub.projects.service.
    """
    expanded, _ = expand(type_name, config, secrets)
    return {name: expanded[name] for name in TARGET_FIELDS if expanded.get(name) is not None}


def expand(
    type_name: str, config: Mapping[str, Any], secrets: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The connection as plain `http` (config, secrets), defaults applied and unset fields dropped.

    The flow engine only ever sees this shape, so a preset never needs code of its own there.
    """
    kind = get_type(type_name)
    full_config = with_defaults(type_name, config)
    full_secrets = {k: v for k, v in secrets.items() if v is not None}
    if kind.to_http is not None:
        full_config, full_secrets = kind.to_http(full_config, full_secrets)
        full_config = with_defaults("http", full_config)
    return (
        {k: v for k, v in full_config.items() if v is not None},
        {k: v for k, v in full_secrets.items() if v is not None},
    )
