"""The assembled bridge: ``BridgedHub`` (``hub_link/bridge/membership.py``), which joins, re-joins
and leaves, and runs the publisher and the reader in between.

Two backends: a real ``HubCore`` behind blocking calls, as the hub process has it, with
handles for the tests (a gate that holds ``update`` calls in their thread, a switch that makes
them fail as a broken link does, a hub that stops answering); and a scripted one, whose
memberships fetch what the test queues and whose joins the test can refuse. Threads are real,
so the clock is too (each wait under a deadline), or jumps only after a real pause.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub.core import HubCore
from trio_chat.hub_link import HubUnavailable, Snapshot
from trio_chat.hub_link.bridge import BridgedHub, Fetched
from trio_chat.hub_link.bridge import membership as membership_module
from trio_chat.hub_link.bridge.membership import JOIN_TIMEOUT_SECONDS
from trio_chat.hub_link.bridge.publisher import UPDATE_BURST, UPDATES_PER_SECOND
from trio_chat.hub_link.bridge.reader import HUB_SILENCE_SECONDS
from trio_chat.hub_link.bridge.threads import HUB_CALL_TIMEOUT_SECONDS
from trio_chat.hub_link.interface import Member, Older, RoomCount
from trio_chat.metrics.figures import Counts, ServerFigures, WorkerReport
from trio_chat.protocol import presence_frame, stamp_chat_frame

from hub_support import DEADLINE_SECONDS, ROOM, JoinedWorker, Recorder, body, joined

HEARTBEAT_SECONDS = 0.2
#: The connection a test worker has in ``ROOM`` so that the hub sends it the room's frames.
OBSERVER = 1000


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
        #: ``update`` calls that went through, with or without bodies.
        self.updates = 0
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
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> _Membership:
        self.answering.wait()
        return _Membership(self, self.core.join(label, presence, last_id, epoch))


class _Membership:
    update_due_in = None

    def __init__(self, backend: InProcessBackend, mailbox_id: str) -> None:
        self._backend = backend
        self._mailbox_id = mailbox_id
        self.epoch = backend.core.current_epoch()
        self.starts_after, self.continuous = backend.core.join_point(mailbox_id)

    def fetch(self, max_frames: int) -> Fetched | None:
        self._backend.answering.wait()
        if not self._backend.fetches_return.is_set():
            self._backend.fetch_held.set()
            self._backend.fetches_return.wait(DEADLINE_SECONDS)
        frames = self._backend.core.fetch(self._mailbox_id, max_frames, HEARTBEAT_SECONDS)
        return None if frames is None else Fetched(frames)

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> None:
        self._backend.answering.wait()
        self._backend.updates_open.wait()
        if self._backend.updates_fail:
            raise ConnectionError("the hub went away")
        if bodies:
            self._backend.published_batches.append(list(bodies))
        self._backend.core.update(self._mailbox_id, bodies, presence)
        self._backend.updates += 1

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        self._backend.answering.wait()
        return self._backend.core.snapshot(room, since, epoch, self._mailbox_id, {connection: name})

    def rooms(self) -> list[RoomCount]:
        self._backend.answering.wait()
        return self._backend.core.rooms()

    def older(self, room: str, before: int, limit: int) -> Older:
        self._backend.answering.wait()
        return self._backend.core.older(room, before, limit)

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        self._backend.answering.wait()
        return self._backend.core.exchange_figures(report)

    def final_figures(self, report: WorkerReport) -> None:
        self._backend.answering.wait()
        self._backend.core.final_figures(report)

    def leave(self) -> None:
        self._backend.answering.wait()
        self._backend.core.leave(self._mailbox_id)


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend()


@asynccontextmanager
async def joined_worker(backend: InProcessBackend) -> AsyncIterator[JoinedWorker]:
    """A worker with a member in ``ROOM``: the hub sends it the room's frames."""
    hub = BridgedHub(backend, Settings(outbox_size=64, subscriber_buffer=256), label="test")
    async with joined(hub) as worker:
        with trio.fail_after(DEADLINE_SECONDS):
            await worker.link.snapshot(ROOM, None, None, OBSERVER, "")
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
    history = backend.core.snapshot(ROOM, None).messages
    assert [json.loads(frame)["message"] for frame in history] == ["under way", "waiting"]


