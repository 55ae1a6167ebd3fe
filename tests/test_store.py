"""hub/store.py: the SQLite message store, in a temporary directory.

What is written can be read back, in order, by room; the epoch and the last id outlive the
store being closed, or abandoned as a killed hub abandons it; retention deletes the oldest
first and remembers what it deleted; a damaged, foreign, newer or locked store is refused with
a message naming the file; a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.hub.store import (
    DATABASE_NAME,
    LOCK_NAME,
    PRUNE_BATCH,
    MessageStore,
    Retention,
    StoredMessage,
    StoreError,
    StoreInUse,
    StoreWriteError,
    body_fields,
)
from trio_chat.protocol import ChatMessage, encode_chat_body, stamp_chat_frame

from file_faults import read_only

KEEP_ALL = Retention(max_age_ms=10**15, per_room=10**9)


def message(
    message_id: int, room: str = "general", ts: int = 1_000, text: str = ""
) -> StoredMessage:
    return StoredMessage(message_id, room, ts, "ann", text or f"message {message_id}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MessageStore]:
    opened = MessageStore.open(tmp_path / "data")
    yield opened
    opened.close()


def test_a_new_store_is_private_and_begins_a_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    opened = MessageStore.open(data_dir)
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / DATABASE_NAME).stat().st_mode) == 0o600
        assert len(opened.epoch) == 8
        assert opened.last_id == 0
    finally:
        opened.close()


def test_messages_come_back_by_room_oldest_first(store: MessageStore) -> None:
    store.append([message(1), message(2, "side"), message(3)])
    store.append([message(4)])

    assert [m.id for m in store.newest("general", 10)] == [1, 3, 4]
    assert [m.id for m in store.newest("general", 2)] == [3, 4]
    assert [m.id for m in store.newest("general", 10, after=3)] == [4]
    assert store.newest("side", 10) == [message(2, "side")]
    assert store.newest("nobody", 10) == []
    assert store.last_id == 4


def test_a_stored_message_gives_back_the_frame_the_hub_sent() -> None:
    chat = ChatMessage('ann "the" 🦊', "line\nbreak \\ \u202e")
    body = encode_chat_body("general", chat)

    stored = StoredMessage(7, "general", 1234, *body_fields(body))

    assert stored.frame() == stamp_chat_frame(7, 1234, body)


@pytest.mark.parametrize(
    "body", ["[]", "{", '{"room":"general","sender":1,"message":"x"}', "[" * 5000]
)
def test_what_is_not_a_chat_body_is_refused(body: str) -> None:
    with pytest.raises(ValueError, match="not a chat body"):
        body_fields(body)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.text(min_size=1)), min_size=1),
        max_size=8,
    )
)
def test_what_was_written_is_read_back_in_order(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[str, str]]]
) -> None:
    data_dir = tmp_path_factory.mktemp("data")
    written: list[StoredMessage] = []
    opened = MessageStore.open(data_dir)
    try:
        for batch in batches:
            rows = [
                StoredMessage(len(written) + i + 1, room, 5, "s", text)
                for i, (room, text) in enumerate(batch)
            ]
            opened.append(rows)
            written += rows
    finally:
        opened.close()
    reopened = MessageStore.open(data_dir)
    try:
        for room in "abc":
            expected = [m for m in written if m.room == room]
            assert reopened.newest(room, len(written) + 1) == expected
            paged: list[StoredMessage] = []
            before, complete = len(written) + 1, False
            while not complete:
                page, complete = reopened.older(room, before, 3)
                paged = page + paged
                before = page[0].id if page else before
            assert paged == expected
        assert reopened.last_id == len(written)
    finally:
        reopened.close()


def test_older_pages_back_to_the_first_message(store: MessageStore) -> None:
    store.append([message(i) for i in range(1, 8)])

    assert store.older("general", 8, 3) == ([message(5), message(6), message(7)], False)
    assert store.older("general", 5, 3) == ([message(2), message(3), message(4)], False)
    assert store.older("general", 2, 3) == ([message(1)], True)
    assert store.older("general", 1, 3) == ([], True)
    # Exactly the last page: nothing older is kept.
    assert store.older("general", 4, 3) == ([message(1), message(2), message(3)], True)


def test_the_run_goes_on_after_a_clean_close(tmp_path: Path) -> None:
    first = MessageStore.open(tmp_path)
    first.append([message(1), message(2)])
    epoch = first.epoch
    first.close()

    second = MessageStore.open(tmp_path)
    try:
        assert (second.epoch, second.last_id) == (epoch, 2)
    finally:
        second.close()


def test_the_run_goes_on_after_the_hub_was_killed(tmp_path: Path) -> None:
    """A killed process leaves the store open (``open_on_boot`` set) on this very boot: its
    commits are safe in the operating system, so the run goes on."""
    first = MessageStore.open(tmp_path)
    first.append([message(1)])
    epoch = first.epoch
    _abandon(first)

    second = MessageStore.open(tmp_path)
    try:
        assert (second.epoch, second.last_id) == (epoch, 1)
    finally:
        second.close()


def test_a_new_run_begins_after_the_machine_went_down(tmp_path: Path) -> None:
    """Left open on another boot: the last commits may be gone, and their ids with them."""
    first = MessageStore.open(tmp_path)
    first.append([message(1)])
    epoch = first.epoch
    _abandon(first)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE meta SET value = 'another boot' WHERE key = 'open_on_boot'")

    second = MessageStore.open(tmp_path)
    try:
        assert second.epoch != epoch
        assert second.last_id == 1  # Ids still never go back.
    finally:
        second.close()


def test_a_restored_backup_begins_a_new_run_once_told(tmp_path: Path) -> None:
    """docs/deployment.md: after restoring, delete the epoch; the next hub begins a run."""
    first = MessageStore.open(tmp_path)
    first.append([message(1)])
    epoch = first.epoch
    first.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("DELETE FROM meta WHERE key = 'epoch'")
    db.close()

    second = MessageStore.open(tmp_path)
    try:
        assert second.epoch != epoch
        assert (second.last_id, second.newest("general", 10)) == (1, [message(1)])
    finally:
        second.close()


def test_a_second_hub_on_the_same_folder_is_refused(store: MessageStore, tmp_path: Path) -> None:
    with pytest.raises(
        StoreInUse, match=rf"{tmp_path / 'data'} is in use .* \(pid {os.getpid()}\)"
    ):
        MessageStore.open(tmp_path / "data")


def test_the_folder_is_free_again_once_closed(tmp_path: Path) -> None:
    MessageStore.open(tmp_path).close()
    MessageStore.open(tmp_path).close()
    assert (tmp_path / LOCK_NAME).exists()


def test_a_damaged_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"SQLite format 3\0" + os.urandom(4096))

    with pytest.raises(StoreError, match=rf"{tmp_path / DATABASE_NAME}.*move it aside"):
        MessageStore.open(tmp_path)
    # Refused, not replaced: the old file is still there for its owner to rescue.
    assert (tmp_path / DATABASE_NAME).read_bytes().startswith(b"SQLite format 3\0")


def test_a_truncated_store_is_refused(tmp_path: Path) -> None:
    opened = MessageStore.open(tmp_path)
    opened.append([message(i, text="x" * 3000) for i in range(1, 200)])
    opened.close()
    path = tmp_path / DATABASE_NAME
    os.truncate(path, path.stat().st_size // 2)

    with pytest.raises(StoreError, match="cannot open the message store"):
        MessageStore.open(tmp_path)


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")

    with pytest.raises(StoreError, match="not a trio_chat store"):
        MessageStore.open(tmp_path)


def test_a_store_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    MessageStore.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match=r"newer version of trio_chat .*schema 99.*upgrade"):
        MessageStore.open(tmp_path)


def test_an_unwritable_store_is_refused_with_what_to_check(tmp_path: Path) -> None:
    MessageStore.open(tmp_path).close()

    with (
        read_only(tmp_path / DATABASE_NAME),
        pytest.raises(StoreError, match=r"cannot open the message store .* can read and write"),
    ):
        MessageStore.open(tmp_path)


def test_a_failed_write_leaves_nothing(store: MessageStore) -> None:
    store.append([message(1)])

    with pytest.raises(StoreWriteError, match="cannot write to"):
        store.append([message(2), message(1)])  # The second breaks the primary key.

    assert [m.id for m in store.newest("general", 10)] == [1]
    assert store.last_id == 1
    store.append([message(2)])  # And the store goes on.
    assert [m.id for m in store.newest("general", 10)] == [1, 2]


def test_a_full_disk_fails_the_write_and_only_it(store: MessageStore) -> None:
    store.append([message(1)])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # As full as a full disk.

    with pytest.raises(StoreWriteError, match="full"):
        store.append([message(i, text="x" * 4000) for i in range(2, 40)])

    assert [m.id for m in store.newest("general", 100)] == [1]


def test_retention_deletes_what_is_too_old_first(store: MessageStore) -> None:
    store.append([message(1, ts=100), message(2, "side", ts=200), message(3, ts=300)])

    pruned = store.prune_step(Retention(max_age_ms=150, per_room=10), now_ms=400)

    assert pruned == {"general": 1, "side": 2}
    assert [m.id for m in store.newest("general", 10)] == [3]
    assert store.newest("side", 10) == []
    assert (store.pruned_through("general"), store.pruned_through("side")) == (1, 2)
    assert store.prune_step(Retention(max_age_ms=150, per_room=10), now_ms=400) == {}


def test_retention_keeps_the_newest_of_each_room(store: MessageStore) -> None:
    store.append([message(i, "busy" if i % 4 else "quiet") for i in range(1, 21)])

    while store.prune_step(Retention(max_age_ms=10**12, per_room=3), now_ms=2_000):
        pass

    assert [m.id for m in store.newest("busy", 100)] == [17, 18, 19]
    assert [m.id for m in store.newest("quiet", 100)] == [12, 16, 20]
    assert store.pruned_through("busy") == 15


def test_retention_by_age_and_by_count_counts_each_message_once(store: MessageStore) -> None:
    store.append([message(i, ts=1 if i <= 10 else 100) for i in range(1, 1001)])

    while store.prune_step(Retention(max_age_ms=50, per_room=900), now_ms=100):
        pass

    assert [m.id for m in store.newest("general", 10**6)] == list(range(101, 1001))
    kept = store._db.execute("SELECT kept FROM rooms WHERE name = 'general'").fetchone()[0]
    assert kept == 900


def test_scrollback_reuses_its_connections_whatever_thread_asks(store: MessageStore) -> None:
    """The hub's threads come and go with its clients: a connection each would pile up."""
    store.append([message(1)])

    for _ in range(20):
        thread = threading.Thread(target=store.older, args=("general", 10, 10))
        thread.start()
        thread.join()

    assert len(store._idle_readers) == 1


