"""OAuth2 authorization-code providers as data: where a person consents, where codes become tokens, which
scopes to ask for by default, what else the authorize request needs, and how the client authenticates.

A preset is one constant. The client id and secret are never here: they belong to an organization's OAuth app
(ihub.oauth). `generic` has no URLs of its own; its app must give them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OAuthProvider:
    name: str
    title: str
    authorize_url: str | None
    token_url: str | None
    scopes: tuple[str, ...] = ()
    # Extra authorize-request parameters: without them some providers issue no refresh token.
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    # RFC 6749 §2.3.1: HTTP Basic (`client_secret_basic`) or the form body (`client_secret_post`).
    client_auth: str = "client_secret_basic"
    scope_separator: str = " "


GENERIC = OAuthProvider("generic", "Any OAuth2 provider", None, None)

JIRA_CLOUD = OAuthProvider(
    "jira_cloud",
    "Jira Cloud (Atlassian OAuth 2.0 3LO)",
    "https://auth.atlassian.com/authorize",
    "https://auth.atlassian.com/oauth/token",
    # offline_access: Atlassian issues a refresh token only when it is asked for.
    ("read:jira-work", "write:jira-work", "read:jira-user", "offline_access"),
    {"audience": "api.atlassian.com", "prompt": "consent"},
    client_auth="client_secret_post",
)

SLACK = OAuthProvider(
    "slack",
    "Slack (OAuth v2, bot token)",
    "https://slack.com/oauth/v2/authorize",
    "https://slack.com/api/oauth.v2.access",
    ("chat:write", "channels:read"),
    scope_separator=",",
)

GOOGLE = OAuthProvider(
    "google",
    "Google APIs",
    "https://accounts.google.com/o/oauth2/v2/auth",
    "https://oauth2.googleapis.com/token",
    ("openid", "email"),
    # Google issues a refresh token only for offline access, and again on a later consent only with prompt=consent.
    {"access_type": "offline", "prompt": "consent"},
    client_auth="client_secret_post",
)

MICROSOFT_365 = OAuthProvider(
    "microsoft365",
    "Microsoft 365 (Microsoft identity platform, Graph)",
    "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    # offline_access is Microsoft's way of asking for a refresh token.
    ("offline_access", "User.Read"),
    client_auth="client_secret_post",
)

SALESFORCE = OAuthProvider(
    "salesforce",
    "Salesforce",
    "https://login.salesforce.com/services/oauth2/authorize",
    "https://login.salesforce.com/services/oauth2/token",
    ("api", "refresh_token"),
    client_auth="client_secret_post",
)

PROVIDERS: dict[str, OAuthProvider] = {
    p.name: p for p in (GENERIC, JIRA_CLOUD, SLACK, GOOGLE, MICROSOFT_365, SALESFORCE)
}