async def test_the_worker_counts_its_messages_and_times_each_round_trip_once(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        await submit_and_hold(worker, backend, "0")
        for n in range(1, 5):
            await worker.link.submit(body("ann", str(n)), on_failure=_unexpected_failure)
        backend.updates_open.set()
        await worker.recorder.wait_for_messages(5)
        backend.updates_fail = True
        with pytest.raises(HubUnavailable):
            await worker.publish("ann", "not published")
    figures = worker.recorder.figures
    assert [len(batch) for batch in backend.published_batches] == [1, 4]
    assert figures.messages_published == 5
    # Every round trip that went through (presence changes too), once, whatever it carried.
    assert figures.hub_round_trip.figures().count == backend.updates
    assert figures.hub_reconnects == 0


async def test_the_worker_hands_in_its_final_figures_after_what_waited_went_out(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        await submit_and_hold(worker, backend, "under way")
        await worker.link.submit(body("ann", "waiting"), on_failure=_unexpected_failure)
        worker.leave()
        backend.updates_open.set()
    anyone = WorkerReport(1, 0, True, Counts())
    figures = backend.core.exchange_figures(anyone)
    assert [report.pid for report in figures.workers] == [1]  # The worker has left...
    assert figures.retired == worker.recorder.figures.counts()  # ...with all it counted.
    assert figures.retired.messages_published == 2


async def test_the_worker_reports_its_figures_while_joined(
    backend: InProcessBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(membership_module, "REPORT_INTERVAL_SECONDS", 0.01)
    anyone = WorkerReport(1, 0, True, Counts())
    async with joined_worker(backend) as worker:
        worker.recorder.connections = 3
        worker.recorder.figures.frames_sent += 7
        with trio.fail_after(DEADLINE_SECONDS):
            while True:  # Reports come on a real timer: no event says when.
                reported = backend.core.exchange_figures(anyone).workers[1:]
                if reported and reported[0].connections == 3:
                    break
                await trio.sleep(0.01)
        assert reported[0].pid == worker.recorder.pid
        assert (reported[0].connections, reported[0].counts.frames_sent) == (3, 7)
        # And whenever asked, at once.
        worker.recorder.figures.frames_sent += 1
        figures = await worker.link.exchange_figures(worker.recorder.report())
        assert figures.totals.frames_sent == 8


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
                await worker.link.snapshot(ROOM, None, None, 1, "bob")
            with pytest.raises(HubUnavailable):
                await worker.link.rooms()
            with pytest.raises(HubUnavailable):
                await worker.link.older(ROOM, 10, 5)
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
                await worker.link.snapshot(ROOM, None, None, 1, "bob")
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


class ScriptedBackend:
    """Joins the test can refuse (or hold, as a hub being started does), recorded; each makes a
    ``ScriptedMembership``."""

    link_errors: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, *, continuous: bool = False, rejoin_replaces: bool = False) -> None:
        self.continuous = continuous
        self.rejoin_replaces = rejoin_replaces
        #: Set, joins fail as with no hub there.
        self.refusing = False
        #: Cleared, joins wait until it is set again (for at most ``DEADLINE_SECONDS``).
        self.answering = threading.Event()
        self.answering.set()
        #: Every join attempt: the presence, last id and epoch it carried.
        self.joins: list[tuple[dict[Member, str], int, str]] = []
        self.memberships: list[ScriptedMembership] = []
        self._changed = threading.Condition()

    def describe(self) -> str:
        return "scripted"

    def join(
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> ScriptedMembership:
        self.answering.wait(DEADLINE_SECONDS)
        with self._changed:
            self.joins.append((dict(presence), last_id, epoch))
            self._changed.notify_all()
            if self.refusing:
                raise ConnectionError("no hub there")
            membership = ScriptedMembership(self.continuous)
            self.memberships.append(membership)
            return membership

    def wait_for_joins(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: len(self.joins) >= count, DEADLINE_SECONDS)


class ScriptedMembership:
    """Fetches return what the test queued (raising an exception), or a heartbeat; ``leave``
    ends a fetch under way, as the hub does."""

    epoch = "run 1"

    def __init__(self, continuous: bool) -> None:
        self.continuous = continuous
        self.starts_after = 0
        self.update_due_in: float | None = None
        self.left = False
        self.updates = 0
        #: Rooms whose snapshot says ``refused`` (the hub holds its limit of rooms).
        self.full_rooms: set[str] = set()
        #: Raised by ``snapshot``, ``rooms`` and ``older`` while set.
        self.failure: Exception | None = None
        self.listing: list[RoomCount] = [("general", 2), ("lobby", 1)]
        #: The worker's reports of its figures, and its final one.
        self.reports: list[WorkerReport] = []
        self.final_report: WorkerReport | None = None
        self._results: queue.Queue[Fetched | Exception | None] = queue.Queue()
        self._changed = threading.Condition()

    def put(self, result: Fetched | Exception | None) -> None:
        self._results.put(result)

    def fetch(self, max_frames: int) -> Fetched | None:
        try:
            result = self._results.get(timeout=HEARTBEAT_SECONDS)
        except queue.Empty:
            return Fetched([])
        if isinstance(result, Exception):
            raise result
        return result

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> None:
        with self._changed:
            self.updates += 1
            self.update_due_in = None
            self._changed.notify_all()

    def wait_for_updates(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.updates >= count, DEADLINE_SECONDS)

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        if self.failure is not None:
            raise self.failure
        self.update_due_in = 0.0  # As Redis does when a presence frame falls due.
        return Snapshot(
            room=room,
            messages=[],
            last_id=0,
            first_available=1,
            presence=presence_frame(room, 1, 1, [name], [name], []),
            presence_version=1,
            epoch=self.epoch,
            refused=room in self.full_rooms,
        )

    def rooms(self) -> list[RoomCount]:
        if self.failure is not None:
            raise self.failure
        return self.listing

    def older(self, room: str, before: int, limit: int) -> Older:
        if self.failure is not None:
            raise self.failure
        return Older(room, [message(n) for n in range(max(1, before - limit), before)], True)

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        if self.failure is not None:
            raise self.failure
        with self._changed:
            self.reports.append(report)
            self._changed.notify_all()
        return ServerFigures((report,), Counts(), rooms=None, hub_pid=None)

    def wait_for_reports(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: len(self.reports) >= count, DEADLINE_SECONDS)

    def final_figures(self, report: WorkerReport) -> None:
        self.final_report = report

    def leave(self) -> None:
        self.left = True
        self.put(None)


def scripted_hub(backend: ScriptedBackend) -> BridgedHub:
    return BridgedHub(backend, Settings(outbox_size=64, subscriber_buffer=256), label="test")


def message(message_id: int) -> str:
    return stamp_chat_frame(message_id, 0, body("ann", str(message_id)))


async def wait_for_joins(backend: ScriptedBackend, count: int) -> None:
    await trio.to_thread.run_sync(backend.wait_for_joins, count)
    assert len(backend.joins) >= count


async def test_a_worker_that_cannot_reach_the_hub_does_not_start() -> None:
    backend = ScriptedBackend()
    backend.refusing = True
    with pytest.raises(HubUnavailable, match="cannot reach the hub at scripted: no hub there"):
        await scripted_hub(backend).run(Recorder())


async def test_a_join_the_hub_does_not_answer_is_given_up_after_the_join_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = ScriptedBackend()
    backend.answering.clear()
    try:
        start = trio.current_time()
        given_up = f"did not answer within {JOIN_TIMEOUT_SECONDS:g} s"
        with pytest.raises(HubUnavailable, match=given_up):
            await scripted_hub(backend).run(Recorder())
        assert trio.current_time() == start + JOIN_TIMEOUT_SECONDS
    finally:
        backend.answering.set()  # Ends the thread given up on.


async def test_a_dropped_worker_rejoins_with_its_connections_and_place_and_tells_its_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        worker.link.present(1, ROOM, "ann")
        worker.link.present(1, "lobby", "ann")  # One connection, two rooms.
        worker.link.present(2, ROOM, "bob")
        worker.link.present(2, "lobby", "bob")
        worker.link.absent(2, ROOM)  # bob leaves one of his rooms...
        worker.link.absent(1, "lobby")  # ...ann the other.
        first = backend.memberships[0]
        first.put(Fetched([message(4)]))
        await worker.recorder.wait_for_text("4")

        first.put(None)  # The hub dropped the worker.
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)
        assert worker.link.connected
        assert first.left  # Left before re-joining: a join makes a new membership.
        assert backend.joins[1] == ({(1, ROOM): "ann", (2, "lobby"): "bob"}, 4, "run 1")
        assert worker.recorder.epochs == ["run 1"]
        assert "event=hub_down hub=scripted" in caplog.text
        assert "event=hub_up hub=scripted" in caplog.text
        assert worker.recorder.figures.hub_reconnects == 1
    assert backend.memberships[1].left
    assert backend.memberships[1].final_report == worker.recorder.report()


async def test_the_worker_reports_as_it_joins_and_at_once_after_each_rejoin() -> None:
    """The first report a hub gets of a worker is its baseline there: a new worker's is all
    zeros (sent before it serves anyone), and a new hub gets one as soon as the worker is
    back."""
    backend = ScriptedBackend()
    recorder = Recorder()
    recorder.connections = 2
    async with trio.open_nursery() as nursery:
        link = await nursery.start(scripted_hub(backend).run, recorder)
        first = backend.memberships[0]
        # In before ``run`` started: nothing counted yet, and the link up.
        [joined_report] = first.reports
        assert joined_report.counts == Counts()
        assert (joined_report.pid, joined_report.connections) == (recorder.pid, 2)
        assert joined_report.hub_up

        recorder.figures.frames_sent += 5
        first.put(None)  # The hub dropped the worker (say, a new hub took its place).
        await wait_for_joins(backend, 2)
        await trio.to_thread.run_sync(backend.memberships[1].wait_for_reports, 1)
        assert backend.memberships[1].reports[0].counts.frames_sent == 5
        assert link.connected
        nursery.cancel_scope.cancel()


async def test_a_rejoin_that_continues_the_log_tells_the_clients_nothing() -> None:
    backend = ScriptedBackend(continuous=True)
    async with joined(scripted_hub(backend)) as worker:
        backend.memberships[0].put(ConnectionError("the link broke"))
        await wait_for_joins(backend, 2)
        backend.memberships[1].put(Fetched([message(1)]))
        await worker.recorder.wait_for_text("1")
        assert worker.recorder.missed == 0


async def test_frames_a_bug_dropped_are_reported_even_when_the_rejoin_continues_the_log() -> None:
    class BrokenOnce(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.broken = True

        def deliver(self, frames: Sequence[str]) -> None:
            if self.broken:
                self.broken = False
                raise RuntimeError("a bug in the room")
            super().deliver(frames)

    backend = ScriptedBackend(continuous=True)
    listener = BrokenOnce()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE_SECONDS):
            await nursery.start(scripted_hub(backend).run, listener)
        backend.memberships[0].put(Fetched([message(1)]))
        await listener.wait_until(lambda: listener.missed == 1)
        nursery.cancel_scope.cancel()


async def test_a_backend_whose_join_replaces_the_membership_is_not_left_before_rejoining() -> None:
    backend = ScriptedBackend(rejoin_replaces=True)
    async with joined(scripted_hub(backend)) as worker:
        backend.memberships[0].put(ConnectionError("the link broke"))
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)
        assert not backend.memberships[0].left
    assert backend.memberships[1].left


async def test_rejoining_goes_on_until_the_hub_answers_and_the_link_is_down_meanwhile() -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        backend.refusing = True
        backend.memberships[0].put(None)
        await wait_for_joins(backend, 3)  # Two attempts failed.
        assert not worker.link.connected
        with pytest.raises(HubUnavailable):
            await worker.link.snapshot(ROOM, None, None, 5, "dee")
        with pytest.raises(HubUnavailable):
            await worker.link.snapshot("lobby", None, None, 6, "eve")
        with pytest.raises(HubUnavailable):
            await worker.link.rooms()
        with pytest.raises(HubUnavailable):
            await worker.link.older(ROOM, 10, 5)
        with pytest.raises(HubUnavailable):
            await worker.publish("ann", "while down")
        # A client whose first room could not be joined stays in it (the session says so).
        worker.link.present(5, ROOM, "dee")

        backend.refusing = False
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)
        # The client that stayed in its room meanwhile is in the presence the join carried;
        # the one whose join failed (not its first room) is not in that room.
        assert backend.joins[-1][0] == {(5, ROOM): "dee"}


