"""The hub's rules, called directly: order, rooms, history, mailboxes, leases, presence
coalescing.

``HubState`` has no clock of its own: every test gives it a fake one and moves it by hand, and
checks what each call says to wake as well as what it changed. A mailbox gets the frames of the
rooms its worker has members in only, so most tests give each worker a member (``member``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.hub.state import (
    DEFAULT_MAX_ROOMS,
    EMPTY_ROOM_SECONDS,
    MAX_PRESENCE_INTERVAL_SECONDS,
    HubState,
    Sequencer,
    Wake,
)
from trio_chat.hub_link.interface import LEASE_SECONDS, MAX_LISTED_ROOMS, Member
from trio_chat.protocol import ChatMessage, encode_chat_body, frame_room

EPOCH = "this-run"
TS_MS = 1234
ROOM = "general"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hub_state(
    clock: FakeClock | None = None,
    *,
    history_size: int = 10,
    mailbox_size: int = 100,
    presence_interval: float = 0.0,
    presence_deliveries: float = float("inf"),
    max_rooms: int = DEFAULT_MAX_ROOMS,
    empty_room_seconds: float = EMPTY_ROOM_SECONDS,
) -> HubState:
    return HubState(
        mailbox_size=mailbox_size,
        history_size=history_size,
        epoch=EPOCH,
        monotonic=clock or FakeClock(),
        clock_ms=lambda: TS_MS,
        presence_interval=presence_interval,
        presence_deliveries=presence_deliveries,
        max_rooms=max_rooms,
        empty_room_seconds=empty_room_seconds,
    )


def body(text: str, room: str = ROOM) -> str:
    return encode_chat_body(room, ChatMessage(sender="ann", message=text))


def member(name: str, connection: int = 1, room: str = ROOM) -> dict[Member, str]:
    """One connection of a worker in ``room``, as a join's presence."""
    return {(connection, room): name}


def joined(state: HubState, label: str, *rooms: str, connection: int = 1) -> str:
    """A worker's mailbox with one member (named ``label``) in each of ``rooms`` (by default
    ``ROOM``), emptied of the presence frames its join made."""
    mailbox, _ = state.join(label, {(connection, room): label for room in rooms or (ROOM,)})
    empty_all(state)
    return mailbox


def empty_all(state: HubState) -> None:
    """Take every frame waiting in every mailbox."""
    for mailbox in state.statistics()["mailboxes"]:  # type: ignore[attr-defined]
        state.take(mailbox, 1 << 30)


def ids_and_texts(frames: list[str] | None) -> list[tuple[int, str]]:
    """The messages of ``frames``, which must all be messages."""
    assert frames is not None
    return [(doc["id"], doc["message"]) for doc in map(json.loads, frames)]


def messages_only(frames: list[str] | None) -> list[str]:
    assert frames is not None
    return [frame for frame in frames if json.loads(frame)["type"] == "message"]


def kinds(frames: list[str] | None) -> list[str]:
    assert frames is not None
    return [json.loads(frame)["type"] for frame in frames]


def room_ids(frames: list[str] | None) -> list[tuple[str, int]]:
    """The room and id of each frame, which must all be messages."""
    assert frames is not None
    return [(doc["room"], doc["id"]) for doc in map(json.loads, frames)]


def message_ids(frames: list[str] | None) -> list[int]:
    assert frames is not None
    return [doc["id"] for doc in map(json.loads, frames) if doc["type"] == "message"]


def presence_frames(frames: list[str] | None) -> list[dict[str, Any]]:
    assert frames is not None
    return [doc for doc in map(json.loads, frames) if doc["type"] == "presence"]


# The total order


def test_sequencer_numbers_from_one_without_gaps() -> None:
    sequencer = Sequencer(clock_ms=lambda: 1234)
    first = sequencer.stamp([body("a"), body("b")])
    second = sequencer.stamp([body("c")])
    assert [message_id for message_id, _ in first + second] == [1, 2, 3]
    docs = [json.loads(frame) for _, frame in first + second]
    assert [doc["id"] for doc in docs] == [1, 2, 3]
    assert {doc["ts"] for doc in docs} == {1234}
    assert sequencer.last_id == 3


def test_every_mailbox_gets_every_frame_in_one_order() -> None:
    state = hub_state()
    first, second = joined(state, "w1"), joined(state, "w2")
    assert state.publish([body("a"), body("b")])[0] == 2
    assert state.publish([body("c")])[0] == 3
    expected = [(1, "a"), (2, "b"), (3, "c")]
    assert ids_and_texts(state.take(first, 100)) == expected
    assert ids_and_texts(state.take(second, 100)) == expected


def test_a_publish_wakes_every_mailbox_it_filled_and_nothing_else() -> None:
    state = hub_state()
    first, second = joined(state, "w1"), joined(state, "w2")
    elsewhere = joined(state, "w3", "elsewhere")
    assert state.publish([body("a")]) == (1, Wake(filled=frozenset({first, second})))
    assert state.update(first) == (1, Wake())  # Nothing published: nothing to wake.
    assert state.waiting(elsewhere) == 0


