"""The egress clients share one TLS context per process (building one costs 10-20 ms of CPU on the event
loop), and that context still checks certificates and host names."""

from __future__ import annotations

import ssl

from ihub.egress.policy import EgressPolicy
from ihub.egress.transport import egress_client, shared_tls_context


def test_egress_clients_share_one_tls_context_that_verifies_certificates() -> None:
    first, second = egress_client(EgressPolicy()), egress_client(EgressPolicy())
    contexts = {id(client._transport._pool._ssl_context) for client in (first, second)}  # type: ignore[attr-defined]
    assert contexts == {id(shared_tls_context())}
    context = shared_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
