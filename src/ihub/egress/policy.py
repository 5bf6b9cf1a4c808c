"""Which addresses the hub may connect to on a tenant's behalf.

A flow, a connection, an OAuth2 token URL and a JWKS URL are all chosen by tenants, and whatever the hub
fetches may end up readable in a run record. Without a policy a tenant reaches the hub itself, the database
next to it, the cloud metadata service (169.254.169.254, which hands out the machine's credentials) and
every private network the hub sits in. So by default only globally routable unicast addresses are allowed.

The check is on the address actually connected to: a name is resolved once, every address it resolves to
is checked, and the connection goes to a checked address (see ihub.egress.transport), so a second
resolution (DNS rebinding) cannot swap a public address for a private one.

`IHUB_EGRESS_ALLOW` (CIDRs and host names) opens what an on-premises deployment needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(Exception):
    """An outgoing connection the policy does not allow; raised before any connection is attempted."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"the egress policy refuses {host}: {reason} (IHUB_EGRESS_ALLOW opens it)")
        self.host = host
        self.reason = reason


# Special-purpose ranges (IANA IPv4/IPv6 Special-Purpose Address Registries) and why each is refused.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "an unspecified address ('this network', RFC 1122)"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a shared carrier-grade NAT address (RFC 6598)"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata services live here)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "an IETF protocol address (RFC 6890)"),
    ("192.0.2.0/24", "a documentation address (RFC 5737)"),
    ("192.88.99.0/24", "a 6to4 relay anycast address (RFC 7526)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
    ("198.51.100.0/24", "a documentation address (RFC 5737)"),
    ("203.0.113.0/24", "a documentation address (RFC 5737)"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved or broadcast address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
    ("100::/64", "a discard-only address (RFC 6666)"),
    ("2001::/32", "a Teredo tunnel address (RFC 4380)"),
    ("2001:db8::/32", "a documentation address (RFC 3849)"),
    ("fc00::/7", "a unique-local address (RFC 4193)"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated, RFC 3879)"),
    ("ff00::/8", "a multicast address"),
)
REFUSED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in _REFUSED)

# IPv6 forms that carry an IPv4 address in their low 32 bits: the IPv4 address is what gets reached.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    (::a.b.c.d, deprecated but still routed by some stacks), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one, in any form a resolver accepts as a literal: dotted quad,
    IPv6 (bracketed or not), and the legacy inet_aton forms `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return _legacy_ipv4(text)


def _legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """inet_aton(3): one to four parts, each decimal, octal (leading 0) or hex (0x); the last part fills
    the remaining bytes. `127.1` is 127.0.0.1 and `2130706433` is 127.0.0.1 to every C resolver."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                numbers.append(int(part[2:], 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part[1:], 8))
            else:
                numbers.append(int(part, 10) if part.isdigit() else -1)
        except ValueError:
            return None
    if any(n < 0 for n in numbers) or any(n > 255 for n in numbers[:-1]):
        return None
    last_bytes = 5 - len(numbers)
    if numbers[-1] >= 256**last_bytes:
        return None
    value = 0
    for n in numbers[:-1]:
        value = value * 256 + n
    value = value * 256**last_bytes + numbers[-1]
    return ipaddress.IPv4Address(value)


def refusal_reason(address: IPAddress) -> str | None:
    """Why the default policy refuses `address`, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"{reason}, in an IPv6 form" if reason else None
    for network, why in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return why
    if not address.is_global:
        # Whatever the table above misses and Python's copy of the IANA registries knows.
        return "not a globally routable address"
    return None


def _normalize_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _is_local_name(name: str) -> bool:
    # RFC 6761 §6.3: `localhost` and every name under it resolve to loopback, whatever DNS says.
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class EgressPolicy:
    """The default refusals, minus what the allow-list opens. Entries are CIDRs (`10.1.0.0/16`, `::1`)
    or host names (`api.internal`, or `*.corp.example` for every name under corp.example)."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_names: frozenset[str] = frozenset()
    allowed_suffixes: tuple[str, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normalize_name(entry)
            label_chars = name.removeprefix("*.").replace("-", "").replace("_", "").replace(".", "")
            if not label_chars.isalnum() or not label_chars.isascii() or "/" in name:
                raise ValueError(f"egress allow-list entry {raw!r} is neither a CIDR nor a host name")
            if name.startswith("*."):
                suffixes.append(name[1:])
            else:
                names.add(name)
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def allows_name(self, host: str) -> bool:
        name = _normalize_name(host)
        return name in self.allowed_names or any(name.endswith(suffix) for suffix in self.allowed_suffixes)

    def _allows_network(self, address: IPAddress) -> bool:
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            forms.append(inner)
        return any(form.version == net.version and form in net for form in forms for net in self.allowed_networks)

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise EgressRefused unless `address` (which `host` resolved to) may be connected to."""
        if self.allows_name(host) or self._allows_network(address):
            return
        reason = refusal_reason(address)
        if reason is not None:
            # A name's resolved address is not shown: on split-horizon DNS it would map the internal network.
            literal = parse_ip(host) is not None
            raise EgressRefused(_normalize_name(host), f"{'it is' if literal else 'it resolves to'} {reason}")

    def check_host(self, host: str) -> None:
        """What can be decided without DNS: IP literals in every form, and `localhost` names. Used to refuse
        a URL when it is entered; the address actually connected to is checked again when connecting."""
        if self.allows_name(host):
            return
        literal = parse_ip(host)
        if literal is not None:
            self.check_address(host, literal)
        elif _is_local_name(_normalize_name(host)):
            for loopback in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")):
                self.check_address(host, loopback)

    def check_url(self, url: str) -> None:
        """check_host for a URL's host (absolute http(s) URLs; anything else is the caller's to refuse)."""
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return
        if host:
            self.check_host(host)


def policy_from_settings(settings: object) -> EgressPolicy:
    return EgressPolicy.from_entries(getattr(settings, "egress_allow", None) or [])