def test_take_takes_at_most_max_frames() -> None:
    state = hub_state()
    mailbox = joined(state, "w")
    state.publish([body(str(n)) for n in range(5)])
    assert state.waiting(mailbox) == 5
    assert [i for i, _ in ids_and_texts(state.take(mailbox, 2))] == [1, 2]
    assert [i for i, _ in ids_and_texts(state.take(mailbox, 10))] == [3, 4, 5]
    assert state.take(mailbox, 10) == []
    assert state.waiting(mailbox) == 0


def test_a_mailbox_joined_later_starts_with_later_messages() -> None:
    state = hub_state()
    early = joined(state, "early")
    state.publish([body("before")])
    late, _ = state.join("late", member("late"))
    state.publish([body("after")])
    early_frames, late_frames = state.take(early, 10), state.take(late, 10)
    assert kinds(early_frames) == ["message", "presence", "message"]  # late's join between.
    assert kinds(late_frames) == ["presence", "message"]
    assert ids_and_texts(messages_only(early_frames)) == [(1, "before"), (2, "after")]
    assert ids_and_texts(messages_only(late_frames)) == [(2, "after")]


@given(
    batches=st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=20),
    history_size=st.integers(1, 10),
)
def test_ids_count_up_by_one_across_publishes_whatever_comes_between(
    batches: list[tuple[int, bool]], history_size: int
) -> None:
    state = hub_state(history_size=history_size, mailbox_size=1000)
    mailbox = joined(state, "w", connection=-1)
    last_id = 0
    for connection, (size, presence_changes) in enumerate(batches):
        presence = member("ann", connection) if presence_changes else None
        given_id, _ = state.update(mailbox, [body("x")] * size, presence)
        assert given_id == last_id + size
        last_id = given_id
    assert message_ids(state.take(mailbox, 1000)) == list(range(1, last_id + 1))
    snapshot, _ = state.snapshot(ROOM, None)
    kept = list(range(max(1, last_id - history_size + 1), last_id + 1))
    assert message_ids(snapshot.messages) == kept
    assert (snapshot.first_available, snapshot.last_id) == ((kept or [last_id + 1])[0], last_id)


# Leaving, and mailboxes that overflow


def test_leaving_removes_the_mailbox() -> None:
    state = hub_state()
    mailbox = joined(state, "w")
    state.publish([body("x")])
    assert state.leave(mailbox) == Wake(removed=frozenset({mailbox}))
    assert state.take(mailbox, 10) is None
    assert state.waiting(mailbox) is None
    assert state.statistics()["mailboxes"] == {}
    assert state.leave(mailbox) == Wake()  # Twice is harmless.


def test_a_mailbox_that_overflows_is_evicted_and_the_others_go_on() -> None:
    state = hub_state(mailbox_size=3)
    stuck, live = joined(state, "stuck"), joined(state, "live")
    for n in range(3):
        state.publish([body(str(n))])
        assert len(ids_and_texts(state.take(live, 10))) == 1
    _, wake = state.publish([body("one too many")])
    assert wake == Wake(filled=frozenset({live}), removed=frozenset({stuck}))
    # The message, then the presence frame that says the stuck worker's user has gone.
    message, presence = state.take(live, 10) or []
    assert ids_and_texts([message]) == [(4, "one too many")]
    assert presence_frames([presence])[0]["left"] == ["stuck"]
    assert state.take(stuck, 10) is None
    stats = state.statistics()
    assert stats["evicted"] == 1
    assert list(stats["mailboxes"]) == [live]  # type: ignore[call-overload]


@given(
    mailbox_size=st.integers(1, 8),
    steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=30),
)
def test_a_mailbox_never_holds_more_than_its_bound(
    mailbox_size: int, steps: list[tuple[int, int]]
) -> None:
    state = hub_state(mailbox_size=mailbox_size)
    slow = joined(state, "slow")
    for published, max_frames in steps:
        before = state.waiting(slow)
        _, wake = state.publish([body("x")] * published)
        after = state.waiting(slow)
        if before is None:
            assert after is None
        elif before + published > mailbox_size:
            assert after is None
            assert wake.removed == {slow}
        else:
            assert after == before + published <= mailbox_size
            assert (slow in wake.filled) == (published > 0)
        taken = state.take(slow, max_frames)
        if after is None:
            assert taken is None
        else:
            assert taken is not None
            assert len(taken) == min(after, max_frames)


# History and snapshots


def test_history_keeps_the_last_messages_in_order() -> None:
    state = hub_state(history_size=3)
    state.publish([body(str(n)) for n in range(1, 6)])
    snapshot, _ = state.snapshot(ROOM, None)
    assert ids_and_texts(snapshot.messages) == [(3, "3"), (4, "4"), (5, "5")]
    assert (snapshot.first_available, snapshot.last_id) == (3, 5)
    assert snapshot.epoch == EPOCH
    assert snapshot.room == ROOM
    assert not snapshot.refused