async def test_a_snapshot_may_bring_the_next_update_forward() -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        membership = backend.memberships[0]
        snapshot = await worker.link.snapshot(ROOM, None, None, 1, "ann")
        assert snapshot.epoch == "run 1"
        # Nothing to send, but the membership wants an update now: it gets one.
        await trio.to_thread.run_sync(membership.wait_for_updates, 1)
        assert membership.updates == 1


async def test_the_rooms_joined_are_carried_by_the_next_join_and_a_refused_one_is_not() -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        first = backend.memberships[0]
        first.full_rooms.add("full")
        assert not (await worker.link.snapshot(ROOM, None, None, 1, "ann")).refused
        assert not (await worker.link.snapshot("lobby", 3, "run 1", 1, "ann")).refused
        refused = await worker.link.snapshot("full", None, None, 1, "ann")
        assert refused.refused
        assert refused.room == "full"

        first.put(None)  # The hub dropped the worker: it re-joins with its members.
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)
        assert backend.joins[-1][0] == {(1, ROOM): "ann", (1, "lobby"): "ann"}


async def test_a_snapshot_the_link_failed_is_carried_until_the_session_takes_it_out() -> None:
    """The hub may have taken the client in before the link failed: the next join says so,
    unless the session (told that the join failed) has taken it out."""
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        first = backend.memberships[0]
        first.failure = ConnectionError("the link broke mid-call")
        with pytest.raises(HubUnavailable):
            await worker.link.snapshot("lobby", None, None, 1, "ann")
        with pytest.raises(HubUnavailable):
            await worker.link.snapshot("kept", None, None, 2, "bob")
        worker.link.absent(1, "lobby")

        first.put(None)
        await worker.recorder.wait_until(lambda: worker.recorder.missed == 1)
        assert backend.joins[-1][0] == {(2, "kept"): "bob"}


