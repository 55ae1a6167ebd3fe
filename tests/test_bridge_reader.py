"""The bridge's reader (``hub_link/bridge/reader.py``) on its own, with fake memberships.

A fake membership's fetches return what the test queued for them. The fetching thread is a
real one, so most tests use the real clock, each wait under a deadline; the hub that goes
silent is played on the autojump clock (nothing ever comes, so only the clock moves).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence

import pytest
import trio
import trio.testing

from trio_chat.hub_link import Snapshot
from trio_chat.hub_link.bridge.backend import Fetched
from trio_chat.hub_link.bridge.reader import HUB_SILENCE_SECONDS, Reader
from trio_chat.hub_link.bridge.threads import HubThreads
from trio_chat.hub_link.interface import Member, Older, RoomCount
from trio_chat.metrics.figures import ServerFigures, WorkerFigures, WorkerReport
from trio_chat.protocol import presence_frame, stamp_chat_frame

from hub_support import DEADLINE_SECONDS, ROOM, UnjoinableBackend, body


class QueuedMembership:
    """Each fetch returns the next result queued (raises it, if an exception)."""

    continuous = False
    starts_after = 0
    update_due_in = None

    def __init__(
        self, *results: Fetched | Exception | None, epoch: str = "epoch", starts_after: int = 0
    ) -> None:
        self.epoch = epoch
        self.starts_after = starts_after
        self._results: queue.Queue[Fetched | Exception | None] = queue.Queue()
        for result in results:
            self.put(result)
        #: Set once a fetch has started.
        self.fetching = threading.Event()

    def put(self, result: Fetched | Exception | None) -> None:
        self._results.put(result)

    def fetch(self, max_frames: int) -> Fetched | None:
        self.fetching.set()
        result = self._results.get(timeout=DEADLINE_SECONDS)
        if isinstance(result, Exception):
            raise result
        return result

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> None:
        raise AssertionError("the reader never publishes")

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        raise AssertionError("the reader never takes snapshots")

    def rooms(self) -> list[RoomCount]:
        raise AssertionError("the reader never lists rooms")

    def older(self, room: str, before: int, limit: int) -> Older:
        raise AssertionError("the reader never reads scrollback")

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        raise AssertionError("the reader never reports figures")

    def final_figures(self, report: WorkerReport) -> None:
        raise AssertionError("the reader never reports figures")

    def leave(self) -> None:
        raise AssertionError("the reader never leaves")


class Listener:
    """Records what the reader tells it, in order; ``broken``: delivering raises."""

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.told: list[tuple[str, object]] = []
        self.figures = WorkerFigures()

    def report(self) -> WorkerReport:
        raise AssertionError("the reader never reports figures")

    def deliver(self, frames: Sequence[str]) -> None:
        if self.broken:
            raise RuntimeError("a bug in the room")
        self.told.append(("deliver", list(frames)))

    def messages_missed(self, epoch: str) -> None:
        self.told.append(("missed", epoch))


def new_reader() -> Reader:
    backend = UnjoinableBackend()
    return Reader(backend, HubThreads(backend), batch=10)


def message(message_id: int, room: str = ROOM) -> str:
    return stamp_chat_frame(message_id, 0, body("ann", str(message_id), room))


PRESENCE = presence_frame(ROOM, 1, 1, ["ann"], ["ann"], [])


async def read(reader: Reader, membership: QueuedMembership, listener: Listener) -> bool:
    with trio.fail_after(DEADLINE_SECONDS):
        return await reader.read_until_lost(membership, listener)


async def test_fetched_frames_are_delivered_in_order_and_heartbeats_are_not() -> None:
    reader, listener = new_reader(), Listener()
    membership = QueuedMembership(
        Fetched([message(1), message(2)]), Fetched([]), Fetched([message(3), PRESENCE]), None
    )
    assert not await read(reader, membership, listener)
    assert listener.told == [
        ("deliver", [message(1), message(2)]),
        ("deliver", [message(3), PRESENCE]),
    ]
    assert reader.last_id == 3


async def test_the_place_in_the_order_is_the_highest_id_of_any_room() -> None:
    reader, listener = new_reader(), Listener()
    lobby_presence = presence_frame("lobby", 99, 1, ["bob"], ["bob"], [])
    frames = [message(4, "lobby"), message(5), lobby_presence, message(7, "games")]
    membership = QueuedMembership(Fetched(frames), Fetched([PRESENCE]), None)
    assert not await read(reader, membership, listener)
    assert listener.told == [("deliver", frames), ("deliver", [PRESENCE])]
    assert reader.last_id == 7  # Presence versions are no ids; ids are shared by all rooms.


async def test_a_membership_the_hub_dropped_ends_the_read(caplog: pytest.LogCaptureFixture) -> None:
    reader, listener = new_reader(), Listener()
    assert not await read(reader, QueuedMembership(None), listener)
    assert "event=membership_lost hub=fake" in caplog.text
    assert listener.told == []


async def test_a_broken_link_ends_the_read(caplog: pytest.LogCaptureFixture) -> None:
    reader, listener = new_reader(), Listener()
    membership = QueuedMembership(ConnectionError("the hub went away"))
    assert not await read(reader, membership, listener)
    assert "event=hub_reader_error" not in caplog.text  # A broken link is no bug.


async def test_a_bug_while_delivering_ends_the_read_and_says_frames_were_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader, listener = new_reader(), Listener(broken=True)
    membership = QueuedMembership(Fetched([message(1)]), None)
    assert await read(reader, membership, listener)
    assert "event=hub_reader_error" in caplog.text


async def test_a_gap_the_hub_reports_is_passed_on_before_the_frames_after_it() -> None:
    reader, listener = new_reader(), Listener()
    membership = QueuedMembership(Fetched([message(9)], missed=True), None, epoch="run 2")
    assert not await read(reader, membership, listener)
    assert listener.told == [("missed", "run 2"), ("deliver", [message(9)])]


async def test_the_place_in_the_order_is_kept_within_an_epoch_and_reset_by_another() -> None:
    reader, listener = new_reader(), Listener()
    await read(reader, QueuedMembership(Fetched([message(7)]), None, epoch="a"), listener)
    assert (reader.epoch, reader.last_id) == ("a", 7)

    await read(reader, QueuedMembership(None, epoch="a"), listener)
    assert (reader.epoch, reader.last_id) == ("a", 7)

    await read(reader, QueuedMembership(None, epoch="b"), listener)
    assert (reader.epoch, reader.last_id) == ("b", 0)


async def test_the_place_in_the_order_begins_where_the_membership_does() -> None:
    """A worker that got no frame yet is still past what its mailbox began after: a hub that
    replaces this one must not give it the history its clients had in snapshots."""
    reader, listener = new_reader(), Listener()
    await read(reader, QueuedMembership(None, epoch="a", starts_after=40), listener)
    assert reader.last_id == 40

    await read(reader, QueuedMembership(Fetched([message(41)]), None, epoch="a"), listener)
    assert reader.last_id == 41
    # A caught-up membership begins where the worker was: its place does not go back.
    await read(reader, QueuedMembership(None, epoch="a", starts_after=12), listener)
    assert reader.last_id == 41


async def test_a_hub_silent_for_the_silence_timeout_ends_the_read(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    reader, listener = new_reader(), Listener()
    membership = QueuedMembership()  # No fetch ever returns, not even a heartbeat.
    try:
        start = trio.current_time()
        with trio.fail_after(HUB_SILENCE_SECONDS + 1):
            assert not await reader.read_until_lost(membership, listener)
        assert trio.current_time() == start + HUB_SILENCE_SECONDS
        assert f"event=hub_unresponsive hub=fake silent_for={HUB_SILENCE_SECONDS:g}" in caplog.text
    finally:
        membership.put(None)  # Ends the thread given up on.


async def test_a_cancelled_reader_does_not_wait_for_the_fetch_under_way() -> None:
    reader, listener = new_reader(), Listener()
    membership = QueuedMembership()
    try:
        # The held fetch would hold a waiting reader for DEADLINE_SECONDS.
        with trio.fail_after(DEADLINE_SECONDS / 4):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.read_until_lost, membership, listener)
                await trio.to_thread.run_sync(membership.fetching.wait, DEADLINE_SECONDS)
                nursery.cancel_scope.cancel()
    finally:
        membership.put(None)