def test_snapshot_of_an_empty_history() -> None:
    snapshot, wake = hub_state(history_size=3).snapshot(ROOM, None)
    assert snapshot.messages == []
    assert (snapshot.first_available, snapshot.last_id) == (1, 0)
    assert wake == Wake()


@pytest.mark.parametrize(
    ("since", "expected_ids", "valid"),
    [
        (5, [], True),  # Nothing missed.
        (3, [4, 5], True),  # Some missed.
        (2, [3, 4, 5], True),  # Exactly what is kept.
        (1, [3, 4, 5], True),  # Too old: 2 is gone (first_available tells).
        (0, [3, 4, 5], True),
        (6, [3, 4, 5], False),  # From the future: the whole history, and not valid.
    ],
)
def test_snapshot_since_each_edge(since: int, expected_ids: list[int], valid: bool) -> None:
    state = hub_state(history_size=3)
    state.publish([body(str(n)) for n in range(1, 6)])
    snapshot, _ = state.snapshot(ROOM, since)
    assert [i for i, _ in ids_and_texts(snapshot.messages)] == expected_ids
    assert snapshot.since_valid is valid
    assert snapshot.first_available == 3


def test_a_snapshot_takes_the_joining_client_into_the_presence_it_sends() -> None:
    state = hub_state()
    worker, _ = state.join("w", member("ann"))
    state.take(worker, 100)
    snapshot, wake = state.snapshot(ROOM, None, None, worker, {2: "bob"})
    assert json.loads(snapshot.presence)["users"] == ["ann", "bob"]
    assert wake == Wake(filled=frozenset({worker}))  # Everyone else hears of bob.
    [frame] = presence_frames(state.take(worker, 100))
    assert (frame["version"], frame["joined"]) == (snapshot.presence_version, ["bob"])


def test_a_new_hub_starts_a_run_of_its_own_above_the_ids_its_workers_saw() -> None:
    state = hub_state()
    state.join("first to re-join", last_id=100, epoch="old-run")
    assert state.publish([body("a"), body("b"), body("c")])[0] == 103
    # A worker that had seen more of the old run: ids 101-103 of the old run are not these.
    state.join("saw more", last_id=105, epoch="old-run")
    assert state.publish([body("next")])[0] == 106
    resumed, _ = state.snapshot(ROOM, since=105, epoch="old-run")
    assert resumed.epoch == EPOCH
    assert not resumed.since_valid  # Not a silent "nothing missed": the whole history.
    assert [json.loads(m)["message"] for m in resumed.messages] == ["a", "b", "c", "next"]
    assert state.snapshot(ROOM, since=103, epoch=EPOCH)[0].since_valid


# Presence


def test_presence_and_messages_share_one_order_in_every_mailbox() -> None:
    state = hub_state()
    first = joined(state, "cy", connection=0)
    second, _ = state.join("w2", member("bob"))
    state.update(first, [body("hi")], member("ann"))
    expected = state.take(first, 100)
    assert expected == state.take(second, 100)
    assert kinds(expected) == ["presence", "message", "presence"]
    assert [f["users"] for f in presence_frames(expected)] == [["bob", "cy"], ["ann", "bob", "cy"]]


def test_presence_frames_are_coalesced_to_one_per_interval() -> None:
    clock = FakeClock()
    state = hub_state(clock, presence_interval=1.0)
    watcher, wake = state.join("watcher", member("watcher"))
    assert wake == Wake(filled=frozenset({watcher}))  # Sent at once...
    assert len(presence_frames(state.take(watcher, 100))) == 1
    worker, _ = state.join("worker")
    for n in range(5):
        # ...the next ones are held back, and the housekeeper told when they are due.
        changes = member(f"user{n}", connection=n)
        assert state.update(worker, presence=changes) == (0, Wake(housekeeping_due=1.0))
    assert presence_frames(state.take(watcher, 100)) == []  # Within the interval.
    assert state.housekeep() == (1.0, Wake())  # Due in a second.
    clock.now = 1.0
    _, wake = state.housekeep()
    assert wake.filled == {watcher, worker}
    [frame] = presence_frames(state.take(watcher, 100))
    assert frame["online"] == 6
    assert frame["joined"] == [f"user{n}" for n in range(5)]


def test_the_presence_interval_grows_with_the_room_to_bound_presence_deliveries() -> None:
    clock = FakeClock()
    state = hub_state(clock, mailbox_size=1000, presence_interval=0.25, presence_deliveries=100)
    crowd = {(n, ROOM): "" for n in range(200)}  # 200 online: one frame per 2 s.
    watcher, _ = state.join("watcher", crowd)
    assert len(presence_frames(state.take(watcher, 1000))) == 1  # The first: at once.
    state.update(watcher, presence=member("", connection=200))
    assert presence_frames(state.take(watcher, 1000)) == []
    due, _ = state.housekeep()
    assert due == pytest.approx(2.01)  # 201 online, 100 deliveries a second.
    clock.now = 1.0  # The small room's interval has passed, not the large room's.
    state.housekeep()
    assert presence_frames(state.take(watcher, 1000)) == []
    clock.now = 2.01
    state.housekeep()
    [frame] = presence_frames(state.take(watcher, 1000))
    assert frame["online"] == 201


