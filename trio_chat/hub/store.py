"""The hub's message store: every stamped message in SQLite, so that history outlives the hub.

One file, ``<data dir>/chat.sqlite3``, written by one hub process at a time: the hub holds an
exclusive lock on ``<data dir>/hub.lock`` for as long as it runs, so a second server pointed at
the same folder is refused (``StoreInUse``) instead of interleaving its ids with ours. A hub
that replaces one killed with SIGKILL opens the same file and goes on with the same run of
ids (``epoch``) after the highest id stored.

Checkpoints (copying the WAL into the database file, with its fsyncs) are not left to the
commits, which run under the hub's lock: ``checkpoint`` does them from a thread of their own
(a connection of its own, PASSIVE: writers go on meanwhile).

Durability: WAL mode with ``synchronous=NORMAL``. A commit is in the operating system's hands
when ``append`` returns, so it survives the hub process being killed; a power loss or kernel
crash may roll back the last commits. The store notices that case (the hub did not close it
and the machine has booted since: ``meta.open_on_boot``) and starts a new epoch, so that ids
a client saw are never given again to other messages under the same name.

Layout (``SCHEMA_VERSION``):

- ``messages(id, room, ts, sender, text)``: one row per message, ``id`` the hub's sequence
  (one for all rooms), ``ts`` the hub's wall clock in ms; indexed by ``(room, id)``;
- ``rooms(name, kept, pruned_through)``: how many messages each room has here, and the newest
  of its ids that retention deleted (its older messages are gone for good);
- ``meta(key, value)``: ``schema_version``, ``epoch``, ``last_id`` (kept when retention deletes
  the newest rows) and ``open_on_boot`` (see above).

Threads: the hub's writes (and the reads its state needs) go through one connection, under the
hub's lock; scrollback (``older``) reads through a connection per thread, outside that lock
(WAL lets them read while a write is under way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..protocol import ChatMessage, encode_chat_body, stamp_chat_frame

logger = logging.getLogger("trio_chat.hub")

SCHEMA_VERSION = 1
DATABASE_NAME = "chat.sqlite3"
LOCK_NAME = "hub.lock"
#: Rows one retention step deletes at most: a step holds the hub's lock (publishing waits), so
#: it is kept to a few milliseconds.
PRUNE_BATCH = 500
MS_PER_DAY = 86_400_000
#: The WAL file is truncated back to this after a checkpoint (it grows with bursts of writes).
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
#: Page cache of each scrollback reader's connection (SQLite's unit: KiB when negative), and
#: how many idle ones are kept.
READER_CACHE_KIB = 512
IDLE_READERS = 8
READER_BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    ts INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL
) STRICT;
CREATE INDEX messages_by_room ON messages (room, id);
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    kept INTEGER NOT NULL DEFAULT 0,
    pruned_through INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
"""


class StoreError(Exception):
    """The store cannot be used: the message names the file and what to do about it."""


class StoreInUse(StoreError):
    """Another hub (another server) has the data directory."""


