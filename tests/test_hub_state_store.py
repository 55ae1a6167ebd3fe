"""The hub's rules with a store (``HubState(store=...)``): written before handed out, given
back after a restart, what a returning worker missed, scrollback, retention.

A real ``MessageStore`` in a temporary directory; the clocks are fakes, as in
``test_hub_state``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hub_state import ROOM, TS_MS, FakeClock, body, member

from trio_chat.hub.state import HubState, Wake
from trio_chat.hub.store import MessageStore, Retention, StoreWriteError
from trio_chat.hub_link.interface import Older
from trio_chat.protocol import message_id

HISTORY_SIZE = 3


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[MessageStore]:
    opened = MessageStore.open(data_dir)
    yield opened
    opened.close()


def stored_state(store: MessageStore, *, mailbox_size: int = 100) -> HubState:
    return HubState(
        mailbox_size=mailbox_size,
        history_size=HISTORY_SIZE,
        epoch=store.epoch,
        monotonic=FakeClock(),
        clock_ms=lambda: TS_MS,
        store=store,
    )


def ids(frames: list[str]) -> list[int | None]:
    return [message_id(frame) for frame in frames]


def texts(frames: list[str]) -> list[str]:
    return [json.loads(frame)["message"] for frame in frames]


def publish(state: HubState, *texts_: str, room: str = ROOM) -> None:
    state.publish([body(text, room) for text in texts_])


def test_a_message_is_stored_before_anyone_gets_it(store: MessageStore) -> None:
    state = stored_state(store)
    mailbox, _ = state.join("w", member("ann"))
    state.take(mailbox, 100)

    publish(state, "hello")

    [frame] = state.take(mailbox, 100) or []
    [stored] = store.newest(ROOM, 10)
    assert stored.frame() == frame
    assert (stored.sender, stored.text, stored.ts) == ("ann", "hello", TS_MS)


def test_a_failed_write_hands_out_no_message_and_gives_no_id(store: MessageStore) -> None:
    state = stored_state(store)
    mailbox, _ = state.join("w", member("ann"))
    publish(state, "one")
    state.take(mailbox, 100)
    store._db.execute("PRAGMA query_only = 1")  # Every write now fails.

    with pytest.raises(StoreWriteError):
        state.update(mailbox, [body("lost"), body("too")], {(2, ROOM): "bob"})

    # No message shown; the presence change went through, its frame left for the caller to
    # wake the worker for.
    assert state.take_wake() == Wake(filled=frozenset({mailbox}))
    [presence] = state.take(mailbox, 100) or []
    assert json.loads(presence)["users"] == ["ann", "bob"]
    assert texts(state.snapshot(ROOM, None)[0].messages) == ["one"]
    store._db.execute("PRAGMA query_only = 0")
    publish(state, "two")
    assert ids(state.take(mailbox, 100) or []) == [2]  # The failed ones' ids were not given.


def test_a_restarted_hub_goes_on_with_the_history_and_the_run(data_dir: Path) -> None:
    first_store = MessageStore.open(data_dir)
    first = stored_state(first_store)
    publish(first, "a", "b", "c", "d")
    publish(first, "elsewhere", room="side")
    first_store.close()

    store = MessageStore.open(data_dir)
    try:
        state = stored_state(store)
        assert state.epoch == first.epoch
        snapshot, _ = state.snapshot(ROOM, None)
        assert texts(snapshot.messages) == ["b", "c", "d"]  # The newest HISTORY_SIZE.
        resumed, _ = state.snapshot(ROOM, 2, first.epoch)
        assert (resumed.since_valid, texts(resumed.messages)) == (True, ["c", "d"])
        publish(state, "e")
        assert ids(state.snapshot(ROOM, 4)[0].messages) == [6]  # Ids go on after "elsewhere".
    finally:
        store.close()


def test_a_resume_older_than_the_history_in_memory_is_served_from_the_store(
    store: MessageStore,
) -> None:
    state = stored_state(store)
    publish(state, "1", "2", "3", "4", "5")

    snapshot, _ = state.snapshot(ROOM, 2, state.epoch)

    assert texts(snapshot.messages) == ["3", "4", "5"]
    assert snapshot.first_available == 1  # Nothing missing: no notice.


def test_a_resume_that_missed_more_than_the_history_says_where_it_begins(
    store: MessageStore,
) -> None:
    state = stored_state(store)
    publish(state, *map(str, range(1, 11)))

    snapshot, _ = state.snapshot(ROOM, 2, state.epoch)

    assert texts(snapshot.messages) == ["8", "9", "10"]
    assert snapshot.first_available == 8  # 3 to 7 are left to scrollback (7 is the newest).


def test_a_worker_of_the_same_run_gets_what_it_missed_first(data_dir: Path) -> None:
    first_store = MessageStore.open(data_dir)
    first = stored_state(first_store)
    publish(first, "seen")
    publish(first, "missed", "missed too")
    publish(first, "not its room", room="other")
    first_store.close()  # The hub dies; a new one opens the store.

    store = MessageStore.open(data_dir)
    try:
        state = stored_state(store)
        mailbox, _ = state.join("w", member("ann"), last_id=1, epoch=first.epoch)

        frames = state.take(mailbox, 100) or []
        assert state.join_point(mailbox) == (1, True)
        assert texts([f for f in frames if message_id(f) is not None]) == ["missed", "missed too"]
        assert json.loads(frames[-1])["type"] == "presence"  # Its own join, after them.
    finally:
        store.close()


def test_a_new_worker_begins_after_the_last_id_given(store: MessageStore) -> None:
    state = stored_state(store)
    publish(state, "one", "two")

    mailbox, _ = state.join("w", member("ann"))

    assert state.join_point(mailbox) == (2, False)
    assert state.join_point("gone") == (0, False)


def test_a_worker_of_the_run_that_saw_nothing_is_given_nothing_again(store: MessageStore) -> None:
    """It joined after "one" and "two" (its clients had them in snapshots) and got nothing
    since: re-joining, it starts after them, and gets only what came after."""
    state = stored_state(store)
    publish(state, "one", "two")
    first, _ = state.join("w", member("ann"))
    starts_after, _ = state.join_point(first)
    publish(state, "three")
    state.leave(first)  # Its link broke before it fetched "three".

    again, _ = state.join("w", member("ann"), last_id=starts_after, epoch=state.epoch)

    frames = state.take(again, 100) or []
    assert texts([f for f in frames if message_id(f) is not None]) == ["three"]
    assert state.join_point(again) == (2, True)


@pytest.mark.parametrize(
    ("epoch", "last_id"), [("another run", 1), ("", 0)], ids=["other run", "new worker"]
)
def test_only_a_worker_of_the_run_is_caught_up(
    store: MessageStore, epoch: str, last_id: int
) -> None:
    state = stored_state(store)
    publish(state, "one", "two")

    mailbox, _ = state.join("w", member("ann"), last_id=last_id, epoch=epoch)

    assert not state.join_point(mailbox)[1]
    assert ids(state.take(mailbox, 100) or []) == [None]  # Presence only.


def test_a_worker_that_missed_more_than_its_mailbox_is_not_caught_up(
    store: MessageStore,
) -> None:
    state = stored_state(store, mailbox_size=2)
    publish(state, "one", "two", "three", "four")

    mailbox, _ = state.join("w", member("ann"), last_id=1, epoch=state.epoch)

    assert not state.join_point(mailbox)[1]


def test_scrollback_reads_the_store_to_the_first_message(store: MessageStore) -> None:
    state = stored_state(store)
    publish(state, *map(str, range(1, 8)))
    publish(state, "other room", room="side")

    first_page = state.older(ROOM, 6, 3)
    second_page = state.older(ROOM, 3, 3)

    assert (texts(first_page.messages), first_page.complete) == (["3", "4", "5"], False)
    assert (texts(second_page.messages), second_page.complete) == (["1", "2"], True)
    assert state.older("nobody", 100, 3) == Older("nobody", [], True)


def test_retention_reaches_the_history_in_memory(store: MessageStore) -> None:
    state = stored_state(store)
    publish(state, "1", "2", "3")

    while state.prune(Retention(max_age_ms=10**12, per_room=1), now_ms=TS_MS):
        pass

    snapshot, _ = state.snapshot(ROOM, None)
    assert texts(snapshot.messages) == ["3"]
    resumed, _ = state.snapshot(ROOM, 1, state.epoch)
    assert resumed.first_available == 3  # 2 is gone: the client is told.
    assert state.older(ROOM, 3, 10) == Older(ROOM, [], True)


def test_without_a_store_scrollback_is_the_history_in_memory() -> None:
    state = HubState(
        mailbox_size=100,
        history_size=HISTORY_SIZE,
        epoch="memory",
        monotonic=FakeClock(),
        clock_ms=lambda: TS_MS,
    )
    publish(state, *map(str, range(1, 6)))

    assert state.older(ROOM, 5, 10) == Older(ROOM, state.snapshot(ROOM, None)[0].messages[:2], True)
    assert not state.durable
    assert state.prune(Retention(max_age_ms=0, per_room=1), now_ms=TS_MS) is False


def test_a_resume_from_zero_is_a_resume(store: MessageStore) -> None:
    """The page resumes a room it saw empty with ``since=<epoch>:0``."""
    state = stored_state(store)
    publish(state, *map(str, range(1, 11)))

    snapshot, _ = state.snapshot(ROOM, 0, state.epoch)

    assert texts(snapshot.messages) == ["8", "9", "10"]
    assert snapshot.first_available == 8  # More than fits: the client is told.


def test_a_catch_up_leaves_room_in_the_mailbox_for_the_join_itself(store: MessageStore) -> None:
    state = stored_state(store, mailbox_size=4)
    publish(state, "one", "two", "three")

    mailbox, _ = state.join("w", member("ann"), last_id=0, epoch=state.epoch)

    # Three would leave no room for the join's presence frame, which would evict the mailbox
    # at once, and again at every re-join: the worker is told what it missed instead.
    assert state.join_point(mailbox) == (3, False)
    assert state.waiting(mailbox) == 1


def test_a_worker_whose_missed_messages_retention_deleted_is_not_caught_up(
    store: MessageStore,
) -> None:
    state = stored_state(store)
    publish(state, "one", "two", "three")
    while state.prune(Retention(max_age_ms=10**12, per_room=1), now_ms=TS_MS):
        pass

    mailbox, _ = state.join("w", member("ann"), last_id=1, epoch=state.epoch)

    assert state.join_point(mailbox) == (3, False)


def test_presence_versions_keep_growing_across_hubs_that_share_a_store(data_dir: Path) -> None:
    """Clients compare a new hub's presence versions with an old hub's snapshots."""
    first_store = MessageStore.open(data_dir)
    first = HubState(
        mailbox_size=100, history_size=3, epoch=first_store.epoch, monotonic=FakeClock(),
        clock_ms=lambda: 1_000, store=first_store,
    )  # fmt: skip
    first.join("w", member("ann"))
    for n in range(50):
        first.update("m1", presence={(2, ROOM): f"guest{n}"})
    old_version = first.snapshot(ROOM, None)[0].presence_version
    first_store.close()

    store = MessageStore.open(data_dir)
    try:
        second = HubState(
            mailbox_size=100, history_size=3, epoch=store.epoch, monotonic=FakeClock(),
            clock_ms=lambda: 1_001, store=store,
        )  # fmt: skip
        second.join("w", member("ann"))
        assert second.snapshot(ROOM, None)[0].presence_version > old_version
    finally:
        store.close()


@pytest.mark.parametrize(
    ("published", "since", "complete"),
    [(0, None, True), (3, None, True), (4, None, False), (10, 8, False), (10, 0, False)],
    ids=["empty", "all of it", "one more", "resumed late", "resumed from the start"],
)
def test_a_snapshot_says_whether_anything_older_is_kept(
    store: MessageStore, published: int, since: int | None, complete: bool
) -> None:
    state = stored_state(store)
    publish(state, *map(str, range(1, published + 1)))

    snapshot, _ = state.snapshot(ROOM, since, state.epoch)

    assert snapshot.complete is complete


def test_without_a_store_a_snapshot_is_complete_once_it_holds_all_of_memory() -> None:
    state = HubState(
        mailbox_size=100, history_size=HISTORY_SIZE, epoch="memory", monotonic=FakeClock(),
        clock_ms=lambda: TS_MS,
    )  # fmt: skip
    publish(state, *map(str, range(1, 6)))

    assert state.snapshot(ROOM, None)[0].complete  # Nothing older is kept: it is gone.
    assert not state.snapshot(ROOM, 4, state.epoch)[0].complete  # 3 is older, and kept.