def test_the_presence_interval_has_a_ceiling_however_large_the_room() -> None:
    clock = FakeClock()
    state = hub_state(clock, presence_deliveries=1)
    crowd = {(n, ROOM): "" for n in range(1000)}  # 1,000 s by size alone.
    watcher, _ = state.join("watcher", crowd)
    state.take(watcher, 100)
    _, wake = state.update(watcher, presence=member("", connection=1000))
    assert wake.housekeeping_due == MAX_PRESENCE_INTERVAL_SECONDS
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS - 0.5
    state.housekeep()
    assert presence_frames(state.take(watcher, 100)) == []
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS
    state.housekeep()
    [frame] = presence_frames(state.take(watcher, 100))
    assert frame["online"] == 1001


def test_presence_is_coalesced_per_room() -> None:
    clock = FakeClock()
    state = hub_state(clock, presence_interval=1.0)
    watcher = joined(state, "watcher", "a", "b")
    clock.now = 0.5
    state.update(watcher, presence=member("ann", connection=2, room="a"))  # Held back in a...
    assert presence_frames(state.take(watcher, 100)) == []
    clock.now = 1.0
    state.update(watcher, presence=member("bob", connection=3, room="b"))  # ...b's is due.
    assert [f["room"] for f in presence_frames(state.take(watcher, 100))] == ["b"]
    state.housekeep()
    [frame] = presence_frames(state.take(watcher, 100))
    assert (frame["room"], frame["joined"]) == ("a", ["ann"])


# Leases and housekeeping


def test_housekeeping_is_due_every_half_lease_when_nothing_is_held_back() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    state.join("w")
    clock.now = 3.0
    assert state.housekeep() == (3.0 + LEASE_SECONDS / 2, Wake())


def test_a_worker_that_stops_fetching_expires_and_its_users_leave() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    live, _ = state.join("live", member("live", connection=0))
    dead, _ = state.join("dead", {(1, ROOM): "ghost", (2, ROOM): "ghost"})
    clock.now = LEASE_SECONDS / 2
    state.take(live, 100)
    clock.now = LEASE_SECONDS + 1
    _, wake = state.housekeep()
    assert wake.removed == {dead}
    assert wake.filled == {live}  # The presence frame that says so.
    stats = state.statistics()
    assert list(stats["mailboxes"]) == [live]  # type: ignore[call-overload]
    assert (stats["online"], stats["expired"]) == (1, 1)  # Only live's own connection.
    [frame] = presence_frames(state.take(live, 100))[-1:]
    assert frame["left"] == ["ghost"]
    assert state.take(dead, 100) is None


def test_a_worker_whose_fetch_is_waiting_is_alive() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    mailbox, _ = state.join("w")
    clock.now = LEASE_SECONDS
    state.heartbeat(mailbox)
    clock.now = LEASE_SECONDS + 1
    _, wake = state.housekeep()
    assert wake == Wake()
    assert state.waiting(mailbox) == 0


# Lingering


def frames_come_thick_and_fast(state: HubState, mailbox: str) -> None:
    """A frame is taken, and the next one ("first", id 2) follows at once: fetches linger."""
    state.publish([body("zeroth")])
    state.take(mailbox, 10)
    state.publish([body("first")])


def test_frames_that_come_thick_and_fast_linger_from_the_oldest_one() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    mailbox = joined(state, "w")
    frames_come_thick_and_fast(state, mailbox)
    clock.now = 0.5
    state.publish([body("second")])  # Lingering counts from "first", not from this one.
    assert state.linger_until(mailbox, linger=1.0) == 1.0


def test_the_first_frames_after_a_quiet_spell_do_not_linger() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    mailbox = joined(state, "w")
    state.publish([body("before")])
    state.take(mailbox, 10)
    clock.now = 2000.0  # Nothing for longer than the linger...
    state.publish([body("after")])
    assert state.linger_until(mailbox, linger=1000.0) is None  # ...so it goes at once.


def test_nothing_lingers_in_an_empty_mailbox_or_one_that_is_gone() -> None:
    state = hub_state()
    mailbox = joined(state, "w")
    frames_come_thick_and_fast(state, mailbox)
    state.take(mailbox, 10)
    assert state.linger_until(mailbox, linger=1.0) is None
    state.publish([body("second")])
    assert state.waiting(mailbox) == 1
    state.leave(mailbox)
    assert state.linger_until(mailbox, linger=1.0) is None


# Rooms: routing by interest


def test_a_mailbox_gets_only_the_frames_of_the_rooms_it_has_members_in() -> None:
    state = hub_state()
    in_a, in_b, in_both = (
        joined(state, "wa", "a"),
        joined(state, "wb", "b"),
        joined(state, "w", "a", "b"),
    )
    _, wake = state.publish([body("a1", "a"), body("b1", "b"), body("a2", "a"), body("c1", "c")])
    assert wake == Wake(filled=frozenset({in_a, in_b, in_both}))
    assert room_ids(state.take(in_a, 10)) == [("a", 1), ("a", 3)]
    assert room_ids(state.take(in_b, 10)) == [("b", 2)]
    assert room_ids(state.take(in_both, 10)) == [("a", 1), ("b", 2), ("a", 3)]


