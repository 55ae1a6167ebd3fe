"""The hub's state: the total order, each room's history and presence, one mailbox per worker.

Pure bookkeeping, like ``PresenceBook``: no lock, no thread, no clock of its own. The monotonic
clock (leases, presence coalescing, idle rooms), the wall clock that stamps messages and the
epoch are given at construction, so every rule runs in a test with a fake clock. A call that
changes the state returns a ``Wake``: which mailboxes got frames or are gone, and when
housekeeping is due sooner, so that its caller wakes exactly the fetches and the housekeeper
waiting for those (``HubCore``, with conditions under one lock).

Order: one sequence of ids for all rooms. A room's frames (messages and presence) go to the
mailboxes of the workers with a member in the room (``_Room.mailboxes``), in that one order,
so all members of a room see one order of both, and a worker pays nothing for rooms it has no
member in. A frame goes to a mailbox once, however many of the worker's connections are in
its room: the worker's room fan-out does the rest.

Policies:
- Rooms: a room exists once a client joins it (``snapshot``). At most ``max_rooms`` exist;
  a room nobody is in is forgotten, with its history, once nobody has joined, left or written
  to it for ``empty_room_seconds``, or sooner, the longest idle first, when a new room needs
  its place. A join of a new room while every room has members is refused (``refused``). A
  room with members always exists: a worker that re-joins brings back the rooms of its members.
- History: the last ``history_size`` messages of each room, for joins and resumes; older ones
  are gone (the room remembers up to which id: ``Snapshot.first_available``).
- Mailboxes hold at most ``mailbox_size`` frames. A worker that falls that far behind has its
  mailbox (and its connections' presence) removed, freeing the memory; its next fetch returns
  ``None`` and it re-joins and tells its clients that messages were missed.
- Liveness: a live worker is always fetching, and a fetch returns empty after
  ``FETCH_HEARTBEAT_SECONDS`` at the latest, so a worker not seen for ``LEASE_SECONDS`` has
  died without leaving: ``housekeep`` removes it, and its users leave presence.
- Presence frames are coalesced per room: at most one per ``presence_interval``, and in a large
  room fewer: a presence frame goes to every member, so the interval grows with the number
  online to keep presence at ``presence_deliveries`` per second in all (at most one frame every
  ``MAX_PRESENCE_INTERVAL_SECONDS``). A frame held back is sent by ``housekeep`` when due.
- Fetches linger for more frames only while frames come thick and fast (``linger_until``).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

from ..hub_link.interface import (
    LEASE_SECONDS,
    MAX_LISTED_ROOMS,
    Member,
    Older,
    RoomCount,
    Snapshot,
)
from ..protocol import body_room, message_id, stamp_chat_frame
from .presence import PresenceBook
from .store import MessageStore, Retention, StoredMessage, body_fields

#: However large the room, a presence frame at least this often while presence changes.
MAX_PRESENCE_INTERVAL_SECONDS = 10.0
#: Rooms the hub keeps at most (``TRIO_CHAT_MAX_ROOMS``), and how long a room nobody is in is
#: kept after its last join, leave or message.
DEFAULT_MAX_ROOMS = 1000
EMPTY_ROOM_SECONDS = 3600.0


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

    def reserve(self, count: int) -> tuple[int, int]:
        """Ids for ``count`` messages: the first one, and the time they are stamped with."""
        first = self._next_id
        self._next_id += count
        return first, self._clock_ms()

    def give_back(self, first: int) -> None:
        """The ids from ``first`` on, just reserved, were not given after all (not stored)."""
        self._next_id = first

    def stamp(self, bodies: Sequence[str]) -> list[tuple[int, str]]:
        first, ts_ms = self.reserve(len(bodies))
        return stamped(first, ts_ms, bodies)


def stamped(first: int, ts_ms: int, bodies: Sequence[str]) -> list[tuple[int, str]]:
    """``bodies`` as frames with ids from ``first`` on, all stamped ``ts_ms``."""
    return [(first + i, stamp_chat_frame(first + i, ts_ms, b)) for i, b in enumerate(bodies)]


@dataclasses.dataclass(slots=True, eq=False)
class _Room:
    name: str
    history: collections.deque[tuple[int, str]]
    presence: PresenceBook
    #: The id of the newest message no longer in ``history`` (dropped, or given before the
    #: room was made: a room made again after being forgotten cannot tell what it had).
    trimmed_through: int
    #: When someone last joined, left or wrote (monotonic clock): idle rooms are forgotten.
    active_at: float
    #: The mailboxes of the workers with a member here: where the room's frames go.
    mailboxes: set[str] = dataclasses.field(default_factory=set)
    last_presence_at: float = -math.inf  # The first presence frame goes at once.

    def keep(self, stamped: tuple[int, str]) -> None:
        if len(self.history) == self.history.maxlen:
            self.trimmed_through = self.history[0][0]
        self.history.append(stamped)


@dataclasses.dataclass(slots=True)
class _Mailbox:
    label: str
    #: The rooms the worker has members in (``_Room.mailboxes`` the other way round).
    rooms: set[str]
    #: When the worker was last known alive: a fetch began to wait, or took frames.
    last_seen: float
    #: When the oldest frame waiting arrived, and when frames were last taken.
    filled_at: float
    taken_at: float = -math.inf
    frames: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    #: The last id before the mailbox's first frame, and whether it began with what the
    #: worker missed (``HubState.join_point``).
    starts_after: int = 0
    caught_up: bool = False


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
        max_rooms: int = DEFAULT_MAX_ROOMS,
        empty_room_seconds: float = EMPTY_ROOM_SECONDS,
        store: MessageStore | None = None,
    ) -> None:
        #: Names this hub's run of ids. Without a store, a hub that replaces a dead one starts
        #: a new run: it cannot know every id the dead one gave (a worker only knows those it
        #: fetched), so its own may repeat some, and only the epoch tells them apart. With a
        #: store, every id given is in it: the run goes on (``store.epoch``).
        self.epoch = epoch
        self._monotonic = monotonic
        self._sequencer = Sequencer(clock_ms)
        self._clock_ms = clock_ms
        #: Where every message is written before it is handed out (``None``: kept in memory
        #: only, ``history_size`` per room). Room histories are then its newest messages.
        self._store = store
        if store is not None:
            self._sequencer.continue_after(store.last_id)
        self._history_size = history_size
        self._rooms: dict[str, _Room] = {}
        self._max_rooms = max_rooms
        self._empty_room_seconds = empty_room_seconds
        self._presence_interval = presence_interval
        self._presence_deliveries = presence_deliveries
        #: Rooms whose presence frame is held back until ``housekeep``.
        self._presence_held: set[str] = set()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._mailbox_ids = itertools.count(1)
        self._mailbox_size = mailbox_size
        self._evicted = 0
        self._expired = 0
        self._refused_rooms = 0
        self._bad_bodies = 0
        # What the call under way leaves to wake (``_wake`` hands it out).
        self._filled: set[str] = set()
        self._removed: set[str] = set()
        self._housekeeping_due: float | None = None

    def join(
        self,
        label: str,
        presence: Mapping[Member, str] | None = None,
        last_id: int = 0,
        epoch: str = "",
    ) -> tuple[str, Wake]:
        """Open a mailbox for a worker and take its current members into presence.

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
        mailbox = self._mailboxes[mailbox_id] = _Mailbox(label, set(), last_seen=now, filled_at=now)
        mailbox.starts_after = self._sequencer.last_id
        if epoch == self.epoch:
            mailbox.caught_up = self._catch_up(mailbox_id, last_id, presence or {})
            if mailbox.caught_up:
                mailbox.starts_after = last_id
        self._apply_presence(mailbox_id, presence or {})
        return mailbox_id, self._wake()

    def join_point(self, mailbox_id: str) -> tuple[int, bool]:
        """Where a worker's mailbox begins: every message after that id, in the worker's
        rooms, comes through it (those before are the past, which snapshots give); and whether
        it begins with every message of those rooms that the worker had not seen (from the
        store, when it re-joined in the same run of ids), so that its clients missed nothing.
        ``(0, False)`` once the mailbox is gone."""
        mailbox = self._mailboxes.get(mailbox_id)
        return (0, False) if mailbox is None else (mailbox.starts_after, mailbox.caught_up)

    @property
    def last_id(self) -> int:
        """The last message id given (0: none yet)."""
        return self._sequencer.last_id

    @property
    def durable(self) -> bool:
        """Whether messages are stored (then ``older`` only reads the store, from any thread)."""
        return self._store is not None

    def leave(self, mailbox_id: str) -> Wake:
        """Remove a mailbox and its members."""
        self._remove([mailbox_id])
        return self._wake()

    def update(
        self,
        mailbox_id: str,
        bodies: Sequence[str] = (),
        presence: Mapping[Member, str | None] | None = None,
    ) -> tuple[int, Wake]:
        """Publish ``bodies`` in order and apply a worker's presence changes (``None``: gone).

        Returns the last id given. Changes from a mailbox that is gone are ignored: that worker
        re-joins with all its members anyway. A body that is not a chat body of a room is
        dropped (and counted): workers only send what ``encode_chat_body`` made.

        If the store refuses the bodies (``StoreWriteError``), none is published, but the
        presence changes still are (people who left must not stay listed while the disk is
        full): what they change is then waiting in ``take_wake``.
        """
        try:
            if bodies:
                self._publish(bodies)
        finally:
            if presence and mailbox_id in self._mailboxes:
                self._apply_presence(mailbox_id, presence)
        return self._sequencer.last_id, self._wake()

    def take_wake(self) -> Wake:
        """What a call that raised changed, for its caller to wake (see ``update``)."""
        return self._wake()

    def publish(self, bodies: Sequence[str]) -> tuple[int, Wake]:
        """Publish from outside any worker (tools and tests)."""
        return self.update("", bodies)

    def snapshot(
        self,
        room: str,
        since: int | None,
        epoch: str | None = None,
        mailbox_id: str = "",
        presence: Mapping[int, str] | None = None,
    ) -> tuple[Snapshot, Wake]:
        """A room's history for a joining client: after ``since``, or all that is kept.

        ``presence``: the joining client's connection and name, taken into the room's presence
        first (in the same call, so that the client is in the presence it is sent). Makes the
        room if it does not exist, or says ``refused`` when no room can make way for it.
        """
        last_id = self._sequencer.last_id
        state = self._rooms.get(room) or self._make_room_if_allowed(room)
        if state is None:
            self._refused_rooms += 1
            refused = Snapshot(room, [], last_id, last_id + 1, "", 0, self.epoch, refused=True)
            return refused, self._wake()
        if presence and mailbox_id in self._mailboxes:
            self._apply_presence(mailbox_id, {(c, room): name for c, name in presence.items()})
        since_valid = since is None or (since <= last_id and epoch in (None, self.epoch))
        after = since if since is not None and since_valid else 0
        resuming = since is not None and since_valid
        messages, first_available = self._history_after(state, after, resuming=resuming)
        first_sent = message_id(messages[0]) if messages else None
        current = state.presence.current()
        snapshot = Snapshot(
            room=room,
            messages=messages,
            last_id=last_id,
            first_available=first_available,
            presence=current.frame(),
            presence_version=current.version,
            epoch=self.epoch,
            since_valid=since_valid,
            complete=self._keeps_nothing_before(state, first_sent),
        )
        return snapshot, self._wake()

    def rooms(self, limit: int = MAX_LISTED_ROOMS) -> list[RoomCount]:
        """The busiest rooms first (then by name), at most ``limit``."""
        counts = [(room.name, room.presence.online) for room in self._rooms.values()]
        return heapq.nsmallest(limit, counts, key=lambda count: (-count[1], count[0]))

    def occupied_rooms(self) -> int:
        """Rooms with a member online now (one pass over at most ``max_rooms`` rooms)."""
        return sum(1 for room in self._rooms.values() if room.presence.online)

    def older(self, room: str, before: int, limit: int) -> Older:
        """Up to ``limit`` of the room's messages with ids below ``before``, oldest first.

        With a store, read from it alone (``durable``: callers may call this outside their
        lock); else from the room's history in memory."""
        if self._store is not None:
            stored, complete = self._store.older(room, before, limit)
            return Older(room, [message.frame() for message in stored], complete)
        state = self._rooms.get(room)
        kept = [] if state is None else [item for item in state.history if item[0] < before]
        page = kept[-limit:] if limit > 0 else []
        return Older(room, [frame for _, frame in page], complete=len(page) == len(kept))

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
        """Expire silent workers, send coalesced presence frames when due, and forget rooms
        left empty and idle.

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
        for name in list(self._presence_held):
            self._presence_held.discard(name)
            if (room := self._rooms.get(name)) is not None:
                self._presence_changed(room)  # Sends the frame held back, if it is due.
        for room in list(self._rooms.values()):
            if not room.mailboxes and now - room.active_at > self._empty_room_seconds:
                del self._rooms[room.name]
        due = now + LEASE_SECONDS / 2
        if self._housekeeping_due is not None:
            due = min(due, self._housekeeping_due)
            self._housekeeping_due = None  # The caller is the housekeeper: ``due`` tells it.
        return due, self._wake()

    def prune(self, retention: Retention, now_ms: int) -> bool:
        """One step of retention in the store (``MessageStore.prune_step``), and the same in
        the histories in memory; returns whether there may be more to delete."""
        if self._store is None:
            return False
        pruned = self._store.prune_step(retention, now_ms)
        for name, through in pruned.items():
            room = self._rooms.get(name)
            if room is None:
                continue
            while room.history and room.history[0][0] <= through:
                room.history.popleft()
            room.trimmed_through = max(room.trimmed_through, through)
        return bool(pruned)

    def statistics(self) -> dict[str, object]:
        rooms = self._rooms.values()
        return {
            "epoch": self.epoch,
            "last_id": self._sequencer.last_id,
            "rooms": len(self._rooms),
            "history": sum(len(room.history) for room in rooms),
            "online": sum(room.presence.online for room in rooms),
            "mailboxes": {
                mailbox_id: {
                    "label": mailbox.label,
                    "waiting": len(mailbox.frames),
                    "rooms": len(mailbox.rooms),
                }
                for mailbox_id, mailbox in self._mailboxes.items()
            },
            "evicted": self._evicted,
            "expired": self._expired,
            "refused_rooms": self._refused_rooms,
            "bad_bodies": self._bad_bodies,
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

    def _make_room_if_allowed(self, name: str) -> _Room | None:
        """A new room, if there is place for it: the longest idle empty room makes way."""
        if len(self._rooms) >= self._max_rooms:
            empty = [room for room in self._rooms.values() if not room.mailboxes]
            if not empty:
                return None
            del self._rooms[min(empty, key=lambda room: room.active_at).name]
        return self._room(name)

    def _room(self, name: str) -> _Room:
        """The room, made if need be (a join allowed it, or its members or messages need it)."""
        room = self._rooms.get(name)
        if room is None:
            history = collections.deque[tuple[int, str]](maxlen=self._history_size)
            trimmed_through = self._sequencer.last_id
            if self._store is not None:
                stored = self._store.newest(name, self._history_size)
                history.extend((message.id, message.frame()) for message in stored)
                if stored:
                    trimmed_through = stored[0].id - 1  # Older ones are in the store.
            room = self._rooms[name] = _Room(
                name,
                history,
                PresenceBook(name, self._first_presence_version()),
                trimmed_through=trimmed_through,
                active_at=self._monotonic(),
            )
        return room

    def _publish(self, bodies: Sequence[str]) -> None:
        """Stamp, store (all or nothing: ``StoreWriteError`` leaves no trace), then hand out."""
        routed: list[tuple[_Room, str]] = []
        fields: list[tuple[str, str]] = []  # Sender and text of each, for the store.
        for body in bodies:
            try:
                name = body_room(body)
                if self._store is not None:
                    # What the store cannot take must not be handed out.
                    fields.append(body_fields(body))
                routed.append((self._room(name), body))
            except ValueError:
                self._bad_bodies += 1
        if not routed:
            return
        first, ts_ms = self._sequencer.reserve(len(routed))
        if self._store is not None:
            try:
                self._store.append(
                    [
                        StoredMessage(first + i, room.name, ts_ms, *fields[i])
                        for i, (room, _) in enumerate(routed)
                    ]
                )
            except BaseException:
                self._sequencer.give_back(first)
                raise
        frames = stamped(first, ts_ms, [body for _, body in routed])
        now = self._monotonic()
        # Runs of frames of one room go to its mailboxes together, in the one order.
        run: list[str] = []
        for index, ((room, _), message) in enumerate(zip(routed, frames, strict=True)):
            room.keep(message)
            room.active_at = now
            run.append(message[1])
            if index + 1 == len(routed) or routed[index + 1][0] is not room:
                self._broadcast(room, run)
                run = []

    def _keeps_nothing_before(self, room: _Room, first: int | None) -> bool:
        """Whether nothing of the room older than message ``first`` is kept (``None``: whether
        nothing at all is)."""
        before = self._sequencer.last_id + 1 if first is None else first
        if self._store is not None:
            return not self._store.keeps_older(room.name, before)
        return not room.history or room.history[0][0] >= before

    def _first_presence_version(self) -> int:
        """Where a new room's presence versions start. With a store, a hub that replaces a dead
        one goes on in the same run of ids, and its workers' clients compare its presence
        versions with those of the old hub's snapshots (``catch_up``): so they start at the
        wall clock in microseconds, above any version an earlier hub gave (at most a few a
        second per room). Without a store, a new hub's run tells the clients to start over."""
        return 0 if self._store is None else self._clock_ms() * 1000

    def _history_after(self, room: _Room, after: int, *, resuming: bool) -> tuple[list[str], int]:
        """The room's newest ``history_size`` message frames after ``after``, and the first
        id from which none is missing (``Snapshot.first_available``)."""
        if self._store is None or not resuming or after >= room.trimmed_through:
            messages = [frame for message_id, frame in room.history if message_id > after]
            if self._store is None:
                return messages, room.trimmed_through + 1
            return messages, self._store.pruned_through(room.name) + 1
        # Older than the history in memory: the store has them. One more than is sent tells
        # whether some between ``after`` and the first sent are left out (the newest of
        # those, then: all after it are sent).
        stored = self._store.newest(room.name, self._history_size + 1, after=after)
        if len(stored) > self._history_size:
            left_out, *stored = stored
            first_available = left_out.id + 1
        else:
            first_available = self._store.pruned_through(room.name) + 1
        return [message.frame() for message in stored], first_available

    def _catch_up(self, mailbox_id: str, last_id: int, presence: Mapping[Member, str]) -> bool:
        """Fill a re-joining worker's new mailbox with what its rooms had after ``last_id``;
        False when that is not possible (no store, retention deleted some of it, or more than
        half the mailbox holds: the join's own presence frames must fit after it)."""
        if self._store is None:
            return False
        rooms = {room for _, room in presence}
        missed = self._store.after(last_id, rooms, self._mailbox_size // 2)
        if missed is None:
            return False
        if missed:
            self._mailboxes[mailbox_id].frames.extend(message.frame() for message in missed)
            self._filled.add(mailbox_id)
        return True

    def _apply_presence(self, mailbox_id: str, changes: Mapping[Member, str | None]) -> None:
        by_room: dict[str, list[tuple[int, str | None]]] = {}
        for (connection, room_name), name in changes.items():
            by_room.setdefault(room_name, []).append((connection, name))
        now = self._monotonic()
        for name_of_room, room_changes in by_room.items():
            mailbox = self._mailboxes.get(mailbox_id)
            if mailbox is None:
                return  # Evicted by a presence frame of its own: it re-joins with everything.
            if name_of_room not in self._rooms and all(name is None for _, name in room_changes):
                continue
            room = self._room(name_of_room)
            for connection, name in room_changes:
                room.presence.set(mailbox_id, connection, name)
            room.active_at = now
            if room.presence.connections_of(mailbox_id):
                room.mailboxes.add(mailbox_id)
                mailbox.rooms.add(room.name)
            else:
                room.mailboxes.discard(mailbox_id)
                mailbox.rooms.discard(room.name)
            self._presence_changed(room)

    def _broadcast(self, room: _Room, frames: list[str]) -> None:
        now = self._monotonic()
        overflowing = []
        for mailbox_id in room.mailboxes:
            mailbox = self._mailboxes[mailbox_id]
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
        now = self._monotonic()
        for mailbox_id in mailbox_ids:
            mailbox = self._mailboxes.pop(mailbox_id, None)
            if mailbox is None:
                continue
            self._expired += expired
            self._removed.add(mailbox_id)
            for name in mailbox.rooms:
                room = self._rooms[name]
                room.presence.drop_worker(mailbox_id)
                room.mailboxes.discard(mailbox_id)
                room.active_at = now
                self._presence_changed(room)

    def _presence_changed(self, room: _Room) -> None:
        """Send the room's presence frame if one is due, else hold it back for ``housekeep``."""
        book = room.presence
        if not book.dirty:
            return
        now = self._monotonic()
        due = room.last_presence_at + self._presence_interval_for(book.online)
        if now >= due:
            room.last_presence_at = now
            self._broadcast(room, [book.publish()])
        else:
            self._presence_held.add(room.name)
            if self._housekeeping_due is None or due < self._housekeeping_due:
                self._housekeeping_due = due

    def _presence_interval_for(self, online: int) -> float:
        by_size = min(online / self._presence_deliveries, MAX_PRESENCE_INTERVAL_SECONDS)
        return max(self._presence_interval, by_size)
