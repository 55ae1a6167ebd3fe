"""The bridge's publisher (``hub_link/bridge/publisher.py``) on its own.

A fake membership records every ``update``; its calls are made right in the Trio thread, not
in worker threads (the fake never blocks), so the autojump clock is exact: a test can hold the
calls to play a hub that does not answer, and time is virtual.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio
import trio.testing

from trio_chat.hub_link import HubUnavailable, Snapshot
from trio_chat.hub_link.bridge.backend import Fetched
from trio_chat.hub_link.bridge.publisher import UPDATE_BURST, UPDATES_PER_SECOND, Publisher
from trio_chat.hub_link.bridge.threads import HUB_CALL_TIMEOUT_SECONDS, HubThreads
from trio_chat.hub_link.interface import Member, Older, RoomCount
from trio_chat.metrics.figures import ServerFigures, WorkerReport

from hub_support import ROOM, UnjoinableBackend

T = TypeVar("T")

OUTBOX_SIZE = 64
LEAVE_SECONDS = 2.0


class CallsInTrio(HubThreads):
    """Makes each call in the Trio thread, after a checkpoint; ``hold`` makes calls wait (as
    for a hub that does not answer) until ``release``."""

    def __init__(self) -> None:
        super().__init__(UnjoinableBackend())
        self._open: trio.Event | None = None

    def hold(self) -> None:
        self._open = trio.Event()

    def release(self) -> None:
        if self._open is not None:
            self._open.set()
        self._open = None

    async def run_sync(self, fn: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint()
        if self._open is not None:
            await self._open.wait()
        return fn(*args)


class RecordingMembership:
    epoch = "epoch"
    continuous = False
    starts_after = 0

    def __init__(self) -> None:
        self.update_due_in: float | None = None
        #: Raised by ``update`` while set.
        self.failure: Exception | None = None
        #: Each update made: its bodies, its presence changes, and when.
        self.updates: list[tuple[list[str], dict[Member, str | None]]] = []
        self.update_times: list[float] = []
        #: What ``update`` says the hub took of its bodies (None: it does not say).
        self.accepted: int | None = None
        self._updated = trio.Event()

    def bodies(self) -> list[list[str]]:
        return [bodies for bodies, _ in self.updates if bodies]

    def fetch(self, max_frames: int) -> Fetched | None:
        raise AssertionError("the publisher never fetches")

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> int | None:
        if self.failure is not None:
            raise self.failure
        self.updates.append((list(bodies), dict(presence)))
        self.update_times.append(trio.current_time())
        self._updated.set()
        self._updated = trio.Event()
        return self.accepted

    async def wait_for_updates(self, count: int) -> None:
        """Until ``count`` updates in all have been made."""
        while len(self.updates) < count:
            await self._updated.wait()

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        raise AssertionError("the publisher never takes snapshots")

    def rooms(self) -> list[RoomCount]:
        raise AssertionError("the publisher never lists rooms")

    def older(self, room: str, before: int, limit: int) -> Older:
        raise AssertionError("the publisher never reads scrollback")

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        raise AssertionError("the publisher never reports figures")

    def final_figures(self, report: WorkerReport) -> None:
        raise AssertionError("the publisher never reports figures")

    def leave(self) -> None:
        raise AssertionError("the publisher never leaves")


@pytest.fixture
def membership() -> RecordingMembership:
    return RecordingMembership()


@pytest.fixture
def calls() -> CallsInTrio:
    return CallsInTrio()


@asynccontextmanager
async def publishing(
    membership: RecordingMembership, calls: CallsInTrio
) -> AsyncIterator[Publisher]:
    """A running publisher, linked to ``membership``; closed at the end."""
    publisher = Publisher(UnjoinableBackend(), calls, outbox_size=OUTBOX_SIZE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.link_up(membership)
        yield publisher
        calls.release()
        await publisher.close(membership, deadline=trio.current_time() + LEAVE_SECONDS)


async def quiet_minute(clock: trio.testing.MockClock) -> None:
    """A minute of virtual time goes by, and whatever falls due in it happens."""
    clock.jump(60)
    await trio.testing.wait_all_tasks_blocked()


class Reports:
    """The ``on_failure`` callbacks of submitted bodies: which were reported unpublished."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def on_failure(self, text: str) -> Callable[[], None]:
        return lambda: self.failed.append(text)