def test_a_mailbox_with_no_member_anywhere_gets_nothing_and_is_not_woken() -> None:
    state = hub_state()
    idle, _ = state.join("idle")
    _, wake = state.publish([body("x", "a")])
    assert wake == Wake()
    assert state.take(idle, 10) == []


def test_a_frame_goes_once_to_a_mailbox_however_many_of_its_connections_are_in_the_room() -> None:
    state = hub_state()
    mailbox, _ = state.join("w", {(1, "a"): "ann", (2, "a"): "bob", (3, "a"): ""})
    state.take(mailbox, 10)
    state.publish([body("once", "a")])
    assert ids_and_texts(state.take(mailbox, 10)) == [(1, "once")]


def test_a_worker_gets_a_rooms_frames_from_its_first_member_in_it_to_its_last() -> None:
    state = hub_state()
    watcher = joined(state, "watcher", "a")
    worker = joined(state, "worker", "elsewhere")
    state.publish([body("before", "a")])
    state.update(worker, presence={(1, "a"): "ann"})
    state.update(worker, presence={(2, "a"): "bob"})
    state.publish([body("while in", "a")])
    state.update(worker, presence={(1, "a"): None})
    state.publish([body("one still in", "a")])
    state.update(worker, presence={(2, "a"): None})  # The worker's last member leaves.
    state.publish([body("after", "a")])
    frames = state.take(worker, 100)
    assert kinds(frames) == ["presence", "presence", "message", "presence", "message"]
    assert message_ids(frames) == [2, 3]
    assert {frame_room(frame) for frame in frames or []} == {"a"}
    # The watcher saw it all, in the same order, and the last leave too.
    watched = state.take(watcher, 100)
    assert message_ids(watched) == [1, 2, 3, 4]
    assert presence_frames(watched)[-1]["left"] == ["bob"]
    assert state.statistics()["mailboxes"][worker]["rooms"] == 1  # type: ignore[index]


def test_a_connection_leaving_a_room_it_was_never_in_changes_nothing() -> None:
    state = hub_state()
    watcher = joined(state, "watcher", "a")
    worker = joined(state, "worker", "b")
    assert state.update(worker, presence={(7, "a"): None}) == (0, Wake())
    assert state.update(worker, presence={(7, "nowhere"): None}) == (0, Wake())
    assert [room for room, _ in state.rooms()] == ["a", "b"]  # "nowhere" was not made.
    assert state.take(watcher, 10) == []


# Rooms: history and ids


def test_each_room_keeps_its_own_history() -> None:
    state = hub_state(history_size=2)
    state.publish([body("b1", "b")])
    state.publish([body(f"a{n}", "a") for n in range(1, 6)])
    busy, _ = state.snapshot("a", None)
    quiet, _ = state.snapshot("b", None)
    assert ids_and_texts(busy.messages) == [(5, "a4"), (6, "a5")]
    # The busy room's traffic did not push the quiet room's message out.
    assert ids_and_texts(quiet.messages) == [(1, "b1")]
    assert (quiet.first_available, quiet.last_id) == (1, 6)
    assert state.statistics()["history"] == 3


def test_ids_are_one_sequence_and_grow_within_each_room() -> None:
    state = hub_state(history_size=100)
    rooms = ["a", "b", "a", "c", "a", "b"]
    state.publish([body(str(n), room) for n, room in enumerate(rooms)])
    for room in "abc":
        snapshot, _ = state.snapshot(room, None)
        expected = [n + 1 for n, r in enumerate(rooms) if r == room]
        assert message_ids(snapshot.messages) == expected
        assert {frame_room(frame) for frame in snapshot.messages} == {room}


def test_a_resume_in_a_room_gets_only_that_rooms_later_messages() -> None:
    state = hub_state(history_size=10)
    state.publish([body("a1", "a"), body("b1", "b"), body("a2", "a"), body("b2", "b")])
    snapshot, _ = state.snapshot("a", since=1)
    assert ids_and_texts(snapshot.messages) == [(3, "a2")]
    assert snapshot.since_valid
    # Resuming after an id of another room works too: ids are shared by all rooms.
    snapshot, _ = state.snapshot("b", since=3)
    assert ids_and_texts(snapshot.messages) == [(4, "b2")]
    assert state.snapshot("b", since=4)[0].messages == []


def test_first_available_is_one_past_the_newest_id_the_room_dropped() -> None:
    state = hub_state(history_size=2)
    state.publish([body("1", "a"), body("2", "a"), body("3", "b"), body("4", "a")])
    assert state.snapshot("a", None)[0].first_available == 2  # Dropped 1.
    state.publish([body("5", "a")])  # Drops 2; 3 is b's, never a's.
    snapshot, _ = state.snapshot("a", since=2)
    assert snapshot.first_available == 3
    assert message_ids(snapshot.messages) == [4, 5]
    assert state.snapshot("b", None)[0].first_available == 1  # b dropped nothing.


