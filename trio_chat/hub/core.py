"""The hub's state: the total order, the history, presence, and one mailbox per worker.

``HubCore`` lives in the hub process and is called from the multiprocessing manager's server
threads (one per client connection), so every method is thread-safe under one lock; the
in-process ``LocalHub`` uses it too. Messages and presence frames enter every mailbox under
that lock, so all workers see one order of both.

Policies:
- History: the last ``history_size`` messages, for joins and resumes; older ones are gone.
- Mailboxes hold at most ``mailbox_size`` frames. A worker that falls that far behind has its
  mailbox (and its connections' presence) removed, freeing the memory; its next ``fetch``
  returns ``None`` and it re-joins and tells its clients that messages were missed.
- Liveness: a live worker is always fetching, and ``fetch`` returns empty after
  ``FETCH_HEARTBEAT_SECONDS`` at the latest, so a worker not seen for ``LEASE_SECONDS`` has
  died without leaving: ``housekeep`` removes it, and its users leave presence.
- Presence frames are coalesced: at most one per ``presence_interval``, and in a large room
  fewer: a presence frame goes to every client, so the interval grows with the number online to
  keep presence at ``presence_deliveries`` per second in all (at most one frame every
  ``MAX_PRESENCE_INTERVAL_SECONDS``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..protocol import stamp_chat_frame
from .presence import PresenceBook

#: The longest a ``fetch`` waits before returning empty: the worker's heartbeat.
FETCH_HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 3 * FETCH_HEARTBEAT_SECONDS
#: However large the room, a presence frame at least this often while presence changes.
MAX_PRESENCE_INTERVAL_SECONDS = 10.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a joining client is sent before live frames, and where live frames take over."""

    #: Message frames after ``since`` (or the whole history), oldest first.
    messages: list[str]
    #: The highest id given so far: live messages with an id up to this one are in the past.
    last_id: int
    #: The oldest id still kept (``last_id + 1`` when none is).
    first_available: int
    #: The presence frame as of now, and its version: older presence frames are in the past.
    presence: str
    presence_version: int
    #: Which run of ids this hub's are (it changes when a new server starts from scratch).
    epoch: str = ""
    #: False when ``since`` was ahead of ``last_id`` or from another epoch (the messages are
    #: then the whole history).
    since_valid: bool = True


class Sequencer:
    """Numbers and stamps messages: ids start at 1 and never repeat or skip."""

    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._next_id = 1
        self._clock_ms = clock_ms

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def continue_after(self, last_id: int) -> None:
        """Never give an id up to ``last_id`` (one a worker saw from a previous hub)."""
        self._next_id = max(self._next_id, last_id + 1)

    def stamp(self, bodies: Sequence[str]) -> list[tuple[int, str]]:
        ts_ms = self._clock_ms()
        first = self._next_id
        self._next_id += len(bodies)
        return [(first + i, stamp_chat_frame(first + i, ts_ms, b)) for i, b in enumerate(bodies)]


class _Mailbox:
    __slots__ = ("filled_at", "frames", "label", "last_seen", "ready", "taken_at")

    def __init__(self, label: str, lock: threading.Lock, now: float) -> None:
        self.label = label
        self.frames: collections.deque[str] = collections.deque()
        self.ready = threading.Condition(lock)
        self.last_seen = now
        #: When the oldest frame waiting arrived, and when frames were last taken.
        self.filled_at = now
        self.taken_at = -math.inf


