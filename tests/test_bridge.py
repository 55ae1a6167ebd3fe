"""The Trio bridge to a blocking hub client (``hub/bridge.py``), over an in-process backend.

The backend is a real ``HubCore`` behind blocking calls, as the hub process has it, with two
handles for the tests: a gate that holds ``update`` calls in their thread, and a switch that
makes them fail as a broken link does.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub import HubUnavailable
from trio_chat.hub.bridge import (
    HUB_CALL_TIMEOUT_SECONDS,
    HUB_SILENCE_SECONDS,
    READ_AHEAD,
    UPDATE_BURST,
    UPDATES_PER_SECOND,
    BridgedHub,
    Fetched,
    Fetcher,
)
from trio_chat.hub.core import HubCore, Snapshot

from hub_support import DEADLINE_SECONDS, JoinedWorker, body, joined

HEARTBEAT_SECONDS = 0.2


class InProcessBackend:
    link_errors: tuple[type[BaseException], ...] = (ConnectionError,)
    rejoin_replaces = False

    def __init__(self) -> None:
        self.core = HubCore(mailbox_size=1024, history_size=100)
        #: Cleared to hold ``update`` calls until it is set again.
        self.updates_open = threading.Event()
        self.updates_open.set()
        self.updates_fail = False
        #: The bodies of each ``update`` call that carried any, in call order.
        self.published_batches: list[list[str]] = []
        #: Cleared, the hub stops answering, as a stopped hub process does (its connections
        #: stay open, nothing fails): every call waits until it is set again.
        self.answering = threading.Event()
        self.answering.set()
        #: Cleared, fetches stop returning (for at most ``DEADLINE_SECONDS``), heartbeats too;
        #: ``fetch_held`` is set once one is held.
        self.fetches_return = threading.Event()
        self.fetches_return.set()
        self.fetch_held = threading.Event()

    def describe(self) -> str:
        return "in-process"

    def join(
        self, label: str, presence: Mapping[int, str], last_id: int, epoch: str
    ) -> _Membership:
        self.answering.wait()
        return _Membership(self, self.core.join(label, presence, last_id, epoch))


class _Membership:
    continuous = False
    update_due_in = None

    def __init__(self, backend: InProcessBackend, mailbox_id: str) -> None:
        self._backend = backend
        self._mailbox_id = mailbox_id
        self.epoch = backend.core.current_epoch()

    def fetch(self, max_frames: int) -> Fetched | None:
        self._backend.answering.wait()
        if not self._backend.fetches_return.is_set():
            self._backend.fetch_held.set()
            self._backend.fetches_return.wait(DEADLINE_SECONDS)
        frames = self._backend.core.fetch(self._mailbox_id, max_frames, HEARTBEAT_SECONDS)
        return None if frames is None else Fetched(frames)

    def update(self, bodies: Sequence[str], presence: Mapping[int, str | None]) -> None:
        self._backend.answering.wait()
        self._backend.updates_open.wait()
        if self._backend.updates_fail:
            raise ConnectionError("the hub went away")
        if bodies:
            self._backend.published_batches.append(list(bodies))
        self._backend.core.update(self._mailbox_id, bodies, presence)

    def snapshot(
        self, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        self._backend.answering.wait()
        return self._backend.core.snapshot(since, epoch, self._mailbox_id, {connection: name})

    def leave(self) -> None:
        self._backend.answering.wait()
        self._backend.core.leave(self._mailbox_id)


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend()


@asynccontextmanager
async def joined_worker(backend: InProcessBackend) -> AsyncIterator[JoinedWorker]:
    hub = BridgedHub(backend, Settings(outbox_size=64, subscriber_buffer=256), label="test")
    async with joined(hub) as worker:
        yield worker


async def submit_and_hold(worker: JoinedWorker, backend: InProcessBackend, text: str) -> None:
    """Submit ``text`` and hold its round trip under way (until ``backend.updates_open``)."""
    backend.updates_open.clear()
    await worker.link.submit(body("ann", text), on_failure=_unexpected_failure)
    await trio.testing.wait_all_tasks_blocked()


async def test_submitted_bodies_are_published_in_order_and_share_round_trips(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        await submit_and_hold(worker, backend, "0")
        # The first round trip is held: everything submitted meanwhile waits for the next one.
        for n in range(1, 20):
            await worker.link.submit(body("ann", str(n)), on_failure=_unexpected_failure)
        backend.updates_open.set()

        await worker.recorder.wait_for_messages(20)
        assert worker.recorder.message_texts() == [str(n) for n in range(20)]
        assert [len(batch) for batch in backend.published_batches] == [1, 19]


async def test_back_to_back_round_trips_are_paced_and_carry_what_waited(
    backend: InProcessBackend, mock_clock: trio.testing.MockClock
) -> None:
    # Should the pacing hang, the clock jumps after a real second and the deadlines fire.
    mock_clock.autojump_threshold = 1.0
    async with joined_worker(backend) as worker:
        # The clock stands still: the burst of round trips is spent, and none comes back.
        for n in range(UPDATE_BURST):
            await worker.publish("ann", f"burst {n}")
        for n in range(3):
            await worker.link.submit(body("ann", f"paced {n}"), on_failure=_unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        assert len(backend.published_batches) == UPDATE_BURST

        mock_clock.jump(1 / UPDATES_PER_SECOND)
        await worker.recorder.wait_for_text("paced 2")
        assert backend.published_batches[UPDATE_BURST:] == [
            [body("ann", f"paced {n}") for n in range(3)]
        ]


async def test_a_submission_that_cannot_be_published_is_reported(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        backend.updates_fail = True
        reported = trio.Event()
        await worker.link.submit(body("ann", "lost"), on_failure=reported.set)
        with trio.fail_after(DEADLINE_SECONDS):
            await reported.wait()
        with pytest.raises(HubUnavailable):
            await worker.link.publish(body("ann", "lost too"))

        backend.updates_fail = False
        await worker.publish("ann", "through")
        await worker.recorder.wait_for_text("through")
        assert worker.recorder.message_texts() == ["through"]


async def test_what_waits_to_be_published_goes_out_when_the_worker_leaves(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        await submit_and_hold(worker, backend, "under way")
        await worker.link.submit(body("ann", "waiting"), on_failure=_unexpected_failure)
        worker.leave()  # The session that sent them may be gone already: nobody awaits them.
        backend.updates_open.set()
    history = backend.core.snapshot(None).messages
    assert [json.loads(frame)["message"] for frame in history] == ["under way", "waiting"]


async def test_a_failing_report_does_not_stop_the_publisher(backend: InProcessBackend) -> None:
    async with joined_worker(backend) as worker:
        backend.updates_fail = True
        reported = trio.Event()
        await worker.link.submit(body("ann", "a"), on_failure=_unexpected_failure)
        await worker.link.submit(body("ann", "b"), on_failure=reported.set)
        with trio.fail_after(DEADLINE_SECONDS):
            await reported.wait()
        backend.updates_fail = False
        await worker.publish("ann", "still publishing")
        await worker.recorder.wait_for_text("still publishing")


async def test_a_hub_that_stops_answering_is_down_until_it_answers_again(
    backend: InProcessBackend,
    mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The clock jumps once the tasks have waited on the silent hub for a real half second.
    mock_clock.autojump_threshold = 0.5
    async with joined_worker(backend) as worker:
        try:
            backend.answering.clear()
            reported = trio.Event()
            await worker.link.submit(body("ann", "into the silence"), on_failure=reported.set)
            with trio.fail_after(HUB_CALL_TIMEOUT_SECONDS + 1):
                await reported.wait()  # The sender hears of it; nothing waits for ever.
            await trio.sleep(HUB_SILENCE_SECONDS)  # No heartbeat comes for that long.
            assert not worker.link.connected
            assert "event=hub_unresponsive" in caplog.text
            with pytest.raises(HubUnavailable):
                await worker.link.publish(body("ann", "while down"))
            with pytest.raises(HubUnavailable):
                await worker.link.snapshot(None, None, 1, "bob")
        finally:
            backend.answering.set()  # Also ends the threads given up on.
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)  # Re-joined.
        assert worker.link.connected
        await worker.publish("ann", "back")
        await worker.recorder.wait_for_text("back")


async def test_a_joining_client_does_not_wait_for_ever_on_a_silent_hub(
    backend: InProcessBackend, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.5
    async with joined_worker(backend) as worker:
        try:
            backend.answering.clear()
            with trio.fail_after(HUB_CALL_TIMEOUT_SECONDS + 1), pytest.raises(HubUnavailable):
                await worker.link.snapshot(None, None, 1, "bob")
        finally:
            backend.answering.set()


async def test_leaving_does_not_wait_for_a_fetch_that_does_not_return(
    backend: InProcessBackend,
) -> None:
    """A worker shutting down while its reader's thread is in a fetch (the hub waits for
    frames up to a heartbeat) does not wait for that fetch: it leaves at once."""
    try:
        # The held fetch would hold a waiting worker for DEADLINE_SECONDS.
        with trio.fail_after(DEADLINE_SECONDS / 4):
            async with joined_worker(backend) as worker:
                backend.fetches_return.clear()
                await trio.to_thread.run_sync(backend.fetch_held.wait, DEADLINE_SECONDS)
                worker.leave()
    finally:
        backend.fetches_return.set()
    assert backend.core.statistics()["mailboxes"] == {}  # It did leave the hub.


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


def _unexpected_failure() -> None:
    raise AssertionError("the body should have been published")