def test_a_room_made_after_others_traffic_starts_after_the_last_id() -> None:
    state = hub_state()
    state.publish([body(str(n), "a") for n in range(5)])
    joined_new, _ = state.snapshot("new", None)
    assert (joined_new.messages, joined_new.first_available, joined_new.last_id) == ([], 6, 5)
    # A room first made by a message: the same.
    state.publish([body("first", "other")])
    snapshot, _ = state.snapshot("other", since=3)
    assert snapshot.first_available == 6
    assert ids_and_texts(snapshot.messages) == [(6, "first")]


def test_a_body_without_a_room_is_dropped_and_counted_without_taking_an_id() -> None:
    state = hub_state()
    mailbox = joined(state, "w")
    before_rooms = '{"sender":"ann","message":"old"}'
    last_id, _ = state.publish([body("x"), before_rooms, "not json", body("y")])
    assert last_id == 2
    assert ids_and_texts(state.take(mailbox, 10)) == [(1, "x"), (2, "y")]
    assert state.statistics()["bad_bodies"] == 2
    assert state.publish([before_rooms]) == (2, Wake())


# Rooms: presence


def test_each_room_has_its_own_presence_and_versions() -> None:
    state = hub_state()
    watcher = joined(state, "watcher", "a", "b")
    state.update(watcher, presence={(2, "a"): "ann"})
    state.update(watcher, presence={(3, "a"): "bob"})
    state.update(watcher, presence={(2, "b"): "cy"})
    frames = presence_frames(state.take(watcher, 100))
    assert [(f["room"], f["version"], f["online"]) for f in frames] == [
        ("a", 2, 2),
        ("a", 3, 3),
        ("b", 2, 2),
    ]
    assert frames[-1]["users"] == ["cy", "watcher"]
    a, _ = state.snapshot("a", None)
    assert (a.presence_version, json.loads(a.presence)["room"]) == (3, "a")


def test_a_connection_in_two_rooms_counts_in_both() -> None:
    state = hub_state()
    mailbox, _ = state.join("w", {(1, "a"): "ann", (1, "b"): "ann", (2, "b"): "bob"})
    assert state.rooms() == [("b", 2), ("a", 1)]
    state.update(mailbox, presence={(1, "a"): None})
    assert state.rooms() == [("b", 2), ("a", 0)]
    assert json.loads(state.snapshot("b", None)[0].presence)["users"] == ["ann", "bob"]
    assert state.statistics()["online"] == 2


def test_a_worker_leaving_drops_its_members_of_all_rooms() -> None:
    state = hub_state()
    watcher = joined(state, "watcher", "a", "b", connection=9)
    leaving = joined(state, "ann", "a", "b", "c")
    assert state.leave(leaving) == Wake(filled=frozenset({watcher}), removed=frozenset({leaving}))
    frames = presence_frames(state.take(watcher, 100))
    assert sorted(f["room"] for f in frames) == ["a", "b"]  # c has nobody to tell.
    assert all(f["left"] == ["ann"] and f["online"] == 1 for f in frames)
    assert dict(state.rooms()) == {"a": 1, "b": 1, "c": 0}


def test_a_rejoining_worker_brings_back_the_rooms_of_its_members_past_the_limit() -> None:
    state = hub_state(max_rooms=1)
    mailbox, _ = state.join("w", {(1, "a"): "ann", (2, "b"): "bob"})
    assert dict(state.rooms()) == {"a": 1, "b": 1}
    state.publish([body("still delivered", "b")])
    assert message_ids(state.take(mailbox, 10)) == [1]


# Rooms: the listing


def test_rooms_lists_the_busiest_first_then_by_name() -> None:
    state = hub_state()
    state.join("w", {(1, "b"): "", (2, "b"): "", (3, "a"): "", (4, "a"): "", (5, "c"): ""})
    state.join("v", {(1, "c"): "", (2, "c"): ""})
    state.snapshot("empty", None)
    assert state.rooms() == [("c", 3), ("a", 2), ("b", 2), ("empty", 0)]
    assert state.rooms(2) == [("c", 3), ("a", 2)]
    assert state.rooms(0) == []


def test_rooms_lists_at_most_the_listing_limit_by_default() -> None:
    state = hub_state()
    for n in range(MAX_LISTED_ROOMS + 5):
        state.snapshot(f"room-{n:03}", None)
    listed = state.rooms()
    assert len(listed) == MAX_LISTED_ROOMS
    assert listed[0] == ("room-000", 0)


# Rooms: the limit, and forgetting empty rooms


def test_a_new_room_past_the_limit_takes_the_place_of_the_longest_idle_empty_room() -> None:
    clock = FakeClock()
    state = hub_state(clock, max_rooms=3)
    state.join("w", member("ann", room="busy"))
    clock.now = 1.0
    state.publish([body("old", "idle-longest")])
    clock.now = 2.0
    state.snapshot("idle", None)
    clock.now = 3.0
    snapshot, _ = state.snapshot("new", None)
    assert not snapshot.refused
    assert sorted(room for room, _ in state.rooms()) == ["busy", "idle", "new"]
    # Made again, the room forgotten has no history, and says where its history starts.
    again, _ = state.snapshot("idle-longest", since=0)
    assert again.messages == []
    assert again.first_available == 2
    assert sorted(room for room, _ in state.rooms()) == ["busy", "idle-longest", "new"]
    assert state.statistics()["refused_rooms"] == 0