def _unexpected_failure() -> None:
    raise AssertionError("the body should have been published")


async def test_bodies_submitted_during_a_round_trip_share_the_next_one_in_order(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        calls.hold()
        await publisher.submit("0", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, 20):
            await publisher.submit(str(n), _unexpected_failure)
        calls.release()
        await trio.testing.wait_all_tasks_blocked()

        assert membership.bodies() == [["0"], [str(n) for n in range(1, 20)]]


async def test_only_bodies_the_hub_took_in_its_order_count_as_published(
    membership: RecordingMembership, calls: CallsInTrio
) -> None:
    async with publishing(membership, calls) as publisher:
        await publisher.publish("all of it")  # A backend that does not say: all count.
        assert publisher.figures.messages_published == 1
        membership.accepted = 0  # The hub dropped it (not a chat body of a room).
        await publisher.publish("dropped")
        assert publisher.figures.messages_published == 1
        membership.accepted = 1
        await publisher.publish("taken")
        assert publisher.figures.messages_published == 2


async def test_round_trips_beyond_the_burst_are_paced_and_carry_what_waited(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        start = trio.current_time()
        for n in range(UPDATE_BURST):
            await publisher.publish(f"burst {n}")
        for n in range(3):
            await publisher.submit(f"paced {n}", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        assert len(membership.updates) == UPDATE_BURST  # The burst is spent: they wait.
        await membership.wait_for_updates(UPDATE_BURST + 1)
        await publisher.publish("paced again")

        assert membership.bodies() == [
            *([f"burst {n}"] for n in range(UPDATE_BURST)),
            [f"paced {n}" for n in range(3)],
            ["paced again"],
        ]
        interval = 1 / UPDATES_PER_SECOND
        assert membership.update_times == pytest.approx(
            [start] * UPDATE_BURST + [start + interval, start + 2 * interval]
        )


async def test_a_body_that_cannot_be_published_is_reported_and_publishing_goes_on(
    membership: RecordingMembership,
    calls: CallsInTrio,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with publishing(membership, calls) as publisher:
        membership.failure = ConnectionError("the hub went away")
        reported = trio.Event()
        await publisher.submit("lost", reported.set)
        await reported.wait()
        with pytest.raises(HubUnavailable):
            await publisher.publish("lost too")

        membership.failure = None
        await publisher.publish("through")
        assert membership.bodies() == [["through"]]
    assert "event=hub_publish_error" not in caplog.text  # A broken link is no bug.


async def test_a_bug_in_an_update_is_logged_and_its_bodies_reported(
    membership: RecordingMembership,
    calls: CallsInTrio,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with publishing(membership, calls) as publisher:
        membership.failure = ValueError("a bug")
        with pytest.raises(HubUnavailable):
            await publisher.publish("lost")
        assert "event=hub_publish_error" in caplog.text

        membership.failure = None
        await publisher.publish("through")
        assert membership.bodies() == [["through"]]


async def test_a_failing_report_does_not_stop_the_publisher(
    membership: RecordingMembership,
    calls: CallsInTrio,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with publishing(membership, calls) as publisher:
        membership.failure = ConnectionError("the hub went away")
        reports = Reports()
        calls.hold()
        await publisher.submit("a", _unexpected_failure)
        await publisher.submit("b", reports.on_failure("b"))
        calls.release()
        await trio.testing.wait_all_tasks_blocked()
        assert reports.failed == ["b"]  # Told, though the report before it raised.
        assert "event=publish_failure_report_error" in caplog.text

        membership.failure = None
        await publisher.publish("still publishing")
        assert membership.bodies() == [["still publishing"]]


async def test_presence_changes_go_out_as_the_latest_name_of_each_connection(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        publisher.change_presence((1, ROOM), "ann")  # A change alone makes a round trip.
        await trio.testing.wait_all_tasks_blocked()
        calls.hold()
        await publisher.submit("held", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        for connection, name in [(1, "bob"), (2, "cy"), (1, "dee"), (2, None), (3, "eve")]:
            publisher.change_presence((connection, ROOM), name)
        calls.release()
        await trio.testing.wait_all_tasks_blocked()

        assert membership.updates == [
            ([], {(1, ROOM): "ann"}),
            (["held"], {}),
            ([], {(1, ROOM): "dee", (2, ROOM): None, (3, ROOM): "eve"}),
        ]


async def test_a_connections_presence_in_each_room_is_a_change_of_its_own(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        calls.hold()
        await publisher.submit("held", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        publisher.change_presence((1, ROOM), "ann")
        publisher.change_presence((1, "lobby"), "ann")
        publisher.change_presence((1, "games"), "ann")
        publisher.change_presence((1, ROOM), None)  # Left one room: the others stay.
        calls.release()
        await trio.testing.wait_all_tasks_blocked()

        assert membership.updates == [
            (["held"], {}),
            ([], {(1, ROOM): None, (1, "lobby"): "ann", (1, "games"): "ann"}),
        ]


async def test_presence_changes_of_a_failed_update_go_again_and_newer_ones_win(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        membership.failure = ConnectionError("the hub went away")
        publisher.change_presence((1, ROOM), "ann")
        publisher.change_presence((2, ROOM), "bob")
        await trio.testing.wait_all_tasks_blocked()
        assert membership.updates == []

        membership.failure = None
        publisher.change_presence((1, ROOM), "cy")
        await trio.testing.wait_all_tasks_blocked()
        assert membership.updates == [([], {(1, ROOM): "cy", (2, ROOM): "bob"})]


async def test_an_update_the_backend_wants_is_made_when_due_even_with_nothing_to_send(
    calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    membership = RecordingMembership()
    membership.update_due_in = 5.0
    start = trio.current_time()
    async with publishing(membership, calls):
        await membership.wait_for_updates(1)  # The next one is due 5 s after it.
        membership.update_due_in = None  # After the next one, none is due.
        await membership.wait_for_updates(2)
        await quiet_minute(autojump_clock)
    assert membership.updates == [([], {}), ([], {})]
    assert membership.update_times == pytest.approx([start + 5, start + 10])


async def test_an_update_due_sooner_wakes_the_waiting_publisher(
    calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    membership = RecordingMembership()
    membership.update_due_in = 30.0
    async with publishing(membership, calls) as publisher:
        await trio.testing.wait_all_tasks_blocked()
        membership.update_due_in = 1.0  # A snapshot brought a presence frame forward, say.
        publisher.reschedule(membership)
        rescheduled = trio.current_time()
        membership.update_due_in = None
        await membership.wait_for_updates(1)
        await quiet_minute(autojump_clock)
    assert membership.update_times == pytest.approx([rescheduled + 1])


async def test_an_update_due_later_is_waited_for_without_a_wake(
    calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    membership = RecordingMembership()
    membership.update_due_in = 1.0
    async with publishing(membership, calls) as publisher:
        await trio.testing.wait_all_tasks_blocked()
        membership.update_due_in = 30.0
        publisher.reschedule(membership)
        rescheduled = trio.current_time()
        membership.update_due_in = None
        await membership.wait_for_updates(1)
        await quiet_minute(autojump_clock)
    assert membership.update_times == pytest.approx([rescheduled + 30])


async def test_rescheduling_to_no_earlier_time_takes_no_room_from_senders(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    """Every join reschedules; with the manager hub no update is ever due. While a round trip
    is under way, those must not fill the bounded outbox that senders wait for."""
    async with publishing(membership, calls) as publisher:
        calls.hold()
        await publisher.submit("under way", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(2 * OUTBOX_SIZE):
            publisher.reschedule(membership)
        with trio.fail_after(1):  # Virtual time: a sender held back would never get in.
            for index in range(OUTBOX_SIZE):
                await publisher.submit(f"waiting {index}", _unexpected_failure)
    assert sum(len(bodies) for bodies in membership.bodies()) == OUTBOX_SIZE + 1


async def test_a_round_trip_the_hub_does_not_answer_is_given_up_after_the_call_timeout(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        calls.hold()  # The hub hangs.
        start = trio.current_time()
        reported = trio.Event()
        await publisher.submit("into the silence", reported.set)
        await reported.wait()
        assert trio.current_time() == pytest.approx(start + HUB_CALL_TIMEOUT_SECONDS)
        with pytest.raises(HubUnavailable):
            await publisher.publish("still silent")
    assert membership.updates == []


async def test_while_the_link_is_down_publishing_fails_and_what_was_taken_is_reported(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        reports = Reports()
        calls.hold()
        await publisher.submit("under way", reports.on_failure("under way"))
        await trio.testing.wait_all_tasks_blocked()
        await publisher.submit("taken", reports.on_failure("taken"))
        publisher.link_down()
        with pytest.raises(HubUnavailable):
            await publisher.submit("refused", reports.on_failure("refused"))
        with pytest.raises(HubUnavailable):
            await publisher.publish("refused too")
        calls.release()
        await trio.testing.wait_all_tasks_blocked()

        assert membership.bodies() == [["under way"]]  # It went through the old membership.
        assert reports.failed == ["taken"]


async def test_presence_changed_while_the_link_is_down_goes_through_the_next_membership(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        publisher.link_down()
        publisher.change_presence((1, ROOM), "ann")
        await trio.testing.wait_all_tasks_blocked()
        next_membership = RecordingMembership()
        publisher.link_up(next_membership)
        await publisher.publish("back")
    assert membership.updates == []
    assert next_membership.updates == [(["back"], {(1, ROOM): "ann"})]


async def test_presence_changes_a_join_carries_are_not_sent_again(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        publisher.link_down()
        publisher.change_presence((1, ROOM), "ann")
        publisher.forget_presence_changes()  # The join sends every connection's presence.
        publisher.change_presence((2, ROOM), "bob")  # Changed while the join was under way.
        next_membership = RecordingMembership()
        publisher.link_up(next_membership)
        await publisher.publish("back")
    assert next_membership.updates == [(["back"], {(2, ROOM): "bob"})]


async def test_closing_sends_what_waits_after_the_round_trip_under_way(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        calls.hold()
        await publisher.submit("under way", _unexpected_failure)
        await trio.testing.wait_all_tasks_blocked()
        await publisher.submit("waiting", _unexpected_failure)
        publisher.change_presence((1, ROOM), "ann")
        async with trio.open_nursery() as nursery:
            deadline = trio.current_time() + LEAVE_SECONDS
            nursery.start_soon(functools.partial(publisher.close, membership, deadline=deadline))
            await trio.testing.wait_all_tasks_blocked()
            assert membership.updates == []  # The round trip under way is still held.
            calls.release()
    assert membership.updates == [(["under way"], {}), (["waiting"], {(1, ROOM): "ann"})]


async def test_closing_gives_the_round_trip_under_way_no_more_than_the_deadline(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        reports = Reports()
        calls.hold()  # The hub hangs.
        await publisher.submit("under way", reports.on_failure("under way"))
        await trio.testing.wait_all_tasks_blocked()
        await publisher.submit("waiting", reports.on_failure("waiting"))
        closing = trio.current_time()
        await publisher.close(membership, deadline=closing + LEAVE_SECONDS)
        # Well before the round trip's own timeout.
        assert trio.current_time() == pytest.approx(closing + LEAVE_SECONDS)
        assert reports.failed == ["under way", "waiting"]
    assert membership.updates == []


async def test_closing_an_idle_publisher_takes_no_time(
    membership: RecordingMembership, calls: CallsInTrio, autojump_clock: trio.testing.MockClock
) -> None:
    async with publishing(membership, calls) as publisher:
        await trio.testing.wait_all_tasks_blocked()
        closing = trio.current_time()
        await publisher.close(membership, deadline=closing + LEAVE_SECONDS)
        assert trio.current_time() == closing
    assert membership.updates == []