class StoreWriteError(Exception):
    """A write failed (a full disk, say): nothing of it was stored, and no id was given."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    room: str
    ts: int
    sender: str
    text: str

    def frame(self) -> str:
        """The message frame, exactly as it was first sent (``encode_chat_body`` is the one
        encoder of bodies, and ``stamp_chat_frame`` the one of frames)."""
        body = encode_chat_body(self.room, ChatMessage(self.sender, self.text))
        return stamp_chat_frame(self.id, self.ts, body)


def body_fields(body: str) -> tuple[str, str]:
    """The sender and text of a body made by ``encode_chat_body``; ``ValueError`` for
    anything else."""
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not a chat body") from None
    if not isinstance(fields, dict):
        raise ValueError("not a chat body")
    sender, text = fields.get("sender"), fields.get("message")
    if not (isinstance(sender, str) and isinstance(text, str)):
        raise ValueError("not a chat body")
    return sender, text


@dataclasses.dataclass(frozen=True, slots=True)
class Retention:
    """What is kept: nothing older than ``max_age_ms``, at most ``per_room`` per room."""

    max_age_ms: int
    per_room: int


class MessageStore:
    """The SQLite store of one data directory; ``open`` it, and ``close`` it when done."""

    def __init__(self, data_dir: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        self.path = data_dir / DATABASE_NAME
        self._db = connection
        self._lock_fd = lock_fd
        #: Read-only connections for scrollback, idle ones kept for the next call.
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        #: The connection ``checkpoint`` uses (its thread's alone), made at its first call.
        self._checkpointer: sqlite3.Connection | None = None
        #: The run of ids this store's messages belong to.
        self.epoch = ""
        #: The highest id ever stored (retention may have deleted it since).
        self.last_id = 0

    @classmethod
    def open(cls, data_dir: Path) -> MessageStore:
        """Lock the data directory and open (or make) its store; raises ``StoreError``."""
        data_dir = data_dir.absolute()
        lock_fd = _lock_data_dir(data_dir)
        try:
            connection = _connect(data_dir / DATABASE_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(data_dir, connection, lock_fd)
        try:
            store._start()
        except BaseException:
            connection.close()
            os.close(lock_fd)
            raise
        return store

    def append(self, messages: Sequence[StoredMessage]) -> None:
        """Store ``messages`` in one transaction, all or none; raises ``StoreWriteError``."""
        kept: dict[str, int] = {}
        for message in messages:
            kept[message.room] = kept.get(message.room, 0) + 1
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                    [(m.id, m.room, m.ts, m.sender, m.text) for m in messages],
                )
                self._db.executemany(
                    "INSERT INTO rooms (name, kept) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET kept = kept + excluded.kept",
                    kept.items(),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as error:
            raise StoreWriteError(f"cannot write to {self.path}: {error}") from error
        self.last_id = max(self.last_id, messages[-1].id)

    def newest(self, room: str, limit: int, *, after: int = 0) -> list[StoredMessage]:
        """The room's newest ``limit`` messages with ids above ``after``, oldest first."""
        rows = self._db.execute(
            "SELECT id, room, ts, sender, text FROM messages WHERE room = ? AND id > ? "
            "ORDER BY id DESC LIMIT ?",
            (room, after, limit),
        ).fetchall()
        return [StoredMessage(*row) for row in reversed(rows)]

    def older(self, room: str, before: int, limit: int) -> tuple[list[StoredMessage], bool]:
        """The room's newest ``limit`` messages with ids below ``before``, oldest first, and
        whether they reach its oldest message kept. Any thread; never waits for a write."""
        with self._reader() as reader:
            rows = reader.execute(
                "SELECT id, room, ts, sender, text FROM messages WHERE room = ? AND id < ? "
                "ORDER BY id DESC LIMIT ?",
                (room, before, limit + 1),
            ).fetchall()
        complete = len(rows) <= limit
        return [StoredMessage(*row) for row in reversed(rows[:limit])], complete

    def keeps_older(self, room: str, before: int) -> bool:
        """Whether any message of the room with an id below ``before`` is kept (the hub's
        connection: under the hub's lock, never waiting on a reader's)."""
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE room = ? AND id < ? LIMIT 1", (room, before)
        ).fetchone()
        return row is not None

    def after(self, last_id: int, rooms: Iterable[str], limit: int) -> list[StoredMessage] | None:
        """Every message of ``rooms`` with an id above ``last_id``, in order (what a worker
        missed while its link was down); ``None`` if there are more than ``limit``, or if
        retention deleted some of them. One indexed read per room: other rooms' messages cost
        nothing."""
        found: list[StoredMessage] = []
        for room in rooms:
            if self.pruned_through(room) > last_id:
                return None
            rows = self._db.execute(
                "SELECT id, room, ts, sender, text FROM messages WHERE room = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (room, last_id, limit + 1 - len(found)),
            ).fetchall()
            found += [StoredMessage(*row) for row in rows]
            if len(found) > limit:
                return None
        return sorted(found, key=lambda message: message.id)

    def pruned_through(self, room: str) -> int:
        """The newest id of the room that retention deleted (0: none)."""
        row = self._db.execute(
            "SELECT pruned_through FROM rooms WHERE name = ?", (room,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def prune_step(self, retention: Retention, now_ms: int) -> dict[str, int]:
        """Delete up to ``PRUNE_BATCH`` messages that ``retention`` no longer keeps, the
        oldest first; returns the rooms it deleted from and their new ``pruned_through``
        (empty once nothing is left to delete). Raises ``StoreWriteError``."""
        doomed = self._too_old(now_ms - retention.max_age_ms)
        if len(doomed) < PRUNE_BATCH:
            # The oldest of a room may be too old as well: each row is counted once.
            chosen = set(doomed)
            extra = self._beyond_count(retention.per_room, PRUNE_BATCH - len(doomed), chosen)
            doomed += [row for row in extra if row not in chosen]
        if not doomed:
            return {}
        through: dict[str, int] = {}
        deleted: dict[str, int] = {}
        for message_id, room in doomed:
            through[room] = max(through.get(room, 0), message_id)
            deleted[room] = deleted.get(room, 0) + 1
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # The newest id ever given must outlive its row: ids must not be given twice.
                self._set_meta("last_id", str(self.last_id))
                self._db.executemany("DELETE FROM messages WHERE id = ?", [(m,) for m, _ in doomed])
                self._db.executemany(
                    "UPDATE rooms SET kept = kept - ?, "
                    "pruned_through = max(pruned_through, ?) WHERE name = ?",
                    [(deleted[room], through[room], room) for room in through],
                )
                self._db.execute("DELETE FROM rooms WHERE kept <= 0 AND pruned_through = 0")
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as error:
            raise StoreWriteError(f"cannot prune {self.path}: {error}") from error
        return through

    def checkpoint(self) -> int:
        """Copy what the WAL holds into the database file, without stopping writers (any
        thread but the writer's; one at a time). Returns the WAL's frames not copied yet
        (those a reader still needs, or written meanwhile)."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        _, log_frames, copied = self._checkpointer.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
        return max(0, int(log_frames) - int(copied))

    def statistics(self) -> dict[str, int]:
        count, size = self._db.execute(
            "SELECT (SELECT count(*) FROM messages), "
            "(SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())"
        ).fetchone()
        return {"stored": int(count), "bytes": int(size)}

    def close(self) -> None:
        """Close cleanly: the next hub need not suspect lost commits."""
        with self._readers_lock:
            self._closed = True  # Readers in use are closed when their call ends.
            for reader in self._idle_readers:
                reader.close()
            self._idle_readers.clear()
        if self._checkpointer is not None:
            self._checkpointer.close()
        try:
            self._db.execute("DELETE FROM meta WHERE key = 'open_on_boot'")
        except sqlite3.Error as error:
            logger.warning("could not mark %s closed: %s", self.path, error)
        finally:
            self._db.close()
            os.close(self._lock_fd)

    def _start(self) -> None:
        """Check the file, make the tables of a new one, and read (or begin) the epoch."""
        try:
            if self._check():
                self._db.executescript(_SCHEMA)
                self._set_meta("schema_version", str(SCHEMA_VERSION))
            version = self._meta("schema_version")
            if version != str(SCHEMA_VERSION):
                raise StoreError(_version_problem(self.path, str(version)))
            self._begin_run()
        except sqlite3.Error as error:
            raise StoreError(_open_problem(self.path, error)) from error

    def _check(self) -> bool:
        """Refuse what is not a sound trio_chat store; returns whether the file is new."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_schema")}
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self.path} is an SQLite database but not a trio_chat store: point "
                "TRIO_CHAT_DATA_DIR at another folder"
            )
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        self._db.execute("PRAGMA wal_autocheckpoint = 0")  # ``checkpoint`` does them.
        return not tables

    def _begin_run(self) -> None:
        boot = _boot_id()
        epoch = self._meta("epoch")
        open_on_boot = self._meta("open_on_boot")
        stored_last = self._db.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
        self.last_id = max(stored_last, int(self._meta("last_id") or 0))
        if epoch is None or (open_on_boot is not None and open_on_boot != boot):
            if epoch is not None:
                logger.warning(
                    "the machine went down while %s was open: its last writes may be lost, "
                    "so a new run of ids begins (clients resuming are sent the history)",
                    self.path,
                )
            epoch = secrets.token_hex(4)
        self.epoch = epoch
        self._db.execute("BEGIN IMMEDIATE")
        self._set_meta("epoch", epoch)
        self._set_meta("last_id", str(self.last_id))
        self._set_meta("open_on_boot", boot)
        self._db.execute("COMMIT")

    def _too_old(self, cutoff_ms: int) -> list[tuple[int, str]]:
        # The oldest rows by id: ids follow the clock, so the first one young enough ends it
        # (an index on ``ts`` would cost every insert).
        rows = self._db.execute(
            "SELECT id, room, ts FROM messages ORDER BY id LIMIT ?", (PRUNE_BATCH,)
        ).fetchall()
        doomed = []
        for message_id, room, ts in rows:
            if ts >= cutoff_ms:
                break
            doomed.append((message_id, room))
        return doomed

    def _beyond_count(
        self, per_room: int, limit: int, chosen: set[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """The oldest rows of rooms holding more than ``per_room`` (``chosen`` rows are going
        anyway: they count as gone)."""
        doomed: list[tuple[int, str]] = []
        crowded = self._db.execute(
            "SELECT name, kept - ? FROM rooms WHERE kept > ? LIMIT ?", (per_room, per_room, limit)
        ).fetchall()
        for room, excess in crowded:
            already = sum(1 for _, name in chosen if name == room)
            wanted = min(excess - already, limit - len(doomed))
            if wanted <= 0:
                continue
            rows = self._db.execute(
                "SELECT id FROM messages WHERE room = ? ORDER BY id LIMIT ?",
                (room, wanted + already),
            ).fetchall()
            doomed += [(row[0], room) for row in rows if (row[0], room) not in chosen][:wanted]
            if len(doomed) >= limit:
                break
        return doomed

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one call: an idle one, or a new one. At most
        ``IDLE_READERS`` are kept between calls (the hub's threads come and go with its
        clients' connections, so one per thread would pile up)."""
        with self._readers_lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self.path} is closed")
            reader = self._idle_readers.pop() if self._idle_readers else None
        if reader is None:
            reader = sqlite3.connect(
                f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            reader.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
            # A read may find the WAL being reset or checkpointed: wait a moment, not fail.
            reader.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS}")
        try:
            yield reader
        finally:
            with self._readers_lock:
                if self._closed or len(self._idle_readers) >= IDLE_READERS:
                    reader.close()
                else:
                    self._idle_readers.append(reader)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _rollback(self) -> None:
        if self._db.in_transaction:
            # SQLite may have rolled back by itself (a full disk at commit does).
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")


def _lock_data_dir(data_dir: Path) -> int:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise StoreError(
            f"cannot use {data_dir} for the message store: {error.strerror}; check that it can "
            "be created and written, or set TRIO_CHAT_DATA_DIR"
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreInUse(
            f"{data_dir} is in use by another trio_chat server's hub (pid {holder}): give each "
            "server its own TRIO_CHAT_DATA_DIR, or stop the other one"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # Made here first, so that it (and the WAL files SQLite gives the same mode) is private.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # Autocommit: transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``).
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as error:
        raise StoreError(_open_problem(path, error)) from error


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"  # Not Linux: a crash of the machine then goes unnoticed.


def _open_problem(path: Path, error: BaseException) -> str:
    reason = error.strerror if isinstance(error, OSError) else str(error)
    if isinstance(error, (OSError, sqlite3.OperationalError)):
        # Permissions, a full disk, an I/O error: the file itself may well be sound.
        advice = (
            "check that the server's user can read and write it and its folder, and that the "
            "disk has room"
        )
    else:
        advice = (
            "the file is damaged: move it aside (with its -wal and -shm files) to start with an "
            "empty history, or restore it from a backup"
        )
    return (
        f"cannot open the message store {path}: {reason}. {advice}; or set "
        "TRIO_CHAT_STORE=memory to keep no history on disk"
    )


def _version_problem(path: Path, version: str) -> str:
    newer = version.isdigit() and int(version) > SCHEMA_VERSION
    return (
        f"{path} was written by a {'newer' if newer else 'different'} version of trio_chat "
        f"(store schema {version}; this one reads {SCHEMA_VERSION}): "
        + ("upgrade trio_chat" if newer else "move it aside")
        + ", or point TRIO_CHAT_DATA_DIR at another folder"
    )