def test_a_new_room_is_refused_while_every_room_has_members() -> None:
    state = hub_state(max_rooms=2)
    worker, _ = state.join("w", {(1, "a"): "ann", (2, "b"): "bob"})
    state.publish([body("x", "a")])
    state.take(worker, 100)
    refused, wake = state.snapshot("c", None, None, worker, {3: "cy"})
    assert refused.refused
    assert (refused.room, refused.messages, refused.last_id, refused.first_available) == (
        "c",
        [],
        1,
        2,
    )
    assert refused.epoch == EPOCH
    assert wake == Wake()  # Nobody is told of cy: cy is not in the room.
    assert state.rooms() == [("a", 1), ("b", 1)]
    assert state.statistics()["refused_rooms"] == 1
    # A room that exists may still be joined, and the refused one once a room is empty.
    assert not state.snapshot("a", None, None, worker, {3: "cy"})[0].refused
    state.update(worker, presence={(2, "b"): None})
    assert not state.snapshot("c", None)[0].refused
    assert sorted(room for room, _ in state.rooms()) == ["a", "c"]


def test_an_empty_room_is_forgotten_once_idle_for_long_enough() -> None:
    clock = FakeClock()
    state = hub_state(clock, empty_room_seconds=60.0)
    state.publish([body("hello", "quiet")])
    clock.now = 60.0
    state.housekeep()
    assert [room for room, _ in state.rooms()] == ["quiet"]  # Not yet: exactly 60 s.
    clock.now = 60.5
    state.housekeep()
    assert state.rooms() == []
    assert state.statistics()["history"] == 0
    assert state.snapshot("quiet", None)[0].messages == []


def test_a_room_with_members_is_never_forgotten_and_idleness_counts_from_the_last_leave() -> None:
    clock = FakeClock()
    state = hub_state(clock, empty_room_seconds=60.0)
    worker, _ = state.join("w", member("ann", room="kept"))
    clock.now = 1000.0
    state.heartbeat(worker)  # Alive, though silent: the room stays for as long as ann is in.
    state.housekeep()
    assert state.rooms() == [("kept", 1)]
    state.update(worker, presence={(1, "kept"): None})
    clock.now = 1060.0
    state.heartbeat(worker)
    state.housekeep()
    assert state.rooms() == [("kept", 0)]
    clock.now = 1060.5
    state.housekeep()
    assert state.rooms() == []


def test_a_message_to_an_empty_room_keeps_it_a_while_longer() -> None:
    clock = FakeClock()
    state = hub_state(clock, empty_room_seconds=60.0)
    state.snapshot("room", None)
    clock.now = 50.0
    state.publish([body("still here", "room")])
    clock.now = 100.0
    state.housekeep()
    assert state.rooms() == [("room", 0)]
    clock.now = 110.5
    state.housekeep()
    assert state.rooms() == []


def test_an_expired_workers_rooms_are_forgotten_after_it() -> None:
    clock = FakeClock()
    state = hub_state(clock, empty_room_seconds=60.0)
    state.join("dead", member("ghost", room="haunted"))
    clock.now = LEASE_SECONDS + 1
    state.housekeep()
    assert state.rooms() == [("haunted", 0)]
    clock.now = LEASE_SECONDS + 61.5
    state.housekeep()
    assert state.rooms() == []


# Rooms: a worker evicted while its presence changes are applied


def test_a_worker_evicted_by_its_own_presence_frame_is_not_left_in_its_other_rooms() -> None:
    """A worker whose mailbox is full sends presence changes in two rooms at once (say, a
    rename in one and a first room taken in after the hub was unreachable): the first room's
    presence frame overflows its mailbox and evicts it. The second room must not keep it."""
    state = hub_state(mailbox_size=1)
    watcher = joined(state, "watcher", "b", connection=9)
    worker, _ = state.join("w", member("ann", room="a"))
    assert state.waiting(worker) == 1  # Its join's presence frame: the mailbox is full.
    _, wake = state.update(worker, presence={(1, "a"): "anne", (2, "b"): "bob"})
    assert wake.removed == {worker}
    assert state.take(worker, 10) is None
    assert dict(state.rooms()) == {"a": 0, "b": 1}  # No ghost of the evicted worker.
    state.publish([body("still works", "b")])
    assert message_ids(state.take(watcher, 10)) == [1]


# Rooms: a property over random traffic


