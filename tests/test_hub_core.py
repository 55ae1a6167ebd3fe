"""The hub's state made thread-safe: fetches that wait and are woken, linger, the housekeeper.

The rules themselves are tested on ``HubState`` (test_hub_state.py); these tests use real
threads, joined under a deadline, and never read the standard library's private attributes.
To know that a fetch is waiting, they give the hub a fake clock that tells when another thread
reads it: ``HubCore`` reads its clock under its lock just before a fetch waits (to renew the
worker's lease, or to time the linger), and every change takes that lock, so whatever a test
does once the fetching thread has read the clock finds the fetch waiting.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from typing import Any

import pytest

from trio_chat.hub.core import HubCore
from trio_chat.hub_link.interface import LEASE_SECONDS
from trio_chat.hub_link.manager.client import EXPOSED, HubClient
from trio_chat.protocol import ChatMessage, encode_chat_body

ROOM = "general"

JOIN_TIMEOUT_SECONDS = 5.0
#: For fetches that must be woken: a wake-up that never comes fails the test, not a heartbeat.
LONG_FETCH_SECONDS = 10 * JOIN_TIMEOUT_SECONDS


class FakeClock:
    """A monotonic clock moved by hand, that tells when a thread other than its maker's reads it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.read_elsewhere = threading.Event()
        self._owner = threading.get_ident()

    def __call__(self) -> float:
        if threading.get_ident() != self._owner:
            self.read_elsewhere.set()
        return self.now


def hub_core(clock: FakeClock, *, mailbox_size: int = 10, **options: Any) -> HubCore:
    return HubCore(history_size=10, mailbox_size=mailbox_size, monotonic=clock, **options)


def body(text: str, sender: str = "ann", room: str = ROOM) -> str:
    return encode_chat_body(room, ChatMessage(sender=sender, message=text))


def join_member(core: HubCore, label: str, room: str = ROOM) -> str:
    """A worker with one member in ``room`` (so that it gets the room's frames), its mailbox
    emptied of the presence frame its join made."""
    mailbox = core.join(label, {(1, room): label})
    assert presence_frames(core.fetch_nowait(mailbox, 100))
    return mailbox


def ids_and_texts(frames: object) -> list[tuple[int, str]]:
    assert isinstance(frames, list)
    return [(doc["id"], doc["message"]) for doc in map(json.loads, frames)]


def presence_frames(frames: list[str] | None) -> list[dict[str, Any]]:
    assert frames is not None
    return [doc for doc in map(json.loads, frames) if doc["type"] == "presence"]


def start_fetch(
    core: HubCore, mailbox_id: str, max_frames: int = 10
) -> tuple[threading.Thread, list[object]]:
    """A fetch in a thread of its own; its result goes in the list."""
    result: list[object] = []
    thread = threading.Thread(
        target=lambda: result.append(core.fetch(mailbox_id, max_frames, LONG_FETCH_SECONDS)),
        daemon=True,  # Should a test fail with the fetch still waiting.
    )
    thread.start()
    return thread, result


def fetch_in_thread(
    core: HubCore, clock: FakeClock, mailbox_id: str, max_frames: int = 10
) -> tuple[threading.Thread, list[object]]:
    """A fetch in a thread of its own, once it waits."""
    thread, result = start_fetch(core, mailbox_id, max_frames)
    assert clock.read_elsewhere.wait(JOIN_TIMEOUT_SECONDS), "the fetch never waited"
    return thread, result


def finished(thread: threading.Thread) -> bool:
    thread.join(JOIN_TIMEOUT_SECONDS)
    return not thread.is_alive()


# Fetching what is there


def test_a_fetch_takes_at_most_max_frames_of_those_waiting() -> None:
    core = hub_core(FakeClock(), mailbox_size=100)
    first, second = join_member(core, "w1"), join_member(core, "w2")
    core.fetch_nowait(first, 100)  # The presence frame of w2's join.
    assert core.publish([body("a"), body("b")]) == 2
    assert core.publish([body("c")]) == 3
    assert ids_and_texts(core.fetch(first, 2)) == [(1, "a"), (2, "b")]
    assert ids_and_texts(core.fetch(first, 10)) == [(3, "c")]
    assert ids_and_texts(core.fetch(second, 100)) == [(1, "a"), (2, "b"), (3, "c")]


def test_a_fetch_from_a_mailbox_that_is_gone_returns_none() -> None:
    core = hub_core(FakeClock())
    mailbox = join_member(core, "w")
    core.publish([body("x")])
    core.leave(mailbox)
    assert core.fetch(mailbox, 10) is None
    assert core.fetch_nowait(mailbox, 10) is None
    assert core.statistics()["mailboxes"] == {}


def test_fetch_returns_empty_after_its_heartbeat_timeout() -> None:
    core = hub_core(FakeClock())
    mailbox = core.join("w")
    assert core.fetch(mailbox, 100, timeout=0.01) == []


# Fetches woken


