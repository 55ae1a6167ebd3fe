"""The hub's state, in-process: total order, mailboxes, eviction, wake-ups."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from trio_chat.hub.core import LEASE_SECONDS, MAX_PRESENCE_INTERVAL_SECONDS, HubCore, Sequencer
from trio_chat.protocol import ChatMessage, encode_chat_body

JOIN_TIMEOUT_SECONDS = 5.0


def body(text: str) -> str:
    return encode_chat_body(ChatMessage(sender="ann", message=text))


def ids_and_texts(frames: list[str] | None) -> list[tuple[int, str]]:
    assert frames is not None
    return [(doc["id"], doc["message"]) for doc in map(json.loads, frames)]


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
    core = HubCore(history_size=10, mailbox_size=100)
    first, second = core.join("w1"), core.join("w2")
    assert core.publish([body("a"), body("b")]) == 2
    assert core.publish([body("c")]) == 3
    expected = [(1, "a"), (2, "b"), (3, "c")]
    assert ids_and_texts(core.fetch(first, 100)) == expected
    assert ids_and_texts(core.fetch(second, 100)) == expected


def test_fetch_takes_at_most_max_frames() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    mailbox = core.join("w")
    core.publish([body(str(n)) for n in range(5)])
    assert [i for i, _ in ids_and_texts(core.fetch(mailbox, 2))] == [1, 2]
    assert [i for i, _ in ids_and_texts(core.fetch(mailbox, 10))] == [3, 4, 5]


def test_a_mailbox_joined_later_starts_with_later_messages() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    early = core.join("early")
    core.publish([body("before")])
    late = core.join("late")
    core.publish([body("after")])
    assert ids_and_texts(core.fetch(early, 10)) == [(1, "before"), (2, "after")]
    assert ids_and_texts(core.fetch(late, 10)) == [(2, "after")]


def test_leaving_removes_the_mailbox() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    mailbox = core.join("w")
    core.publish([body("x")])
    core.leave(mailbox)
    assert core.fetch(mailbox, 10) is None
    assert core.statistics()["mailboxes"] == {}


def test_a_mailbox_that_overflows_is_evicted_and_the_others_go_on() -> None:
    core = HubCore(history_size=10, mailbox_size=3)
    stuck, live = core.join("stuck"), core.join("live")
    for n in range(4):
        core.publish([body(str(n))])
        assert len(ids_and_texts(core.fetch(live, 10))) == 1
    assert core.fetch(stuck, 10) is None
    stats = core.statistics()
    assert stats["evicted"] == 1
    assert list(stats["mailboxes"]) == [live]  # type: ignore[call-overload]


def wait_until_blocked_in_fetch(core: HubCore, mailbox_id: str) -> None:
    """Spin until a thread waits on the mailbox (real threads: a guarded wait on a condition)."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    condition = core._mailboxes[mailbox_id].ready
    while not condition._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "fetch never blocked"
        time.sleep(0.001)