class RoutingModel:
    """What each worker's mailbox should hold: the frames of the rooms it has members in at
    the time each frame is made, as (room, kind, id or online count)."""

    def __init__(self, state: HubState, workers: int) -> None:
        self.state = state
        self.mailboxes = [state.join(f"w{w}")[0] for w in range(workers)]
        #: Each worker's connections in each room.
        self.members: list[dict[str, set[int]]] = [{} for _ in range(workers)]
        self.expected: list[list[tuple[str, str, int]]] = [[] for _ in range(workers)]
        self.history: dict[str, list[int]] = {}
        self.last_id = 0

    def online(self, room: str) -> int:
        return sum(len(rooms.get(room, ())) for rooms in self.members)

    def _in(self, room: str) -> list[int]:
        return [w for w, rooms in enumerate(self.members) if rooms.get(room)]

    def _presence_frame(self, room: str) -> None:
        for w in self._in(room):
            self.expected[w].append((room, "presence", self.online(room)))

    def present(self, w: int, connection: int, room: str) -> None:
        connections = self.members[w].setdefault(room, set())
        changed = connection not in connections
        connections.add(connection)
        self.state.update(self.mailboxes[w], presence={(connection, room): f"c{connection}"})
        if changed:
            self._presence_frame(room)

    def absent(self, w: int, connection: int, room: str) -> None:
        connections = self.members[w].get(room, set())
        changed = connection in connections
        connections.discard(connection)
        self.state.update(self.mailboxes[w], presence={(connection, room): None})
        if changed:
            self._presence_frame(room)

    def enter(self, w: int, connection: int, room: str) -> None:
        """A client joins through a snapshot: the room's history, and presence, come with it."""
        changed = connection not in self.members[w].get(room, set())
        self.members[w].setdefault(room, set()).add(connection)
        snapshot, _ = self.state.snapshot(
            room, None, None, self.mailboxes[w], {connection: f"c{connection}"}
        )
        if changed:
            self._presence_frame(room)
        assert message_ids(snapshot.messages) == self.history.get(room, [])
        assert json.loads(snapshot.presence)["online"] == self.online(room)

    def publish(self, w: int | None, rooms: list[str]) -> None:
        bodies = [body(str(n), room) for n, room in enumerate(rooms)]
        if w is None:
            last_id, _ = self.state.publish(bodies)
        else:
            last_id, _ = self.state.update(self.mailboxes[w], bodies)
        for room in rooms:
            self.last_id += 1
            self.history.setdefault(room, []).append(self.last_id)
            for reader in self._in(room):
                self.expected[reader].append((room, "message", self.last_id))
        assert last_id == self.last_id

    def rejoin(self, w: int) -> None:
        """The worker leaves (its members leave every room), then joins again with them."""
        self.check(w)
        self.state.leave(self.mailboxes[w])
        rooms = [room for room, connections in self.members[w].items() if connections]
        left, self.members[w] = self.members[w], {}
        for room in rooms:
            self._presence_frame(room)
        presence = {(c, room): f"c{c}" for room, cs in left.items() for c in sorted(cs)}
        self.mailboxes[w], _ = self.state.join(f"w{w}", presence)
        self.members[w] = left
        for room in rooms:
            self._presence_frame(room)

    def check(self, w: int) -> None:
        """The mailbox holds what is expected: each room's frames in order, and all messages
        in the one order. (A worker that leaves tells its rooms in no set order.)"""
        frames = self.state.take(self.mailboxes[w], 1 << 30)
        assert frames is not None
        got = [_described(frame) for frame in frames]
        expected, self.expected[w] = self.expected[w], []
        assert [f for f in got if f[1] == "message"] == [f for f in expected if f[1] == "message"]
        for room in {f[0] for f in got + expected}:
            assert [f for f in got if f[0] == room] == [f for f in expected if f[0] == room]
        versions: dict[str, int] = {}
        for frame in map(json.loads, frames):
            if frame["type"] == "presence":
                assert frame["version"] > versions.get(frame["room"], 0)
                versions[frame["room"]] = frame["version"]


def _described(frame: str) -> tuple[str, str, int]:
    doc = json.loads(frame)
    if doc["type"] == "message":
        return (doc["room"], "message", doc["id"])
    assert doc["type"] == "presence"
    return (doc["room"], "presence", doc["online"])


WORKERS = 3
_workers = st.integers(0, WORKERS - 1)
_connections = st.integers(1, 3)
_rooms = st.sampled_from(["a", "b", "c"])
_steps = st.one_of(
    st.tuples(st.just("present"), _workers, _connections, _rooms),
    st.tuples(st.just("absent"), _workers, _connections, _rooms),
    st.tuples(st.just("enter"), _workers, _connections, _rooms),
    st.tuples(st.just("publish"), st.none() | _workers, st.lists(_rooms, min_size=1, max_size=4)),
    st.tuples(st.just("check"), _workers),
    st.tuples(st.just("rejoin"), _workers),
)


@given(st.lists(_steps, max_size=40))
def test_every_mailbox_gets_exactly_the_frames_of_its_rooms_in_the_one_order(
    steps: list[tuple[Any, ...]],
) -> None:
    model = RoutingModel(hub_state(mailbox_size=10_000, history_size=1000), WORKERS)
    for name, *arguments in steps:
        getattr(model, name)(*arguments)
    for w in range(WORKERS):
        model.check(w)
