"""The hub's rules, called directly: order, history, mailboxes, leases, presence coalescing.

``HubState`` has no clock of its own: every test gives it a fake one and moves it by hand, and
checks what each call says to wake as well as what it changed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.hub.state import (
    MAX_PRESENCE_INTERVAL_SECONDS,
    HubState,
    Sequencer,
    Wake,
)
from trio_chat.hub_link.interface import LEASE_SECONDS
from trio_chat.protocol import ChatMessage, encode_chat_body

EPOCH = "this-run"
TS_MS = 1234


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
) -> HubState:
    return HubState(
        mailbox_size=mailbox_size,
        history_size=history_size,
        epoch=EPOCH,
        monotonic=clock or FakeClock(),
        clock_ms=lambda: TS_MS,
        presence_interval=presence_interval,
        presence_deliveries=presence_deliveries,
    )


def body(text: str) -> str:
    return encode_chat_body(ChatMessage(sender="ann", message=text))


def ids_and_texts(frames: list[str] | None) -> list[tuple[int, str]]:
    assert frames is not None
    return [(doc["id"], doc["message"]) for doc in map(json.loads, frames)]


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
    (first, _), (second, _) = state.join("w1"), state.join("w2")
    assert state.publish([body("a"), body("b")])[0] == 2
    assert state.publish([body("c")])[0] == 3
    expected = [(1, "a"), (2, "b"), (3, "c")]
    assert ids_and_texts(state.take(first, 100)) == expected
    assert ids_and_texts(state.take(second, 100)) == expected


def test_a_publish_wakes_every_mailbox_it_filled_and_nothing_else() -> None:
    state = hub_state()
    (first, _), (second, _) = state.join("w1"), state.join("w2")
    assert state.publish([body("a")]) == (1, Wake(filled=frozenset({first, second})))
    assert state.update(first) == (1, Wake())  # Nothing published: nothing to wake.


def test_take_takes_at_most_max_frames() -> None:
    state = hub_state()
    mailbox, _ = state.join("w")
    state.publish([body(str(n)) for n in range(5)])
    assert state.waiting(mailbox) == 5
    assert [i for i, _ in ids_and_texts(state.take(mailbox, 2))] == [1, 2]
    assert [i for i, _ in ids_and_texts(state.take(mailbox, 10))] == [3, 4, 5]
    assert state.take(mailbox, 10) == []
    assert state.waiting(mailbox) == 0


def test_a_mailbox_joined_later_starts_with_later_messages() -> None:
    state = hub_state()
    early, _ = state.join("early")
    state.publish([body("before")])
    late, _ = state.join("late")
    state.publish([body("after")])
    assert ids_and_texts(state.take(early, 10)) == [(1, "before"), (2, "after")]
    assert ids_and_texts(state.take(late, 10)) == [(2, "after")]


@given(
    batches=st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=20),
    history_size=st.integers(1, 10),
)
def test_ids_count_up_by_one_across_publishes_whatever_comes_between(
    batches: list[tuple[int, bool]], history_size: int
) -> None:
    state = hub_state(history_size=history_size, mailbox_size=1000)
    mailbox, _ = state.join("w")
    last_id = 0
    for connection, (size, presence_changes) in enumerate(batches):
        presence = {connection: "ann"} if presence_changes else None
        given_id, _ = state.update(mailbox, [body("x")] * size, presence)
        assert given_id == last_id + size
        last_id = given_id
    assert message_ids(state.take(mailbox, 1000)) == list(range(1, last_id + 1))
    snapshot, _ = state.snapshot(None)
    kept = list(range(max(1, last_id - history_size + 1), last_id + 1))
    assert message_ids(snapshot.messages) == kept
    assert (snapshot.first_available, snapshot.last_id) == ((kept or [last_id + 1])[0], last_id)


# Leaving, and mailboxes that overflow


def test_leaving_removes_the_mailbox() -> None:
    state = hub_state()
    mailbox, _ = state.join("w")
    state.publish([body("x")])
    assert state.leave(mailbox) == Wake(removed=frozenset({mailbox}))
    assert state.take(mailbox, 10) is None
    assert state.waiting(mailbox) is None
    assert state.statistics()["mailboxes"] == {}
    assert state.leave(mailbox) == Wake()  # Twice is harmless.


def test_a_mailbox_that_overflows_is_evicted_and_the_others_go_on() -> None:
    state = hub_state(mailbox_size=3)
    (stuck, _), (live, _) = state.join("stuck"), state.join("live")
    for n in range(3):
        state.publish([body(str(n))])
        assert len(ids_and_texts(state.take(live, 10))) == 1
    _, wake = state.publish([body("one too many")])
    assert wake == Wake(filled=frozenset({live}), removed=frozenset({stuck}))
    assert len(ids_and_texts(state.take(live, 10))) == 1
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
    slow, _ = state.join("slow")
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
    snapshot, _ = state.snapshot(None)
    assert ids_and_texts(snapshot.messages) == [(3, "3"), (4, "4"), (5, "5")]
    assert (snapshot.first_available, snapshot.last_id) == (3, 5)
    assert snapshot.epoch == EPOCH


def test_snapshot_of_an_empty_history() -> None:
    snapshot, wake = hub_state(history_size=3).snapshot(None)
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
    snapshot, _ = state.snapshot(since)
    assert [i for i, _ in ids_and_texts(snapshot.messages)] == expected_ids
    assert snapshot.since_valid is valid
    assert snapshot.first_available == 3


def test_a_snapshot_takes_the_joining_client_into_the_presence_it_sends() -> None:
    state = hub_state()
    worker, _ = state.join("w", {1: "ann"})
    state.take(worker, 100)
    snapshot, wake = state.snapshot(None, None, worker, {2: "bob"})
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
    resumed, _ = state.snapshot(since=105, epoch="old-run")
    assert resumed.epoch == EPOCH
    assert not resumed.since_valid  # Not a silent "nothing missed": the whole history.
    assert [json.loads(m)["message"] for m in resumed.messages] == ["a", "b", "c", "next"]
    assert state.snapshot(since=103, epoch=EPOCH)[0].since_valid


# Presence


def test_presence_and_messages_share_one_order_in_every_mailbox() -> None:
    state = hub_state()
    first, _ = state.join("w1")
    second, _ = state.join("w2", {1: "bob"})
    state.update(first, [body("hi")], {1: "ann"})
    expected = state.take(first, 100)
    assert expected == state.take(second, 100)
    kinds = [json.loads(frame)["type"] for frame in expected or []]
    assert kinds == ["presence", "message", "presence"]
    assert [f["users"] for f in presence_frames(expected)] == [["bob"], ["ann", "bob"]]


def test_presence_frames_are_coalesced_to_one_per_interval() -> None:
    clock = FakeClock()
    state = hub_state(clock, presence_interval=1.0)
    watcher, wake = state.join("watcher", {1: "watcher"})
    assert wake == Wake(filled=frozenset({watcher}))  # Sent at once...
    assert len(presence_frames(state.take(watcher, 100))) == 1
    worker, _ = state.join("worker")
    for n in range(5):
        # ...the next ones are held back, and the housekeeper told when they are due.
        assert state.update(worker, presence={n: f"user{n}"}) == (0, Wake(housekeeping_due=1.0))
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
    watcher, _ = state.join("watcher", {n: "" for n in range(200)})  # 200 online: one per 2 s.
    assert len(presence_frames(state.take(watcher, 1000))) == 1  # The first: at once.
    state.update(watcher, presence={200: ""})
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
    watcher, _ = state.join("watcher", {n: "" for n in range(1000)})  # 1,000 s by size alone.
    state.take(watcher, 100)
    _, wake = state.update(watcher, presence={1000: ""})
    assert wake.housekeeping_due == MAX_PRESENCE_INTERVAL_SECONDS
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS - 0.5
    state.housekeep()
    assert presence_frames(state.take(watcher, 100)) == []
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS
    state.housekeep()
    [frame] = presence_frames(state.take(watcher, 100))
    assert frame["online"] == 1001


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
    live, _ = state.join("live")
    dead, _ = state.join("dead", {1: "ghost", 2: "ghost"})
    clock.now = LEASE_SECONDS / 2
    state.take(live, 100)
    clock.now = LEASE_SECONDS + 1
    _, wake = state.housekeep()
    assert wake.removed == {dead}
    assert wake.filled == {live}  # The presence frame that says so.
    stats = state.statistics()
    assert list(stats["mailboxes"]) == [live]  # type: ignore[call-overload]
    assert (stats["online"], stats["expired"]) == (0, 1)
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
    mailbox, _ = state.join("w")
    frames_come_thick_and_fast(state, mailbox)
    clock.now = 0.5
    state.publish([body("second")])  # Lingering counts from "first", not from this one.
    assert state.linger_until(mailbox, linger=1.0) == 1.0


def test_the_first_frames_after_a_quiet_spell_do_not_linger() -> None:
    clock = FakeClock()
    state = hub_state(clock)
    mailbox, _ = state.join("w")
    state.publish([body("before")])
    state.take(mailbox, 10)
    clock.now = 2000.0  # Nothing for longer than the linger...
    state.publish([body("after")])
    assert state.linger_until(mailbox, linger=1000.0) is None  # ...so it goes at once.


def test_nothing_lingers_in_an_empty_mailbox_or_one_that_is_gone() -> None:
    state = hub_state()
    mailbox, _ = state.join("w")
    frames_come_thick_and_fast(state, mailbox)
    state.take(mailbox, 10)
    assert state.linger_until(mailbox, linger=1.0) is None
    state.publish([body("second")])
    state.leave(mailbox)
    assert state.linger_until(mailbox, linger=1.0) is None
