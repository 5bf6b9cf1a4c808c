"""Who the caller is behind reverse proxies: `forwarded_client` and the IHUB_TRUSTED_PROXIES setting."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ihub.common.proxies import forwarded_client
from ihub.config import Settings

TRUSTED = [ip_network("10.9.0.0/16"), ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        # An untrusted peer is the client, whatever it claims.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        # One trusted proxy: the address it appended.
        ("10.9.0.1", ["198.51.100.1"], "198.51.100.1"),
        # The client's own entries on the left are ignored: the right-most untrusted hop wins.
        ("10.9.0.1", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
        # A chain of trusted proxies is skipped; several header lines read as one list.
        ("10.9.0.1", ["1.1.1.1, 198.51.100.1", "10.9.3.3"], "198.51.100.1"),
        # Ports and brackets as some proxies write them; IPv4-mapped IPv6 is the IPv4 address.
        ("10.9.0.1", ["198.51.100.1:5555"], "198.51.100.1"),
        ("10.9.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("fd00::2", ["::ffff:198.51.100.9"], "198.51.100.9"),
        # Garbage is never a client address: stop at the nearest hop a trusted proxy vouched for.
        ("10.9.0.1", ["not-an-ip, 10.9.0.2"], "10.9.0.2"),
        # No header, or only trusted hops: the left-most trusted address.
        ("10.9.0.1", [], "10.9.0.1"),
        ("10.9.0.1", ["10.9.7.7"], "10.9.7.7"),
        ("testclient", ["198.51.100.1"], "testclient"),
    ],
)
def test_forwarded_client(peer: str, header: list[str], expected: str) -> None:
    assert forwarded_client(peer, header, TRUSTED) == expected


def test_without_trusted_proxies_the_header_never_counts() -> None:
    assert forwarded_client("10.9.0.1", ["198.51.100.1"], []) == "10.9.0.1"


addresses = st.ip_addresses(v=4).map(str)


@given(peer=addresses, forged=st.lists(st.text(max_size=40) | addresses, max_size=5))
def test_an_untrusted_peer_cannot_choose_its_address(peer: str, forged: list[str]) -> None:
    if IPv4Address(peer) in TRUSTED[0]:
        return
    assert forwarded_client(peer, forged, TRUSTED) == peer


@given(client=addresses, forged=st.lists(st.text(max_size=40) | addresses, max_size=5))
def test_what_the_client_writes_left_of_the_proxy_never_wins(client: str, forged: list[str]) -> None:
    """The proxy appends the client's real address; whatever the client put before it is ignored."""
    if IPv4Address(client) in TRUSTED[0]:
        return
    header = ", ".join([*forged, client])
    assert forwarded_client("10.9.0.1", [header], TRUSTED) == client


def test_setting_reads_a_comma_separated_list_and_refuses_junk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IHUB_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 ,::1")
    assert Settings(_env_file=None).trusted_proxies == [
        ip_network("10.0.0.0/8"),
        ip_network("192.168.1.7/32"),
        ip_network("::1/128"),
    ]
    monkeypatch.setenv("IHUB_TRUSTED_PROXIES", "")
    assert Settings(_env_file=None).trusted_proxies == []
    monkeypatch.setenv("IHUB_TRUSTED_PROXIES", "proxy.internal")
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(_env_file=None)
