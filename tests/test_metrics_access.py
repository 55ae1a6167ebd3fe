"""metrics/access.py: TRIO_CHAT_METRICS read (on, off, an allowlist), and who it lets in.

How the routes answer each verdict is in test_app_metrics.py; the variable's errors naming
it are in test_config.py.
"""

from __future__ import annotations

import pytest

from trio_chat.metrics.access import ANYONE, MetricsAccess, Verdict, parse_metrics_access

ALLOWLIST = "127.0.0.1, 10.0.0.0/8, 2001:db8::/32, ::1"


@pytest.mark.parametrize("client", ["127.0.0.1", "203.0.113.9", "::1", "2001:db8::5", None])
def test_on_lets_anyone_in(client: str | None) -> None:
    assert parse_metrics_access("on").verdict(client) is Verdict.ALLOWED
    assert ANYONE.verdict(client) is Verdict.ALLOWED


@pytest.mark.parametrize("client", ["127.0.0.1", "203.0.113.9", None])
def test_off_hides_the_metrics_from_everyone(client: str | None) -> None:
    assert parse_metrics_access("OFF").verdict(client) is Verdict.HIDDEN


@pytest.mark.parametrize(
    "client",
    [
        "127.0.0.1",
        "10.0.0.1",
        "10.255.255.255",
        "2001:db8::5",
        "::1",
        "::ffff:127.0.0.1",  # an IPv4 client on a dual-stack socket
        "::ffff:10.1.2.3",
    ],
)
def test_an_allowlist_lets_in_the_addresses_and_networks_it_names(client: str) -> None:
    assert parse_metrics_access(ALLOWLIST).verdict(client) is Verdict.ALLOWED


@pytest.mark.parametrize(
    "client",
    [
        "127.0.0.2",
        "11.0.0.1",
        "192.168.1.1",
        "2001:db9::1",
        "::2",
        "::ffff:192.168.1.1",
        None,  # a Unix socket's client: no address to check
        "unix-socket",
    ],
)
def test_an_allowlist_forbids_everyone_else(client: str | None) -> None:
    assert parse_metrics_access(ALLOWLIST).verdict(client) is Verdict.FORBIDDEN


def test_an_address_with_host_bits_means_its_network() -> None:
    # As firewalls read it: 10.1.2.3/8 is 10.0.0.0/8.
    access = parse_metrics_access("10.1.2.3/8")

    assert access.verdict("10.200.0.1") is Verdict.ALLOWED
    assert access.describe() == "10.0.0.0/8"


@pytest.mark.parametrize(
    ("raw", "described"),
    [("on", "on"), (" Off ", "off"), ("::1,127.0.0.1", "::1/128,127.0.0.1/32")],
)
def test_describe_spells_the_setting(raw: str, described: str) -> None:
    assert parse_metrics_access(raw).describe() == described


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("yes", "'yes'"),
        ("127.0.0.1,example.com", "'example.com'"),
        ("10.0.0.0/40", "'10.0.0.0/40'"),
        ("::1, fe80::zz", "'fe80::zz'"),
    ],
)
def test_an_entry_that_is_no_address_is_named_in_the_error(raw: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named} is not an address or network"):
        parse_metrics_access(raw)


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="expected on, off, or"):
        parse_metrics_access(" , ")


def test_the_verdicts_are_the_http_statuses_that_answer_them() -> None:
    assert [int(v) for v in (Verdict.ALLOWED, Verdict.FORBIDDEN, Verdict.HIDDEN)] == [200, 403, 404]
    assert MetricsAccess() == ANYONE