def test_commits_leave_checkpoints_to_their_own_thread(store: MessageStore) -> None:
    """A checkpoint's fsyncs must not happen inside a commit, under the hub's lock."""
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    for i in range(1, 2001):  # Some 30 MB of WAL: many times what would trigger one.
        store.append([message(i)])
    wal = store.path.with_name(f"{DATABASE_NAME}-wal")
    assert wal.stat().st_size > 20 * 1024 * 1024

    copied_in = threading.Thread(target=store.checkpoint)
    copied_in.start()
    copied_in.join()

    assert store.checkpoint() == 0  # All of it is in the database file now.
    size = wal.stat().st_size
    store.append([message(2001)])
    assert wal.stat().st_size <= size  # The WAL starts over rather than grow.


def test_retention_works_a_batch_at_a_time(store: MessageStore) -> None:
    store.append([message(i, ts=1) for i in range(1, PRUNE_BATCH + 11)])

    assert store.prune_step(Retention(max_age_ms=1, per_room=10**6), now_ms=5)
    assert len(store.newest("general", 10**6)) == 10
    assert store.prune_step(Retention(max_age_ms=1, per_room=10**6), now_ms=5)
    assert store.newest("general", 10) == []


def test_ids_never_go_back_when_retention_deletes_the_newest(tmp_path: Path) -> None:
    opened = MessageStore.open(tmp_path)
    opened.append([message(1, ts=1), message(2, ts=1)])
    opened.prune_step(Retention(max_age_ms=1, per_room=10), now_ms=10)
    opened.close()

    reopened = MessageStore.open(tmp_path)
    try:
        assert reopened.newest("general", 10) == []
        assert reopened.last_id == 2
    finally:
        reopened.close()