def test_a_blocked_fetch_wakes_on_publish() -> None:
    clock = FakeClock()
    core = hub_core(clock)
    mailbox = join_member(core, "w")
    thread, result = fetch_in_thread(core, clock, mailbox)
    core.publish([body("wake")])
    assert finished(thread)
    assert ids_and_texts(result[0]) == [(1, "wake")]


def test_a_blocked_fetch_returns_none_when_the_worker_leaves() -> None:
    clock = FakeClock()
    core = hub_core(clock)
    mailbox = join_member(core, "w")
    thread, result = fetch_in_thread(core, clock, mailbox)
    core.leave(mailbox)
    assert finished(thread)
    assert result == [None]


def test_a_blocked_fetch_returns_none_when_its_mailbox_is_evicted() -> None:
    clock = FakeClock()
    core = hub_core(clock, mailbox_size=1)
    mailbox = join_member(core, "w")
    thread, result = fetch_in_thread(core, clock, mailbox)
    core.publish([body("one"), body("two")])  # More than the mailbox holds, in one go.
    assert finished(thread)
    assert result == [None]
    assert core.statistics()["evicted"] == 1


def test_a_worker_waiting_in_fetch_is_alive() -> None:
    clock = FakeClock()
    core = hub_core(clock)
    mailbox = join_member(core, "w")
    clock.now = LEASE_SECONDS
    thread, result = fetch_in_thread(core, clock, mailbox)  # Its lease runs from here.
    clock.now = LEASE_SECONDS + 1
    core.housekeep()
    core.publish([body("still here")])
    assert finished(thread)
    assert ids_and_texts(result[0]) == [(1, "still here")]


# Lingering


def frames_come_thick_and_fast(core: HubCore, mailbox: str) -> None:
    """A frame is taken, and the next one ("first", id 2) follows at once: fetches linger."""
    core.publish([body("zeroth")])
    core.fetch_nowait(mailbox, 10)
    core.publish([body("first")])


def test_a_fetch_lingers_for_more_frames_after_the_first() -> None:
    clock = FakeClock()
    core = hub_core(clock, fetch_linger=JOIN_TIMEOUT_SECONDS)
    mailbox = join_member(core, "w")
    frames_come_thick_and_fast(core, mailbox)
    # A frame is there, and the fetch waits for more...
    thread, result = fetch_in_thread(core, clock, mailbox, max_frames=2)
    core.publish([body("second")])
    assert finished(thread)
    assert ids_and_texts(result[0]) == [(2, "first"), (3, "second")]


def test_a_fetch_lingers_no_longer_than_the_linger_after_the_oldest_frame() -> None:
    clock = FakeClock()
    core = hub_core(clock, fetch_linger=1.0)
    mailbox = join_member(core, "w")
    core.publish([body("earlier")])
    core.fetch_nowait(mailbox, 10)
    core.publish([body("old")])
    clock.now = 1.0
    assert ids_and_texts(core.fetch(mailbox, 10)) == [(2, "old")]  # At once.


def test_a_fetch_after_a_quiet_spell_does_not_linger() -> None:
    clock = FakeClock()
    core = hub_core(clock, fetch_linger=1000.0)
    mailbox = join_member(core, "w")
    core.publish([body("before")])
    core.fetch_nowait(mailbox, 10)
    clock.now = 2000.0  # Nothing for longer than the linger...
    core.publish([body("after")])
    thread, result = start_fetch(core, mailbox)
    lingered = not finished(thread)
    core.leave(mailbox)  # Ends a lingering fetch, if it did linger.
    assert finished(thread)
    assert not lingered  # ...so it came at once.
    assert ids_and_texts(result[0]) == [(2, "after")]


def test_a_lingering_fetch_returns_none_when_the_worker_leaves() -> None:
    clock = FakeClock()
    core = hub_core(clock, fetch_linger=JOIN_TIMEOUT_SECONDS)
    mailbox = join_member(core, "w")
    frames_come_thick_and_fast(core, mailbox)
    thread, result = fetch_in_thread(core, clock, mailbox)
    core.leave(mailbox)
    assert finished(thread)
    assert result == [None]


# Housekeeping


def test_housekeep_returns_how_long_until_it_is_next_due() -> None:
    clock = FakeClock()
    core = hub_core(clock, mailbox_size=100, presence_interval=1.0)
    watcher = core.join("watcher", {(1, ROOM): "watcher"})
    assert len(presence_frames(core.fetch_nowait(watcher, 100))) == 1  # Sent at once.
    clock.now = 0.25
    core.update(watcher, presence={(2, ROOM): "ann"})
    assert presence_frames(core.fetch_nowait(watcher, 100)) == []  # Within the interval.
    assert core.housekeep() == pytest.approx(0.75)
    clock.now = 1.0
    assert core.housekeep() == pytest.approx(LEASE_SECONDS / 2)
    [frame] = presence_frames(core.fetch_nowait(watcher, 100))
    assert frame["joined"] == ["ann"]


