"""The reader's fetching thread (``hub_link/bridge/fetcher.py``), with fake memberships.

The thread is a real one, so these tests use the real clock, each wait under a deadline.
"""

from __future__ import annotations

import functools
import threading

import pytest
import trio

from trio_chat.hub_link.bridge.backend import Fetched
from trio_chat.hub_link.bridge.fetcher import READ_AHEAD, Fetcher

from hub_support import DEADLINE_SECONDS, body


class _EndlessMembership:
    """Always has a batch ready, and counts how far the fetching runs ahead of the reader."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.fetches = 0
        #: Batches the reader has started to take.
        self.taken = 0
        self.most_ahead = 0

    def fetch(self, max_frames: int) -> Fetched:
        with self._changed:
            self.fetches += 1
            self.most_ahead = max(self.most_ahead, self.fetches - self.taken)
            self._changed.notify_all()
            return Fetched([body("ann", str(self.fetches))])

    def wait_for_fetches(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.fetches >= count, DEADLINE_SECONDS)

    def take_one(self) -> None:
        with self._changed:
            self.taken += 1


async def test_the_fetching_thread_stays_a_few_batches_ahead_of_the_reader() -> None:
    membership = _EndlessMembership()
    fetcher = Fetcher(membership, max_frames=10)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(trio.to_thread.run_sync, fetcher.run, abandon_on_cancel=True)
        )
        for n in range(1, 11):
            # The thread gets as far ahead as it may, then waits for the reader.
            await trio.to_thread.run_sync(
                membership.wait_for_fetches, membership.taken + READ_AHEAD
            )
            membership.take_one()
            fetched = await fetcher.next()
            assert fetched is not None
            assert fetched.frames == [body("ann", str(n))]
        fetcher.stop()
    assert membership.most_ahead == READ_AHEAD


class _GatedMembership:
    """Each fetch waits for the test to let it return."""

    def __init__(self) -> None:
        self.fetches = 0
        self.fetching = threading.Event()
        self.let_return = threading.Event()

    def fetch(self, max_frames: int) -> Fetched:
        self.fetches += 1
        self.fetching.set()
        if not self.let_return.wait(DEADLINE_SECONDS):
            raise AssertionError("the test never let the fetch return")
        self.let_return.clear()
        return Fetched([])


async def test_a_stopped_fetching_thread_ends_after_its_fetch() -> None:
    """As when a re-join replaces a membership that is still there (Redis): nobody leaves it."""
    membership = _GatedMembership()
    fetcher = Fetcher(membership, max_frames=10)  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, fetcher.run)
            await trio.to_thread.run_sync(membership.fetching.wait)
            fetcher.stop()
            membership.let_return.set()
        # ``run`` returned: the thread is not fetching again.
    assert membership.fetches == 1


class _EndingMembership:
    """Fetches ``results`` in turn (raising an exception), counting the fetches."""

    def __init__(self, *results: Fetched | Exception | None) -> None:
        self._results = list(results)
        self.fetches = 0

    def fetch(self, max_frames: int) -> Fetched | None:
        self.fetches += 1
        result = self._results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


@pytest.mark.parametrize("end", [None, ConnectionError("the hub went away")])
async def test_the_thread_ends_with_the_membership_and_the_reader_hears_how(
    end: Exception | None,
) -> None:
    membership = _EndingMembership(Fetched(["a frame"]), end, Fetched(["never fetched"]))
    fetcher = Fetcher(membership, max_frames=10)  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, fetcher.run)
            assert await fetcher.next() == Fetched(["a frame"])
            if end is None:
                assert await fetcher.next() is None
            else:
                with pytest.raises(ConnectionError):
                    await fetcher.next()
        # ``run`` returned by itself, without a stop.
    assert membership.fetches == 2