def start_fetch(
    core: HubCore, mailbox_id: str, max_frames: int = 10
) -> tuple[threading.Thread, list[object]]:
    """A fetch in a thread of its own; its result goes in the list."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(core.fetch(mailbox_id, max_frames)))
    thread.start()
    return thread, result


def fetch_in_thread(
    core: HubCore, mailbox_id: str, max_frames: int = 10
) -> tuple[threading.Thread, list[object]]:
    """A fetch in a thread of its own, once it waits."""
    thread, result = start_fetch(core, mailbox_id, max_frames)
    wait_until_blocked_in_fetch(core, mailbox_id)
    return thread, result


def test_a_blocked_fetch_wakes_on_publish() -> None:
    core = HubCore(history_size=10, mailbox_size=10)
    mailbox = core.join("w")
    thread, result = fetch_in_thread(core, mailbox)
    core.publish([body("wake")])
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert ids_and_texts(result[0]) == [(1, "wake")]  # type: ignore[arg-type]


def test_a_blocked_fetch_returns_none_when_the_worker_leaves() -> None:
    core = HubCore(history_size=10, mailbox_size=10)
    mailbox = core.join("w")
    thread, result = fetch_in_thread(core, mailbox)
    core.leave(mailbox)
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert result == [None]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frames_come_thick_and_fast(core: HubCore, mailbox: str) -> None:
    """A frame is taken, and the next one ("first", id 2) follows at once: fetches linger."""
    core.publish([body("zeroth")])
    core.fetch_nowait(mailbox, 10)
    core.publish([body("first")])


def test_a_fetch_lingers_for_more_frames_after_the_first() -> None:
    core = HubCore(history_size=10, mailbox_size=10, fetch_linger=JOIN_TIMEOUT_SECONDS)
    mailbox = core.join("w")
    frames_come_thick_and_fast(core, mailbox)
    # A frame is there, and the fetch waits for more...
    thread, result = fetch_in_thread(core, mailbox, max_frames=2)
    core.publish([body("second")])
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert ids_and_texts(result[0]) == [(2, "first"), (3, "second")]  # type: ignore[arg-type]


def test_a_fetch_lingers_no_longer_than_the_linger_after_the_oldest_frame() -> None:
    clock = FakeClock()
    core = HubCore(history_size=10, mailbox_size=10, fetch_linger=1.0, monotonic=clock)
    mailbox = core.join("w")
    core.publish([body("earlier")])
    core.fetch_nowait(mailbox, 10)
    core.publish([body("old")])
    clock.now = 1.0
    assert ids_and_texts(core.fetch(mailbox, 10)) == [(2, "old")]  # At once.


def test_a_fetch_after_a_quiet_spell_does_not_linger() -> None:
    clock = FakeClock()
    core = HubCore(history_size=10, mailbox_size=10, fetch_linger=1000.0, monotonic=clock)
    mailbox = core.join("w")
    core.publish([body("before")])
    core.fetch_nowait(mailbox, 10)
    clock.now = 2000.0  # Nothing for longer than the linger...
    core.publish([body("after")])
    thread, result = start_fetch(core, mailbox)
    thread.join(JOIN_TIMEOUT_SECONDS)
    lingered = thread.is_alive()
    core.leave(mailbox)  # Ends a lingering fetch, if it did linger.
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not lingered  # ...so it came at once.
    assert ids_and_texts(result[0]) == [(2, "after")]  # type: ignore[arg-type]


def test_a_lingering_fetch_returns_none_when_the_worker_leaves() -> None:
    core = HubCore(history_size=10, mailbox_size=10, fetch_linger=JOIN_TIMEOUT_SECONDS)
    mailbox = core.join("w")
    frames_come_thick_and_fast(core, mailbox)
    thread, result = fetch_in_thread(core, mailbox)
    core.leave(mailbox)
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert result == [None]


def presence_frames(frames: list[str] | None) -> list[dict[str, Any]]:
    assert frames is not None
    return [doc for doc in map(json.loads, frames) if doc["type"] == "presence"]


def test_history_keeps_the_last_messages_in_order() -> None:
    core = HubCore(history_size=3, mailbox_size=100)
    core.publish([body(str(n)) for n in range(1, 6)])
    snapshot = core.snapshot(None)
    assert ids_and_texts(snapshot.messages) == [(3, "3"), (4, "4"), (5, "5")]
    assert (snapshot.first_available, snapshot.last_id) == (3, 5)


def test_snapshot_of_an_empty_history() -> None:
    snapshot = HubCore(history_size=3, mailbox_size=100).snapshot(None)
    assert snapshot.messages == []
    assert (snapshot.first_available, snapshot.last_id) == (1, 0)


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
    core = HubCore(history_size=3, mailbox_size=100)
    core.publish([body(str(n)) for n in range(1, 6)])
    snapshot = core.snapshot(since)
    assert [i for i, _ in ids_and_texts(snapshot.messages)] == expected_ids
    assert snapshot.since_valid is valid
    assert snapshot.first_available == 3


def test_presence_and_messages_share_one_order_in_every_mailbox() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    first = core.join("w1")
    second = core.join("w2", {1: "bob"})
    core.update(first, [body("hi")], {1: "ann"})
    expected = core.fetch_nowait(first, 100)
    assert expected == core.fetch_nowait(second, 100)
    kinds = [json.loads(frame)["type"] for frame in expected or []]
    assert kinds == ["presence", "message", "presence"]
    assert [f["users"] for f in presence_frames(expected)] == [["bob"], ["ann", "bob"]]


def test_presence_frames_are_coalesced_to_one_per_interval() -> None:
    clock = FakeClock()
    core = HubCore(history_size=10, mailbox_size=100, presence_interval=1.0, monotonic=clock)
    watcher = core.join("watcher", {1: "watcher"})
    assert len(presence_frames(core.fetch_nowait(watcher, 100))) == 1  # Sent at once.
    worker = core.join("worker")
    for n in range(5):
        core.update(worker, presence={n: f"user{n}"})
    assert presence_frames(core.fetch_nowait(watcher, 100)) == []  # Within the interval.
    assert core.housekeep() == pytest.approx(1.0)  # Due in a second.
    clock.now = 1.0
    core.housekeep()
    [frame] = presence_frames(core.fetch_nowait(watcher, 100))
    assert frame["online"] == 6
    assert frame["joined"] == [f"user{n}" for n in range(5)]


def test_the_presence_interval_grows_with_the_room_to_bound_presence_deliveries() -> None:
    clock = FakeClock()
    core = HubCore(
        history_size=10,
        mailbox_size=1000,
        presence_interval=0.25,
        presence_deliveries=100,
        monotonic=clock,
    )
    watcher = core.join("watcher", {n: "" for n in range(200)})  # 200 online: one per 2 s.
    assert len(presence_frames(core.fetch_nowait(watcher, 1000))) == 1  # The first: at once.
    core.update(watcher, presence={200: ""})
    assert presence_frames(core.fetch_nowait(watcher, 1000)) == []
    assert core.housekeep() == pytest.approx(2.01)  # 201 online, 100 deliveries a second.
    clock.now = 1.0  # The small room's interval has passed, not the large room's.
    core.housekeep()
    assert presence_frames(core.fetch_nowait(watcher, 1000)) == []
    clock.now = 2.01
    core.housekeep()
    [frame] = presence_frames(core.fetch_nowait(watcher, 1000))
    assert frame["online"] == 201


def test_the_presence_interval_has_a_ceiling_however_large_the_room() -> None:
    clock = FakeClock()
    core = HubCore(history_size=10, mailbox_size=100, presence_deliveries=1, monotonic=clock)
    watcher = core.join("watcher", {n: "" for n in range(1000)})  # 1,000 s by size alone.
    core.fetch_nowait(watcher, 100)
    core.update(watcher, presence={1000: ""})
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS - 0.5
    core.housekeep()
    assert presence_frames(core.fetch_nowait(watcher, 100)) == []
    clock.now = MAX_PRESENCE_INTERVAL_SECONDS
    core.housekeep()
    [frame] = presence_frames(core.fetch_nowait(watcher, 100))
    assert frame["online"] == 1001


def test_a_worker_that_stops_fetching_expires_and_its_users_leave() -> None:
    clock = FakeClock()
    core = HubCore(history_size=10, mailbox_size=100, monotonic=clock)
    live = core.join("live")
    dead = core.join("dead", {1: "ghost", 2: "ghost"})
    clock.now = LEASE_SECONDS / 2
    core.fetch_nowait(live, 100)
    clock.now = LEASE_SECONDS + 1
    core.housekeep()
    assert list(core.statistics()["mailboxes"]) == [live]  # type: ignore[call-overload]
    assert core.statistics()["online"] == 0
    [frame] = presence_frames(core.fetch_nowait(live, 100))[-1:]
    assert frame["left"] == ["ghost"]
    assert core.fetch_nowait(dead, 100) is None


def test_fetch_returns_empty_after_its_heartbeat_timeout() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    mailbox = core.join("w")
    core.fetch_nowait(mailbox, 100)
    assert core.fetch(mailbox, 100, timeout=0.01) == []


def test_a_new_hub_starts_a_run_of_its_own_above_the_ids_its_workers_saw() -> None:
    core = HubCore(history_size=10, mailbox_size=100)
    core.join("first to re-join", last_id=100, epoch="old-run")
    assert core.current_epoch() != "old-run"
    assert core.publish([body("a"), body("b"), body("c")]) == 103
    # A worker that had seen more of the old run: ids 101-103 of the old run are not these.
    core.join("saw more", last_id=105, epoch="old-run")
    assert core.publish([body("next")]) == 106
    resumed = core.snapshot(since=105, epoch="old-run")
    assert not resumed.since_valid  # Not a silent "nothing missed": the whole history.
    assert [json.loads(m)["message"] for m in resumed.messages] == ["a", "b", "c", "next"]
    assert core.snapshot(since=103, epoch=core.current_epoch()).since_valid
