"""The egress policy decides on addresses alone: no test here opens a connection."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from ihub.config import Settings
from ihub.egress.policy import EgressPolicy, EgressRefused, parse_ip, refusal_reason

DEFAULT = EgressPolicy()

# Every category the default policy refuses, in the forms a hostile tenant types into a URL.
REFUSED_HOSTS = {
    "127.0.0.1": "loopback",
    "127.1": "loopback",
    "2130706433": "loopback",
    "0x7f.1": "loopback",
    "0x7f000001": "loopback",
    "0177.0.0.1": "loopback",
    "::1": "loopback",
    "[::1]": "loopback",
    "::ffff:127.0.0.1": "loopback, in an IPv6 form",
    "[::ffff:7f00:1]": "loopback, in an IPv6 form",
    "::127.0.0.1": "loopback, in an IPv6 form",
    "localhost": "loopback",
    "LOCALHOST.": "loopback",
    "api.localhost": "loopback",
    "0.0.0.0": "unspecified",
    "0": "unspecified",
    "::": "unspecified",
    "10.0.0.1": "private",
    "172.16.5.4": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "carrier-grade NAT",
    "169.254.169.254": "link-local",
    "0xa9.0xfe.0xa9.0xfe": "link-local",
    "2852039166": "link-local",
    "64:ff9b::a9fe:a9fe": "link-local, in an IPv6 form",
    "2002:a9fe:a9fe::1": "link-local, in an IPv6 form",
    "::ffff:10.0.0.1": "private, in an IPv6 form",
    "fe80::1": "link-local",
    "fe80::1%25eth0": "link-local",
    "fd00:ec2::254": "unique-local",
    "fc00::1": "unique-local",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "255.255.255.255": "reserved or broadcast",
    "240.0.0.1": "reserved or broadcast",
    "198.18.0.1": "benchmarking",
    "192.0.2.10": "documentation",
    "2001:db8::1": "documentation",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "64:ff9b:1::1": "local-use NAT64",
}

PUBLIC_HOSTS = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "api.test"]


@pytest.mark.parametrize(("host", "reason"), REFUSED_HOSTS.items(), ids=list(REFUSED_HOSTS))
def test_default_policy_refuses(host: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        DEFAULT.check_host(host)
    assert all(part in str(refused.value) for part in reason.split(", ")), (reason, str(refused.value))
    assert "IHUB_EGRESS_ALLOW" in str(refused.value)


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_default_policy_allows_public_addresses(host: str) -> None:
    DEFAULT.check_host(host)  # names are decided on the addresses they resolve to, when connecting
    address = parse_ip(host)
    if address is not None:
        assert refusal_reason(address) is None


def test_legacy_ipv4_forms_parse_as_c_resolvers_do() -> None:
    assert parse_ip("127.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("10.1.2") == ipaddress.ip_address("10.1.0.2")
    assert parse_ip("2130706433") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("0x7f.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("017700000001") == ipaddress.ip_address("127.0.0.1")
    for not_an_address in ("api.test", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "4294967296", "0x", ""):
        assert parse_ip(not_an_address) is None, not_an_address


def test_a_name_resolving_to_a_refused_address_is_refused_without_showing_the_address() -> None:
    with pytest.raises(EgressRefused) as refused:
        DEFAULT.check_address("vault.corp.test", ipaddress.ip_address("10.20.30.40"))
    message = str(refused.value)
    assert "vault.corp.test" in message and "resolves to a private address" in message
    assert "10.20.30.40" not in message  # split-horizon DNS answers stay inside


def test_allow_list_opens_cidrs_and_names() -> None:
    policy = EgressPolicy.from_entries(["10.1.0.0/16", "127.0.0.0/8", "::1", "api.internal", "*.corp.test"])
    policy.check_host("10.1.2.3")
    policy.check_host("127.1")
    policy.check_host("::ffff:127.0.0.1")  # the IPv4 it stands for is allowed
    policy.check_host("[::1]")
    policy.check_host("localhost")
    policy.check_address("api.internal", ipaddress.ip_address("192.168.0.9"))
    policy.check_address("API.Internal.", ipaddress.ip_address("192.168.0.9"))
    policy.check_address("jira.corp.test", ipaddress.ip_address("172.16.0.1"))
    # Only what is listed: the rest stays refused.
    for host in ("10.2.0.1", "169.254.169.254", "192.168.0.9"):
        with pytest.raises(EgressRefused):
            policy.check_host(host)
    with pytest.raises(EgressRefused):
        policy.check_address("other.internal", ipaddress.ip_address("192.168.0.9"))
    with pytest.raises(EgressRefused):
        policy.check_address("corp.test", ipaddress.ip_address("172.16.0.1"))  # *.corp.test is below it only


def test_localhost_needs_both_loopback_families_allowed() -> None:
    """`localhost` resolves to 127.0.0.1 and ::1; every resolved address must pass."""
    with pytest.raises(EgressRefused):
        EgressPolicy.from_entries(["127.0.0.0/8"]).check_host("localhost")
    EgressPolicy.from_entries(["localhost"]).check_host("localhost")


def test_setting_is_read_from_the_environment_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IHUB_EGRESS_ALLOW", '["127.0.0.0/8", "hooks.internal"]')
    settings = Settings(_env_file=None)
    policy = EgressPolicy.from_entries(settings.egress_allow)
    policy.check_host("127.0.0.2")
    policy.check_address("hooks.internal", ipaddress.ip_address("10.9.9.9"))
    with pytest.raises(EgressRefused):
        policy.check_host("10.9.9.9")
    monkeypatch.setenv("IHUB_EGRESS_ALLOW", '["10.0.0.0/33"]')
    with pytest.raises(ValidationError, match="neither a CIDR nor a host name"):
        Settings(_env_file=None)
    monkeypatch.delenv("IHUB_EGRESS_ALLOW")
    with pytest.raises(EgressRefused):
        EgressPolicy.from_entries(Settings(_env_file=None).egress_allow).check_host("127.0.0.1")
