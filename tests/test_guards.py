"""Who may connect and how fast: the Origin check, the token bucket, the per-address cap."""

from __future__ import annotations

import pytest

from trio_chat.guards import AddressCounter, TokenBucket, origin_allowed

HOST = (b"host", b"chat.example:8000")


@pytest.mark.parametrize(
    ("headers", "allowed", "require", "expected"),
    [
        ([HOST, (b"origin", b"http://chat.example:8000")], frozenset(), False, True),
        ([HOST, (b"origin", b"https://chat.example:8000")], frozenset(), False, True),
        ([HOST, (b"origin", b"HTTP://CHAT.EXAMPLE:8000")], frozenset(), False, True),
        ([HOST, (b"origin", b"http://evil.example")], frozenset(), False, False),
        ([HOST, (b"origin", b"http://chat.example:8001")], frozenset(), False, False),
        ([HOST, (b"origin", b"null")], frozenset(), False, False),
        ([HOST, (b"origin", b"file://chat.example:8000")], frozenset(), False, False),
        ([HOST, (b"origin", b"http://other.example")], {"http://other.example"}, False, True),
        ([(b"origin", b"http://chat.example:8000")], frozenset(), False, False),  # No Host.
        ([HOST], frozenset(), False, True),  # No Origin: not a browser page.
        ([HOST], frozenset(), True, False),
        # Two Origin or Host headers: which one would the browser have meant? Refused.
        (
            [HOST, (b"origin", b"http://chat.example:8000"), (b"origin", b"http://evil.example")],
            frozenset(),
            False,
            False,
        ),
        (
            [HOST, (b"origin", b"http://evil.example"), (b"origin", b"http://chat.example:8000")],
            frozenset(),
            False,
            False,
        ),
        (
            [HOST, (b"host", b"evil.example"), (b"origin", b"http://evil.example")],
            frozenset(),
            False,
            False,
        ),
        ([HOST, (b"Origin", b"http://chat.example:8000")], frozenset(), False, True),
        # Not a browser's origin: controls that URL parsing would drop before comparing.
        ([HOST, (b"origin", b"http://chat.exa\tmple:8000")], frozenset(), False, False),
        (
            [(b"host", b"chat\r.example"), (b"origin", b"http://chat\r.example")],
            frozenset(),
            False,
            False,
        ),
    ],
)
def test_origin_check(
    headers: list[tuple[bytes, bytes]], allowed: frozenset[str], require: bool, expected: bool
) -> None:
    assert origin_allowed(headers, frozenset(allowed), require_origin=require) is expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=10, clock=clock)
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    clock.now += 0.2  # One token back at 5 a second.
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 60  # A long pause refills no more than the burst.
    assert sum(bucket.take() for _ in range(20)) == 10


def test_rate_zero_means_no_limit() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=FakeClock())
    assert all(bucket.take() for _ in range(1000))


def test_address_cap() -> None:
    counter = AddressCounter(limit=2)
    assert counter.try_open("10.0.0.1")
    assert counter.try_open("10.0.0.1")
    assert not counter.try_open("10.0.0.1")
    assert counter.try_open("10.0.0.2")
    counter.close("10.0.0.1")
    assert counter.try_open("10.0.0.1")


def test_no_address_cap_by_default() -> None:
    counter = AddressCounter(limit=0)
    assert all(counter.try_open("10.0.0.1") for _ in range(1000))