class HubCore:
    def __init__(
        self,
        *,
        mailbox_size: int,
        history_size: int,
        presence_interval: float = 0.0,
        presence_deliveries: float = math.inf,
        fetch_linger: float = 0.0,
        clock_ms: Callable[[], int] = wall_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._housekeeping = threading.Condition(self._lock)
        self._sequencer = Sequencer(clock_ms)
        self._history: collections.deque[tuple[int, str]] = collections.deque(maxlen=history_size)
        self._presence = PresenceBook()
        self._presence_interval = presence_interval
        self._presence_deliveries = presence_deliveries
        self._fetch_linger = fetch_linger
        self._last_presence_at = -math.inf  # The first one goes at once.
        self._mailboxes: dict[str, _Mailbox] = {}
        self._mailbox_ids = itertools.count(1)
        self._mailbox_size = mailbox_size
        self._monotonic = monotonic
        #: Names this hub's run of ids. A hub that replaces a dead one starts a new run: it
        #: cannot know every id the dead one gave (a worker only knows those it fetched), so
        #: its own may repeat some, and only the epoch tells them apart.
        self.epoch = secrets.token_hex(4)
        self._evicted = 0
        self._expired = 0

    def join(
        self,
        label: str,
        presence: Mapping[int, str] | None = None,
        last_id: int = 0,
        epoch: str = "",
    ) -> str:
        """Open a mailbox for a worker and take its current connections into presence.

        ``last_id`` and ``epoch``: the highest id the worker has seen, and the run of ids it
        was part of. A hub started after another one died gives ids above those its workers
        saw, so that ids keep growing where it can tell; but in a run of its own (``epoch``
        is not taken over), since another worker may have seen more of the old run than the
        first to join: a resume from the old run gets the whole history, never a silent gap.
        """
        with self._lock:
            self._sequencer.continue_after(last_id)
            mailbox_id = f"m{next(self._mailbox_ids)}"
            self._mailboxes[mailbox_id] = _Mailbox(label, self._lock, self._monotonic())
            self._presence.replace_worker(mailbox_id, presence or {})
            self._presence_changed()
            return mailbox_id

    def current_epoch(self) -> str:
        with self._lock:
            return self.epoch

    def leave(self, mailbox_id: str) -> None:
        """Remove a mailbox and its connections; a ``fetch`` blocked on it returns ``None``."""
        with self._lock:
            self._remove([mailbox_id])

    def update(
        self,
        mailbox_id: str,
        bodies: Sequence[str] = (),
        presence: Mapping[int, str | None] | None = None,
    ) -> int:
        """Publish ``bodies`` in order and apply a worker's presence changes (``None``: gone).

        Returns the last id given. Changes from a mailbox that is gone are ignored: that worker
        re-joins with all its connections anyway.
        """
        with self._lock:
            if bodies:
                stamped = self._sequencer.stamp(bodies)
                self._history.extend(stamped)
                self._broadcast([frame for _, frame in stamped])
            if presence and mailbox_id in self._mailboxes:
                self._presence.apply(mailbox_id, presence)
                self._presence_changed()
            return self._sequencer.last_id

    def publish(self, bodies: Sequence[str]) -> int:
        """Publish from outside any worker (tools and tests)."""
        return self.update("", bodies)

    def snapshot(
        self,
        since: int | None,
        epoch: str | None = None,
        mailbox_id: str = "",
        presence: Mapping[int, str] | None = None,
    ) -> Snapshot:
        """History for a joining client: after ``since``, or all that is kept.

        ``presence``: the joining client's connection and name, taken into presence first (in
        the same call, so that the client is in the presence it is sent).
        """
        with self._lock:
            if presence and mailbox_id in self._mailboxes:
                self._presence.apply(mailbox_id, presence)
                self._presence_changed()
            last_id = self._sequencer.last_id
            since_valid = since is None or (since <= last_id and epoch in (None, self.epoch))
            after = since if since is not None and since_valid else 0
            messages = [frame for message_id, frame in self._history if message_id > after]
            state = self._presence.current()
            return Snapshot(
                messages=messages,
                last_id=last_id,
                first_available=self._history[0][0] if self._history else last_id + 1,
                presence=state.frame(),
                presence_version=state.version,
                epoch=self.epoch,
                since_valid=since_valid,
            )

    def fetch(
        self, mailbox_id: str, max_frames: int, timeout: float = FETCH_HEARTBEAT_SECONDS
    ) -> list[str] | None:
        """Wait for frames, then take up to ``max_frames``; ``None`` once the mailbox is gone.

        A new frame wakes it at once, and ``leave`` (or eviction) wakes it to return ``None``,
        so the worker's reader never polls for messages. After ``timeout`` it returns empty:
        the call itself tells the hub the worker is alive.
        """
        with self._lock:
            mailbox = self._mailboxes.get(mailbox_id)
            if mailbox is not None and not mailbox.frames:
                mailbox.last_seen = self._monotonic()
                mailbox.ready.wait(timeout)
                mailbox = self._mailboxes.get(mailbox_id)
            if mailbox is not None and mailbox.frames:
                self._linger(mailbox_id, mailbox, max_frames)
                mailbox = self._mailboxes.get(mailbox_id)
            return self._take(mailbox, max_frames)

    def fetch_nowait(self, mailbox_id: str, max_frames: int) -> list[str] | None:
        with self._lock:
            return self._take(self._mailboxes.get(mailbox_id), max_frames)

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

    def _housekeep(self) -> float:  # The lock is held.
        now = self._monotonic()
        self._remove(
            [
                mailbox_id
                for mailbox_id, mailbox in self._mailboxes.items()
                if now - mailbox.last_seen > LEASE_SECONDS
            ],
            expired=True,
        )
        wait = LEASE_SECONDS / 2
        if self._presence.dirty:
            due = self._last_presence_at + self._current_presence_interval()
            if now >= due:
                self._publish_presence(now)
            else:
                wait = min(wait, due - now)
        return wait

    def statistics(self) -> dict[str, object]:
        with self._lock:
            state = self._presence.current()
            return {
                "pid": os.getpid(),
                "epoch": self.epoch,
                "last_id": self._sequencer.last_id,
                "history": len(self._history),
                "online": state.online,
                "users": list(state.users),
                "mailboxes": {
                    mailbox_id: {"label": mailbox.label, "waiting": len(mailbox.frames)}
                    for mailbox_id, mailbox in self._mailboxes.items()
                },
                "evicted": self._evicted,
                "expired": self._expired,
            }

    # The methods below expect the lock to be held.

    def _linger(self, mailbox_id: str, mailbox: _Mailbox, max_frames: int) -> None:
        """Let frames that arrive within ``fetch_linger`` of the oldest one waiting go in the
        same fetch: each fetch is a pickled round trip through the manager. Only while
        frames come thick and fast: the first one after a quiet spell goes at once."""
        if mailbox.filled_at - mailbox.taken_at > self._fetch_linger:
            return
        deadline = mailbox.filled_at + self._fetch_linger
        while len(mailbox.frames) < max_frames and self._mailboxes.get(mailbox_id) is mailbox:
            left = deadline - self._monotonic()
            if left <= 0 or not mailbox.ready.wait(left):
                return

    def _take(self, mailbox: _Mailbox | None, max_frames: int) -> list[str] | None:
        if mailbox is None:
            return None
        mailbox.last_seen = self._monotonic()
        frames = mailbox.frames
        if frames:
            mailbox.taken_at = mailbox.last_seen
        if len(frames) <= max_frames:
            mailbox.frames = collections.deque()
            return list(frames)
        return [frames.popleft() for _ in range(max_frames)]

    def _broadcast(self, frames: list[str]) -> None:
        overflowing = []
        for mailbox_id, mailbox in self._mailboxes.items():
            if len(mailbox.frames) + len(frames) > self._mailbox_size:
                overflowing.append(mailbox_id)
            else:
                if not mailbox.frames:
                    mailbox.filled_at = self._monotonic()
                mailbox.frames.extend(frames)
                mailbox.ready.notify()
        if overflowing:
            self._evicted += len(overflowing)
            self._remove(overflowing)

    def _remove(self, mailbox_ids: list[str], *, expired: bool = False) -> None:
        for mailbox_id in mailbox_ids:
            mailbox = self._mailboxes.pop(mailbox_id, None)
            if mailbox is not None:
                self._expired += expired
                mailbox.frames.clear()
                mailbox.ready.notify_all()
            self._presence.drop_worker(mailbox_id)
        self._presence_changed()

    def _presence_changed(self) -> None:
        if not self._presence.dirty:
            return
        now = self._monotonic()
        if now - self._last_presence_at >= self._current_presence_interval():
            self._publish_presence(now)
        else:
            self._housekeeping.notify()  # The housekeeping thread sends it when due.

    def _current_presence_interval(self) -> float:
        by_size = min(
            self._presence.online / self._presence_deliveries, MAX_PRESENCE_INTERVAL_SECONDS
        )
        return max(self._presence_interval, by_size)

    def _publish_presence(self, now: float) -> None:
        self._last_presence_at = now
        self._broadcast([self._presence.publish()])