def test_the_housekeeping_thread_is_woken_to_send_a_held_back_presence_frame() -> None:
    clock = FakeClock()
    core = hub_core(clock, presence_interval=0.05)
    watcher = core.join("watcher", {(1, ROOM): "watcher"})
    core.fetch_nowait(watcher, 10)
    threading.Thread(target=core.run_housekeeping, daemon=True).start()
    # Once it read the clock, it waits half a lease (longer than the fetch below)...
    assert clock.read_elsewhere.wait(JOIN_TIMEOUT_SECONDS), "housekeeping never ran"
    core.update(watcher, presence={(2, ROOM): "ann"})
    clock.now = 0.05
    # ...unless the held-back frame wakes it.
    [frame] = presence_frames(core.fetch(watcher, 10, timeout=JOIN_TIMEOUT_SECONDS))
    assert frame["users"] == ["ann", "watcher"]


# Many threads, one order


def test_publishers_in_many_threads_share_one_order_without_gaps() -> None:
    core = hub_core(FakeClock(), mailbox_size=1000)
    mailbox = join_member(core, "w")
    senders = [f"thread{n}" for n in range(4)]

    def publish_fifty(sender: str) -> None:
        for n in range(50):
            core.publish([body(str(n), sender)])

    threads = [threading.Thread(target=publish_fifty, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    assert all(finished(thread) for thread in threads)
    docs = [json.loads(frame) for frame in core.fetch_nowait(mailbox, 1000) or []]
    assert [doc["id"] for doc in docs] == list(range(1, 201))
    for sender in senders:
        assert [d["message"] for d in docs if d["sender"] == sender] == [str(n) for n in range(50)]


# The hub's run of ids


def test_a_hub_starts_a_run_of_ids_of_its_own() -> None:
    core = hub_core(FakeClock())
    core.join("first to re-join", last_id=100, epoch="old-run")
    assert core.current_epoch() != "old-run"
    assert core.current_epoch() != hub_core(FakeClock()).current_epoch()
    assert core.publish([body("a")]) == 101
    assert core.snapshot(ROOM, None).epoch == core.current_epoch() == core.epoch
    assert core.snapshot(ROOM, since=101, epoch=core.current_epoch()).since_valid
    assert not core.snapshot(ROOM, since=101, epoch="old-run").since_valid


# Rooms


def test_a_blocked_fetch_gets_only_the_frames_of_its_workers_rooms() -> None:
    clock = FakeClock()
    core = hub_core(clock)
    mailbox = join_member(core, "w", room="mine")
    thread, result = fetch_in_thread(core, clock, mailbox)
    core.publish([body("not for this worker", room="theirs"), body("for it", room="mine")])
    assert finished(thread)
    assert ids_and_texts(result[0]) == [(2, "for it")]


def test_rooms_and_snapshots_of_rooms_are_served_under_the_lock() -> None:
    core = hub_core(FakeClock(), max_rooms=2)
    worker = core.join("w", {(1, "a"): "ann", (2, "a"): "bob", (3, "b"): "cy"})
    core.publish([body("hi", room="b")])
    assert core.rooms() == [("a", 2), ("b", 1)]
    assert core.rooms(limit=1) == [("a", 2)]
    joined = core.snapshot("b", None, None, worker, {4: "dee"})
    assert ids_and_texts(joined.messages) == [(1, "hi")]
    assert (joined.room, json.loads(joined.presence)["online"]) == ("b", 2)
    # The limit of rooms reaches the state: both rooms have members, so no third one.
    refused = core.snapshot("c", None, None, worker, {5: "eve"})
    assert refused.refused
    assert core.statistics()["refused_rooms"] == 1
    assert core.statistics()["rooms"] == 2


def test_statistics_name_the_hub_process() -> None:
    stats = hub_core(FakeClock()).statistics()
    assert (stats["pid"], stats["mailboxes"]) == (os.getpid(), {})


def test_the_manager_exposes_what_workers_call_and_the_core_serves() -> None:
    """The remote interface is written once (``HubClient``): each name the manager exposes is
    a method of the hub's core, taking the same arguments."""
    assert EXPOSED == (
        "join", "current_epoch", "join_point", "leave", "update",
        "update_and_count", "publish", "snapshot", "rooms",
        "older", "exchange_figures", "final_figures", "fetch", "statistics",
    )  # fmt: skip
    for name in EXPOSED:
        client_parameters = list(inspect.signature(getattr(HubClient, name)).parameters)
        core_parameters = list(inspect.signature(getattr(HubCore, name)).parameters)
        assert client_parameters == core_parameters[: len(client_parameters)], name


def test_an_update_says_how_many_of_its_bodies_were_published() -> None:
    """What a worker counts as published: the hub drops a body that is no room's chat body."""
    core = hub_core(FakeClock())
    mailbox = join_member(core, "w")
    last_id, published = core.update_and_count(mailbox, [body("one"), "{}", body("two")])
    assert (last_id, published) == (2, 2)
    assert core.update_and_count(mailbox, ["not json"]) == (2, 0)
    assert core.update(mailbox, [body("three")]) == 3
