"""The hub's state: the total order, the history, presence, and one mailbox per worker.

Pure bookkeeping, like ``PresenceBook``: no lock, no thread, no clock of its own. The monotonic
clock (leases, presence coalescing), the wall clock that stamps messages and the epoch are given
at construction, so every rule runs in a test with a fake clock. A call that changes the state
returns a ``Wake``: which mailboxes got frames or are gone, and when housekeeping is due sooner,
so that its caller wakes exactly the fetches and the housekeeper waiting for those (``HubCore``,
with conditions under one lock). Messages and presence frames enter every mailbox in the same
call, so all workers see one order of both.

Policies:
- History: the last ``history_size`` messages, for joins and resumes; older ones are gone.
- Mailboxes hold at most ``mailbox_size`` frames. A worker that falls that far behind has its
  mailbox (and its connections' presence) removed, freeing the memory; its next fetch returns
  ``None`` and it re-joins and tells its clients that messages were missed.
- Liveness: a live worker is always fetching, and a fetch returns empty after
  ``FETCH_HEARTBEAT_SECONDS`` at the latest, so a worker not seen for ``LEASE_SECONDS`` has
  died without leaving: ``housekeep`` removes it, and its users leave presence.
- Presence frames are coalesced: at most one per ``presence_interval``, and in a large room
  fewer: a presence frame goes to every client, so the interval grows with the number online to
  keep presence at ``presence_deliveries`` per second in all (at most one frame every
  ``MAX_PRESENCE_INTERVAL_SECONDS``). A frame held back is sent by ``housekeep`` when due.
- Fetches linger for more frames only while frames come thick and fast (``linger_until``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

from ..hub_link.interface import LEASE_SECONDS, Snapshot
from ..protocol import stamp_chat_frame
from .presence import PresenceBook

#: However large the room, a presence frame at least this often while presence changes.
MAX_PRESENCE_INTERVAL_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Wake:
    """What one call changed for those waiting on the state: wake these, and only these."""

    #: Mailboxes that got frames: a fetch waiting on one of them can take them now.
    filled: frozenset[str] = frozenset()
    #: Mailboxes removed (left, evicted, expired): a fetch waiting on one returns ``None``.
    removed: frozenset[str] = frozenset()
    #: A presence frame is held back until then (on the monotonic clock): housekeeping must
    #: run by that time. ``None``: its plans are unchanged.
    housekeeping_due: float | None = None


class Sequencer:
    """Numbers and stamps messages: ids start at 1 and never repeat or skip."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
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


@dataclasses.dataclass(slots=True)
class _Mailbox:
    label: str
    #: When the worker was last known alive: a fetch began to wait, or took frames.
    last_seen: float
    #: When the oldest frame waiting arrived, and when frames were last taken.
    filled_at: float
    taken_at: float = -math.inf
    frames: collections.deque[str] = dataclasses.field(default_factory=collections.deque)


