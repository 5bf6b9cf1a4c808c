"""Who is calling: the TCP peer, or, behind reverse proxies the operator trusts, the address they vouch for.

Each proxy appends the address it received the request from to `X-Forwarded-For`, so the header reads
`client, proxy1, proxy2` and only its right end is written by proxies we trust: anything left of the first
untrusted entry may have been typed by the client. We therefore walk from the right, skipping trusted proxies,
and take the first address that is not one of them. A peer that is not a trusted proxy is the client itself,
whatever header it sends (otherwise every failure limit keyed by address could be dodged by a made-up header).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def parse_address(text: str) -> Address | None:
    """An IP address from a header entry (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:5678`, `::1`), or None."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: `peer` unless it is a trusted proxy, else the right-most untrusted hop."""
    peer_address = parse_address(peer)
    if not trusted or peer_address is None or not is_trusted(peer_address, trusted):
        return peer
    nearest = peer_address
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # Not something a proxy writes: stop at the nearest hop we can vouch for.
            break
        if not is_trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)