async def test_rooms_are_listed_through_the_membership() -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        assert await worker.link.rooms() == [("general", 2), ("lobby", 1)]
        backend.memberships[0].failure = ConnectionError("the link broke mid-call")
        with pytest.raises(HubUnavailable):
            await worker.link.rooms()


async def test_older_pages_are_read_through_the_membership() -> None:
    backend = ScriptedBackend()
    async with joined(scripted_hub(backend)) as worker:
        page = await worker.link.older("lobby", 5, 2)
        assert page == Older("lobby", [message(3), message(4)], complete=True)
        backend.memberships[0].failure = ConnectionError("the link broke mid-call")
        with pytest.raises(HubUnavailable):
            await worker.link.older("lobby", 5, 2)


async def test_older_reads_a_rooms_scrollback_from_the_hub(backend: InProcessBackend) -> None:
    async with joined_worker(backend) as worker:
        for n in range(5):
            await worker.publish("ann", f"m{n}")
            await worker.publish("ann", f"elsewhere {n}", room="lobby")
        await worker.recorder.wait_for_messages(5)
        fourth = worker.recorder.messages(ROOM)[3]

        page = await worker.link.older(ROOM, fourth["id"], 2)

        assert page.room == ROOM
        assert [json.loads(frame)["message"] for frame in page.messages] == ["m1", "m2"]
        assert not page.complete


