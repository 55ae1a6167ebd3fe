"""The hub's state made thread-safe, with fetches that wait: what the hub process serves.

``HubCore`` is called from the multiprocessing manager's server threads (one per client
connection), so every method runs under one lock around a ``HubState``, which holds the rules
(the order, history, presence, mailboxes and their policies: see ``state``). This module adds
only the waiting: a condition per mailbox for the fetches blocked on it, one for the
housekeeping thread, and the real clocks. After each change it wakes exactly what the state
says to wake, so a worker's reader never polls for frames and the housekeeper sleeps until a
held-back presence frame is due.

It also keeps the whole server's figures (a ``MetricsBoard``) from its workers' reports, under
a lock of their own: publishing never waits for the board, and a report waits for publishing
only to count the rooms with someone in them (one pass over the rooms). The
board knows a worker of this machine by its pid and process start time, and retires one whose
process is gone at once (a worker elsewhere only by its silence).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..hub_link.interface import (
    FETCH_HEARTBEAT_SECONDS,
    MAX_LISTED_ROOMS,
    Member,
    Older,
    RoomCount,
    Snapshot,
)
from ..metrics.board import MetricsBoard
from ..metrics.figures import ServerFigures, WorkerReport, read_process_start
from .state import DEFAULT_MAX_ROOMS, HubState, Wake
from .store import MessageStore, Retention, StoreWriteError

logger = logging.getLogger("trio_chat.hub")

#: Retention runs this often: it deletes what has aged out since, a batch at a time, with a
#: pause between batches (the lock is not fair: without it, publishers could wait for many).
PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_PAUSE_SECONDS = 0.005
#: The store's WAL is copied into its file this often, outside the lock (``checkpoint``): the
#: WAL then holds about this long's writes (commits write whole pages: some 15 KB each).
CHECKPOINT_INTERVAL_SECONDS = 1.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def new_epoch() -> str:
    """A name for a new run of ids: random, so that a hub replacing a dead one has another."""
    return secrets.token_hex(4)


class HubCore:
    def __init__(
        self,
        *,
        mailbox_size: int,
        history_size: int,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        presence_interval: float = 0.0,
        presence_deliveries: float = math.inf,
        fetch_linger: float = 0.0,
        clock_ms: Callable[[], int] = wall_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
        store: MessageStore | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._state = HubState(
            mailbox_size=mailbox_size,
            history_size=history_size,
            max_rooms=max_rooms,
            epoch=new_epoch() if store is None else store.epoch,
            monotonic=monotonic,
            clock_ms=clock_ms,
            presence_interval=presence_interval,
            presence_deliveries=presence_deliveries,
            store=store,
        )
        self._store = store
        self._retention = retention
        self._clock_ms = clock_ms
        #: A write to the store failed last time: the next success is logged too.
        self._store_failing = False
        self._lock = threading.Lock()
        self._housekeeping = threading.Condition(self._lock)
        #: Where fetches wait on each mailbox: one per mailbox the state holds.
        self._ready: dict[str, threading.Condition] = {}
        self._fetch_linger = fetch_linger
        self._monotonic = monotonic
        # Its workers may be on this machine (the automatic hub's always are): those it sees
        # here (their pid and start time) and whose process is gone are retired at once.
        self._board = MetricsBoard(hub_pid=os.getpid(), process_start=read_process_start)
        self._board_lock = threading.Lock()

    @property
    def epoch(self) -> str:
        """This hub's run of ids (``HubState.epoch``); fixed for the hub's life."""
        return self._state.epoch

    def join(
        self,
        label: str,
        presence: Mapping[Member, str] | None = None,
        last_id: int = 0,
        epoch: str = "",
    ) -> str:
        """Open a mailbox for a worker (``HubState.join``); returns its id."""
        with self._lock:
            mailbox_id, wake = self._state.join(label, presence, last_id, epoch)
            self._ready[mailbox_id] = threading.Condition(self._lock)
            self._wake(wake)
            return mailbox_id

    def current_epoch(self) -> str:
        return self.epoch

    def join_point(self, mailbox_id: str) -> tuple[int, bool]:
        """Where a worker's mailbox begins (``HubState.join_point``)."""
        with self._lock:
            return self._state.join_point(mailbox_id)

    def leave(self, mailbox_id: str) -> None:
        """Remove a mailbox and its connections; a ``fetch`` blocked on it returns ``None``."""
        with self._lock:
            self._wake(self._state.leave(mailbox_id))

    def update(
        self,
        mailbox_id: str,
        bodies: Sequence[str] = (),
        presence: Mapping[Member, str | None] | None = None,
    ) -> int:
        """Publish and apply presence changes (``HubState.update``); returns the last id."""
        return self.update_and_count(mailbox_id, bodies, presence)[0]

    def update_and_count(
        self,
        mailbox_id: str,
        bodies: Sequence[str] = (),
        presence: Mapping[Member, str | None] | None = None,
    ) -> tuple[int, int]:
        """``update``; returns the last id and how many of ``bodies`` were published (a body
        that is not a chat body of a room is dropped): what the worker counts as published."""
        with self._lock:
            before = self._state.last_id
            try:
                last_id, wake = self._state.update(mailbox_id, bodies, presence)
            except StoreWriteError as error:
                # The worker tells the senders; the next update tries again. The presence
                # changes went through: their frames are woken for.
                self._note_store_health(error)
                self._wake(self._state.take_wake())
                raise
            self._note_store_health(None)
            self._wake(wake)
            return last_id, last_id - before

    def publish(self, bodies: Sequence[str]) -> int:
        """Publish from outside any worker (tools and tests)."""
        return self.update("", bodies)

    def snapshot(
        self,
        room: str,
        since: int | None,
        epoch: str | None = None,
        mailbox_id: str = "",
        presence: Mapping[int, str] | None = None,
    ) -> Snapshot:
        """A room's history and presence for a joining client (``HubState.snapshot``)."""
        with self._lock:
            snapshot, wake = self._state.snapshot(room, since, epoch, mailbox_id, presence)
            self._wake(wake)
            return snapshot

    def rooms(self, limit: int = MAX_LISTED_ROOMS) -> list[RoomCount]:
        """The busiest rooms (``HubState.rooms``)."""
        with self._lock:
            return self._state.rooms(limit)

    def older(self, room: str, before: int, limit: int) -> Older:
        """A page of a room's scrollback (``HubState.older``): from the store, without the
        lock (publishing goes on meanwhile), or from memory."""
        if self._state.durable:
            return self._state.older(room, before, limit)
        with self._lock:
            return self._state.older(room, before, limit)

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        """Take a worker's report (``MetricsBoard.report``); the whole server's figures."""
        with self._lock:
            rooms = self._state.occupied_rooms()
        with self._board_lock:
            return self._board.report(report, self._monotonic(), rooms=rooms)

    def final_figures(self, report: WorkerReport) -> None:
        """A worker's last report: it leaves the server (``MetricsBoard.leave``)."""
        with self._board_lock:
            self._board.leave(report.pid, report, self._monotonic())

    def fetch(
        self, mailbox_id: str, max_frames: int, timeout: float = FETCH_HEARTBEAT_SECONDS
    ) -> list[str] | None:
        """Wait for frames, then take up to ``max_frames``; ``None`` once the mailbox is gone.

        A new frame wakes it at once, and ``leave`` (or eviction) wakes it to return ``None``,
        so the worker's reader never polls for messages. After ``timeout`` it returns empty:
        the call itself tells the hub the worker is alive. Frames that come thick and fast
        are given ``fetch_linger`` to join the first (``HubState.linger_until``).
        """
        with self._lock:
            if self._state.waiting(mailbox_id) == 0:
                self._state.heartbeat(mailbox_id)
                self._ready[mailbox_id].wait(timeout)
            until = self._state.linger_until(mailbox_id, self._fetch_linger)
            if until is not None:
                self._linger(mailbox_id, max_frames, until)
            return self._state.take(mailbox_id, max_frames)

    def fetch_nowait(self, mailbox_id: str, max_frames: int) -> list[str] | None:
        with self._lock:
            return self._state.take(mailbox_id, max_frames)

    def housekeep(self) -> float:
        """Expire silent workers and send a coalesced presence frame when due.

        Returns how long to wait before the next call is useful.
        """
        with self._lock:
            return self._housekeep()

    def run_housekeeping(self) -> None:
        """Call ``housekeep`` forever, woken early when presence changes (a hub thread)."""
        with self._lock:
            while True:
                self._housekeeping.wait(self._housekeep())

    def run_pruning(self, interval: float = PRUNE_INTERVAL_SECONDS) -> None:
        """Apply retention to the store forever (a hub thread): a batch at a time under the
        lock, so that publishing waits for one batch at most."""
        while True:
            while self.prune():
                time.sleep(PRUNE_PAUSE_SECONDS)
            time.sleep(interval)

    def run_checkpoints(self, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        """Copy the store's WAL into its file forever (a hub thread), without the lock:
        publishing goes on meanwhile, and its commits never wait for a checkpoint's fsyncs."""
        if self._store is None:
            return
        while True:
            time.sleep(interval)
            try:
                self._store.checkpoint()
            except sqlite3.ProgrammingError:
                return  # The store was closed: the hub is ending.
            except sqlite3.Error:
                logger.exception("event=checkpoint_failed")  # The WAL grows until one works.

    def prune(self) -> bool:
        """One step of retention; returns whether there may be more to delete."""
        if self._retention is None:
            return False
        with self._lock:
            try:
                return self._state.prune(self._retention, self._clock_ms())
            except StoreWriteError as error:
                self._note_store_health(error)
            except sqlite3.Error:
                # A read failed: retention waits for its next turn rather than end for good.
                logger.exception("event=retention_failed")
            return False

    def describe_store(self) -> str:
        if self._store is None:
            return "messages kept in memory only"
        return f"messages stored in {self._store.path} (run of ids {self.epoch})"

    def close(self) -> None:
        """Close the store (the hub is ending): nothing is written after this."""
        if self._store is not None:
            with self._lock:
                self._store.close()

    def statistics(self) -> dict[str, object]:
        with self._lock:
            statistics = {"pid": os.getpid(), **self._state.statistics()}
            if self._store is not None:
                statistics["store"] = self._store.statistics()
            return statistics

    # The methods below expect the lock to be held.

    def _note_store_health(self, error: StoreWriteError | None) -> None:
        """Log when writes start failing and when they work again, not at every attempt."""
        if error is not None and not self._store_failing:
            logger.error("event=store_write_failed %s", error)
        elif error is None and self._store_failing:
            logger.warning("event=store_writable_again")
        self._store_failing = error is not None

    def _housekeep(self) -> float:
        due, wake = self._state.housekeep()
        self._wake(wake)
        return max(0.0, due - self._monotonic())

    def _linger(self, mailbox_id: str, max_frames: int, until: float) -> None:
        """Wait until ``until`` for ``max_frames`` frames, or for the mailbox to go."""
        while (waiting := self._state.waiting(mailbox_id)) is not None and waiting < max_frames:
            left = until - self._monotonic()
            if left <= 0 or not self._ready[mailbox_id].wait(left):
                return

    def _wake(self, wake: Wake) -> None:
        for mailbox_id in wake.filled:
            self._ready[mailbox_id].notify()
        for mailbox_id in wake.removed:
            self._ready.pop(mailbox_id).notify_all()
        if wake.housekeeping_due is not None:
            self._housekeeping.notify()  # It works out when the frame is due.
