"""Outgoing calls to tenant-chosen URLs: the egress policy (which addresses may be connected to), a transport
that enforces it on the address actually connected to, and a fetch with a total deadline and a size cap.

Every outgoing call (http steps, OAuth2 token fetches, JWKS fetches) goes through `egress_client` and `fetch`;
event webhooks go through `egress_client` and read only the answer's status (ihub.events.delivery)."""

from ihub.egress.fetch import DeadlineExceeded, FetchedResponse, FetchLimits, ResponseTooLarge, fetch
from ihub.egress.policy import EgressPolicy, EgressRefused, policy_from_settings
from ihub.egress.transport import EgressTransport, PolicyNetworkBackend, egress_client

__all__ = [
    "DeadlineExceeded",
    "EgressPolicy",
    "EgressRefused",
    "EgressTransport",
    "FetchedResponse",
    "FetchLimits",
    "PolicyNetworkBackend",
    "ResponseTooLarge",
    "egress_client",
    "fetch",
    "policy_from_settings",
]