async def test_a_worker_gets_the_frames_of_the_rooms_its_members_are_in(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:  # A member in ROOM only.
        await worker.publish("ann", "elsewhere", room="lobby")
        await worker.publish("ann", "here")
        await worker.recorder.wait_for_text("here")
        assert worker.recorder.rooms_seen() == {ROOM}

        await worker.link.snapshot("lobby", None, None, 7, "cy")
        assert await worker.link.rooms() == [(ROOM, 1), ("lobby", 1)]
        await worker.publish("ann", "now here too", room="lobby")
        await worker.recorder.wait_for_text("now here too")
        assert worker.recorder.message_texts() == ["here", "now here too"]
        presence = await worker.recorder.wait_for_presence(1, ["cy"], room="lobby")
        assert presence["room"] == "lobby"


def _unexpected_failure() -> None:
    raise AssertionError("the body should have been published")


async def test_a_leave_still_on_its_way_does_not_undo_a_join_of_the_same_room(
    backend: InProcessBackend,
) -> None:
    async with joined_worker(backend) as worker:
        await worker.link.snapshot("lobby", None, None, 7, "cy")
        backend.updates_open.clear()
        worker.link.absent(7, "lobby")  # The leave's round trip is under way, and held...
        await trio.testing.wait_all_tasks_blocked()
        await worker.link.snapshot("lobby", None, None, 7, "cy")  # ...when the client joins again.
        backend.updates_open.set()
        with trio.fail_after(DEADLINE_SECONDS):
            await worker.link.publish(body("ann", "after both"))  # Published after the leave.
        assert ("lobby", 1) in backend.core.rooms()
