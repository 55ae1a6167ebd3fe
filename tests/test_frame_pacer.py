"""Pacing of batch-mode frames: ``guards.TokenBucket``'s ``next_token_at`` and ``spend``, as
the session's batch writer uses them, driven by the time given."""

from __future__ import annotations

import pytest

from trio_chat.guards import TokenBucket


class FramePacer:
    """The batch writer's use of the bucket, on a clock the test sets."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._now = now
        self._bucket = TokenBucket(rate, burst, clock=lambda: self._now)

    def next_frame_at(self, now: float) -> float:
        self._now = now
        return self._bucket.next_token_at()

    def sent(self, now: float) -> None:
        self._now = now
        self._bucket.spend()


def test_a_burst_goes_at_once_then_one_frame_per_interval() -> None:
    pacer = FramePacer(rate=10, burst=3, now=0.0)
    for _ in range(3):
        assert pacer.next_frame_at(0.0) == 0.0
        pacer.sent(0.0)
    assert pacer.next_frame_at(0.0) == pytest.approx(0.1)
    pacer.sent(0.1)
    assert pacer.next_frame_at(0.1) == pytest.approx(0.2)


def test_a_client_that_gets_a_frame_now_and_then_never_waits() -> None:
    pacer = FramePacer(rate=10, burst=3, now=0.0)
    for tick in range(100):
        now = tick * 0.1
        assert pacer.next_frame_at(now) == now
        pacer.sent(now)


def test_quiet_time_refills_the_burst_but_no_further() -> None:
    pacer = FramePacer(rate=10, burst=2, now=0.0)
    pacer.sent(0.0)
    pacer.sent(0.0)
    for _ in range(2):  # An hour later: two frames at once, not 36,000.
        assert pacer.next_frame_at(3600.0) == 3600.0
        pacer.sent(3600.0)
    assert pacer.next_frame_at(3600.0) == pytest.approx(3600.1)


def test_frames_sent_early_run_up_no_debt() -> None:
    pacer = FramePacer(rate=10, burst=1, now=0.0)
    for _ in range(5):  # Sent although not due (half the client's buffer was waiting).
        pacer.sent(0.0)
    assert pacer.next_frame_at(0.0) == pytest.approx(0.1)