def test_what_a_returning_worker_missed(store: MessageStore) -> None:
    store.append([message(1), message(2, "side"), message(3, "other"), message(4)])

    assert [m.id for m in store.after(1, {"general", "side"}, limit=10) or []] == [2, 4]
    assert store.after(1, {"general", "side"}, limit=1) is None  # More than it can take.
    assert store.after(4, {"general"}, limit=10) == []


def test_older_reads_while_a_write_is_under_way(store: MessageStore) -> None:
    store.append([message(1)])
    store._db.execute("BEGIN IMMEDIATE")
    store._db.execute("INSERT INTO messages VALUES (2, 'general', 1, 'ann', 'not yet')")

    assert store.older("general", 10, 10) == ([message(1)], True)

    store._db.execute("ROLLBACK")


def _abandon(opened: MessageStore) -> None:
    """Let go of the store as a killed process does: no clean close."""
    opened._db.close()
    os.close(opened._lock_fd)


def test_what_a_killed_hub_committed_is_there_for_the_next(tmp_path: Path) -> None:
    """A process that commits and is killed at once (its WAL not checkpointed, the store not
    closed): the next one finds every message and goes on in the same run."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from trio_chat.hub.store import MessageStore, StoredMessage\n"
        "store = MessageStore.open(Path(sys.argv[1]))\n"
        "print(store.epoch, flush=True)\n"
        "store.append([StoredMessage(i, 'general', 1, 'ann', str(i)) for i in range(1, 4)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / f"{DATABASE_NAME}-wal").exists()  # Never checkpointed.

    reopened = MessageStore.open(tmp_path)
    try:
        assert reopened.epoch == killed.stdout.strip()
        assert [m.text for m in reopened.newest("general", 10)] == ["1", "2", "3"]
        assert reopened.last_id == 3
    finally:
        reopened.close()


def test_whether_older_messages_are_kept_is_asked_of_the_room_alone(store: MessageStore) -> None:
    store.append([message(1, "side"), message(2), message(3)])

    assert store.keeps_older("general", 3)
    assert not store.keeps_older("general", 2)  # 1 is another room's.
    assert not store.keeps_older("nobody", 10)