class HubState:
    def __init__(
        self,
        *,
        mailbox_size: int,
        history_size: int,
        epoch: str,
        monotonic: Callable[[], float],
        clock_ms: Callable[[], int],
        presence_interval: float = 0.0,
        presence_deliveries: float = math.inf,
    ) -> None:
        #: Names this hub's run of ids. A hub that replaces a dead one starts a new run: it
        #: cannot know every id the dead one gave (a worker only knows those it fetched), so
        #: its own may repeat some, and only the epoch tells them apart.
        self.epoch = epoch
        self._monotonic = monotonic
        self._sequencer = Sequencer(clock_ms)
        self._history: collections.deque[tuple[int, str]] = collections.deque(maxlen=history_size)
        self._presence = PresenceBook()
        self._presence_interval = presence_interval
        self._presence_deliveries = presence_deliveries
        self._last_presence_at = -math.inf  # The first one goes at once.
        self._mailboxes: dict[str, _Mailbox] = {}
        self._mailbox_ids = itertools.count(1)
        self._mailbox_size = mailbox_size
        self._evicted = 0
        self._expired = 0
        # What the call under way leaves to wake (``_wake`` hands it out).
        self._filled: set[str] = set()
        self._removed: set[str] = set()
        self._housekeeping_due: float | None = None

    def join(
        self,
        label: str,
        presence: Mapping[int, str] | None = None,
        last_id: int = 0,
        epoch: str = "",
    ) -> tuple[str, Wake]:
        """Open a mailbox for a worker and take its current connections into presence.

        Returns the new mailbox's id. ``last_id`` and ``epoch``: the highest id the worker has
        seen, and the run of ids it was part of. A hub started after another one died gives
        ids above those its workers saw, so that ids keep growing where it can tell; but in a
        run of its own (``epoch`` is not taken over), since another worker may have seen more
        of the old run than the first to join: a resume from the old run gets the whole
        history, never a silent gap.
        """
        self._sequencer.continue_after(last_id)
        mailbox_id = f"m{next(self._mailbox_ids)}"
        now = self._monotonic()
        self._mailboxes[mailbox_id] = _Mailbox(label, last_seen=now, filled_at=now)
        self._presence.replace_worker(mailbox_id, presence or {})
        self._presence_changed()
        return mailbox_id, self._wake()

    def leave(self, mailbox_id: str) -> Wake:
        """Remove a mailbox and its connections."""
        self._remove([mailbox_id])
        return self._wake()

    def update(
        self,
        mailbox_id: str,
        bodies: Sequence[str] = (),
        presence: Mapping[int, str | None] | None = None,
    ) -> tuple[int, Wake]:
        """Publish ``bodies`` in order and apply a worker's presence changes (``None``: gone).

        Returns the last id given. Changes from a mailbox that is gone are ignored: that worker
        re-joins with all its connections anyway.
        """
        if bodies:
            stamped = self._sequencer.stamp(bodies)
            self._history.extend(stamped)
            self._broadcast([frame for _, frame in stamped])
        if presence and mailbox_id in self._mailboxes:
            self._presence.apply(mailbox_id, presence)
            self._presence_changed()
        return self._sequencer.last_id, self._wake()

    def publish(self, bodies: Sequence[str]) -> tuple[int, Wake]:
        """Publish from outside any worker (tools and tests)."""
        return self.update("", bodies)

    def snapshot(
        self,
        since: int | None,
        epoch: str | None = None,
        mailbox_id: str = "",
        presence: Mapping[int, str] | None = None,
    ) -> tuple[Snapshot, Wake]:
        """History for a joining client: after ``since``, or all that is kept.

        ``presence``: the joining client's connection and name, taken into presence first (in
        the same call, so that the client is in the presence it is sent).
        """
        if presence and mailbox_id in self._mailboxes:
            self._presence.apply(mailbox_id, presence)
            self._presence_changed()
        last_id = self._sequencer.last_id
        since_valid = since is None or (since <= last_id and epoch in (None, self.epoch))
        after = since if since is not None and since_valid else 0
        state = self._presence.current()
        snapshot = Snapshot(
            messages=[frame for message_id, frame in self._history if message_id > after],
            last_id=last_id,
            first_available=self._history[0][0] if self._history else last_id + 1,
            presence=state.frame(),
            presence_version=state.version,
            epoch=self.epoch,
            since_valid=since_valid,
        )
        return snapshot, self._wake()

    def waiting(self, mailbox_id: str) -> int | None:
        """How many frames wait in a mailbox; ``None`` once it is gone."""
        mailbox = self._mailboxes.get(mailbox_id)
        return None if mailbox is None else len(mailbox.frames)

    def heartbeat(self, mailbox_id: str) -> None:
        """The worker behind a mailbox is alive now (a fetch of its starts to wait)."""
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is not None:
            mailbox.last_seen = self._monotonic()

    def linger_until(self, mailbox_id: str, linger: float) -> float | None:
        """Until when a fetch that found frames waiting may wait for more to join them.

        Frames that arrive within ``linger`` of the oldest one waiting may go in the same
        fetch: each fetch is a pickled round trip through the manager. Only while frames come
        thick and fast: ``None`` (take them now) for the first frames after a quiet spell, as
        for an empty mailbox or one that is gone.
        """
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None or not mailbox.frames or mailbox.filled_at - mailbox.taken_at > linger:
            return None
        return mailbox.filled_at + linger

    def take(self, mailbox_id: str, max_frames: int) -> list[str] | None:
        """Take up to ``max_frames`` frames, oldest first; ``None`` once the mailbox is gone.

        Empty when none wait. Either way the worker is alive: taking renews its lease.
        """
        mailbox = self._mailboxes.get(mailbox_id)
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

    def housekeep(self) -> tuple[float, Wake]:
        """Expire silent workers and send a coalesced presence frame when due.

        Returns when housekeeping is next due (on the monotonic clock), and what to wake.
        """
        now = self._monotonic()
        self._remove(
            [
                mailbox_id
                for mailbox_id, mailbox in self._mailboxes.items()
                if now - mailbox.last_seen > LEASE_SECONDS
            ],
            expired=True,
        )
        self._presence_changed()  # Sends the frame held back, if it is due.
        due = now + LEASE_SECONDS / 2
        if self._housekeeping_due is not None:
            due = min(due, self._housekeeping_due)
            self._housekeeping_due = None  # The caller is the housekeeper: ``due`` tells it.
        return due, self._wake()

    def statistics(self) -> dict[str, object]:
        state = self._presence.current()
        return {
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

    def _wake(self) -> Wake:
        """What the call ends with, for its caller; the next call starts with nothing to wake."""
        wake = Wake(
            frozenset(self._filled - self._removed),
            frozenset(self._removed),
            self._housekeeping_due,
        )
        self._filled.clear()
        self._removed.clear()
        self._housekeeping_due = None
        return wake

    def _broadcast(self, frames: list[str]) -> None:
        now = self._monotonic()
        overflowing = []
        for mailbox_id, mailbox in self._mailboxes.items():
            if len(mailbox.frames) + len(frames) > self._mailbox_size:
                overflowing.append(mailbox_id)
                continue
            if not mailbox.frames:
                mailbox.filled_at = now
            mailbox.frames.extend(frames)
            self._filled.add(mailbox_id)
        if overflowing:
            self._evicted += len(overflowing)
            self._remove(overflowing)

    def _remove(self, mailbox_ids: list[str], *, expired: bool = False) -> None:
        for mailbox_id in mailbox_ids:
            if self._mailboxes.pop(mailbox_id, None) is not None:
                self._expired += expired
                self._removed.add(mailbox_id)
            self._presence.drop_worker(mailbox_id)
        self._presence_changed()

    def _presence_changed(self) -> None:
        """Send a presence frame if one is due, else hold it back for ``housekeep``."""
        if not self._presence.dirty:
            return
        now = self._monotonic()
        due = self._last_presence_at + self._current_presence_interval()
        if now >= due:
            self._last_presence_at = now
            self._broadcast([self._presence.publish()])
        elif self._housekeeping_due is None or due < self._housekeeping_due:
            self._housekeeping_due = due

    def _current_presence_interval(self) -> float:
        by_size = min(
            self._presence.online / self._presence_deliveries, MAX_PRESENCE_INTERVAL_SECONDS
        )
        return max(self._presence_interval, by_size)
