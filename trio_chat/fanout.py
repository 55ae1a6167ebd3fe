"""In-process fan-out: one worker's subscribers (connections), each with its own bounded
memory channel, each in some of the chat's rooms.

The hub bridge calls ``Fanout.broadcast`` with a batch of frames in hub order; every frame
belongs to one room (``protocol.frame_room``) or to none (a ``messages_missed`` notice, for
everyone). The fan-out puts in each subscriber's channel the frames of the rooms it is in,
without ever awaiting, so one slow client can never delay the others. In the common case, a
batch of one room, that very batch (shared, never copied) goes to every member of the room;
only a subscriber in several of a mixed batch's rooms gets a list of its own. Frames of a room
no subscriber is in are dropped here (the Redis hub sends a worker every room's frames). Each
session's writer task drains its own channel at its client's pace.

A subscriber's room changes are items of its channel too (``enter`` queues a ``PendingJoin``
and ``leave`` a ``left`` frame, in the same step as the membership changes), so its writer
sees exactly the frames of a room between the two, in hub order.

Slow-consumer policy: a subscriber may have at most ``buffer_size`` frames waiting. One that
would go past it when a batch arrives is evicted on the spot: it leaves the fan-out, its
channel is closed, its ``close_code`` becomes 1013 ("try again later") and its ``on_evict``
callback runs with that code (the session then closes the connection with it). Memory per
subscriber is therefore bounded, and nobody else waits. ``evict_all`` does the same to
everyone at shutdown, with the code it is given (1001 when the server stops, 1012 when it
restarts).

Delivery lag (``lag``, a histogram of the worker's figures) is observed once per batch, never
per recipient: a batch with a chat message in it is queued as a ``TimedBatch``, which knows the
hub's time (``ts``) of its newest message and how many subscribers still hold it. Each one's
``taken`` (its writer has sent it, or it was dropped with an evicted or departed subscriber)
counts down, and the last one observes the wall clock now minus that time (at least 0: the
hub's time may come from another host's clock, a little ahead of ours). Batches of presence
frames alone, and batches queued for nobody, are not observed.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import trio

from .hub_link import Snapshot
from .metrics.figures import DELIVERY_LAG_BUCKETS, Histogram
from .protocol import CloseCode, frame_room, left_frame, message_time_ms


@dataclasses.dataclass(frozen=True)
class FanoutStatistics:
    subscribers: int
    #: Rooms with at least one subscriber of this worker.
    rooms: int
    #: Subscribers dropped so far because their buffer was full.
    dropped_slow: int


class PendingJoin:
    """A subscriber's join of a room, in its channel where the room's frames start.

    The session asks the hub for the room's snapshot meanwhile and settles it (``settle``); the
    writer, reaching it, waits for that, sends ``frames`` (the history and presence, or why the
    join failed), then the room's live frames after it that the snapshot does not cover.
    """

    __slots__ = ("done", "frames", "joined", "room", "snapshot")

    def __init__(self, room: str) -> None:
        self.room = room
        self.done = trio.Event()
        self.frames: list[str] = []
        #: ``None``: no snapshot (the hub could not be reached): live frames go out as they come.
        self.snapshot: Snapshot | None = None
        #: False once the join failed: the subscriber is not in the room, and the room's frames
        #: queued after the join (before it was undone) are not for it.
        self.joined = True

    def settle(self, frames: list[str], snapshot: Snapshot | None) -> None:
        self.frames, self.snapshot = frames, snapshot
        self.done.set()

    def fail(self, frames: list[str]) -> None:
        self.frames, self.joined = frames, False
        self.done.set()


class BatchTiming:
    """When the newest message of a batch was stamped by the hub, and how many subscribers'
    queues still hold (part of) the batch: the last to let go observes the delivery lag."""

    __slots__ = ("_clock", "_lag", "holders", "hub_seconds")

    def __init__(self, hub_seconds: float, lag: Histogram, clock: Callable[[], float]) -> None:
        self.hub_seconds = hub_seconds
        self._lag = lag
        self._clock = clock
        self.holders = 0

    def observe(self) -> None:
        """The last holder has let go (``Subscriber.taken`` counts ``holders`` down)."""
        # Clamped: with the Redis hub the hub's time is another host's clock, which may be a
        # little ahead of this one's; a lag is never negative.
        self._lag.observe(max(0.0, self._clock() - self.hub_seconds))


class TimedBatch(list[str]):
    """Frames queued for subscribers, with the timing of the batch they belong to."""

    __slots__ = ("timing",)

    def __init__(self, frames: Iterable[str], timing: BatchTiming) -> None:
        super().__init__(frames)
        self.timing = timing


#: What a subscriber's channel carries: batches of frames, and joins.
Queued = Sequence[str] | PendingJoin


class Subscriber:
    """One client's place in the room: the channel its writer task reads from."""

    __slots__ = (
        "_buffer_size",
        "_lingering",
        "_send_channel",
        "close_code",
        "id",
        "on_evict",
        "receive_channel",
        "rooms",
        "waiting",
    )

    def __init__(self, subscriber_id: int, buffer_size: int, on_evict: Callable[[CloseCode], None]):
        self.id = subscriber_id
        self._buffer_size = buffer_size
        # Every batch holds at least one frame, so the frame count is the tighter bound.
        self._send_channel, self.receive_channel = trio.open_memory_channel[Queued](buffer_size)
        self.on_evict = on_evict
        #: The rooms it is in, in the order it joined them (the first is where messages
        #: without a room go); kept when it is evicted, so that its session can leave them.
        self.rooms: dict[str, None] = {}
        #: Frames queued and not yet taken by the writer (``taken``).
        self.waiting = 0
        #: Set once the room evicts this subscriber: the code to close its connection with.
        self.close_code: CloseCode | None = None
        self._lingering: trio.CancelScope | None = None

    def offer(self, item: Queued) -> bool:
        """Queue a batch (or a join) without waiting; False if it would not fit (or the channel
        is closed)."""
        size = queued_frames(item)
        if self.waiting + size > self._buffer_size:
            return False
        try:
            self._send_channel.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self.waiting += size
        if self._lingering is not None and self.waiting >= self._buffer_size // 2:
            self._lingering.cancel()
        return True

    async def linger(self, deadline: float) -> None:
        """Wait until ``deadline`` so that more frames arrive, but no longer than until half of
        the buffer is waiting: a writer that sends everything waiting at once (batch mode)
        sends fewer frames this way, and never comes near eviction by lingering."""
        if self.waiting >= self._buffer_size // 2:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_at(deadline) as scope:
            self._lingering = scope  # ``offer`` cancels it once half the buffer is waiting.
            try:
                await trio.sleep_forever()
            finally:
                self._lingering = None

    def discard_waiting(self) -> None:
        """Drop what is queued: an evicted client's writer may stay stuck in a send for long
        (Hypercorn's cannot be cancelled), and its queue must not hold memory meanwhile."""
        while True:
            try:
                self.taken(self.receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    def taken(self, item: Queued) -> None:
        """The writer has sent ``item`` (or it is dropped): its frames no longer count as
        waiting."""
        # The hot path (once per batch per subscriber): no call for a batch of messages.
        if type(item) is TimedBatch:
            self.waiting -= len(item)
            timing = item.timing
            timing.holders -= 1
            if not timing.holders:
                timing.observe()
        else:
            self.waiting -= queued_frames(item)

    def close(self) -> None:
        self._send_channel.close()


def queued_frames(item: Queued) -> int:
    """How many frames an item of a subscriber's channel counts for (a join: one)."""
    return 1 if isinstance(item, PendingJoin) else len(item)


class Fanout:
    def __init__(
        self,
        buffer_size: int,
        *,
        lag: Histogram | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._buffer_size = buffer_size
        #: Where delivery lags are observed (the worker's figures), on ``wall_clock`` (seconds).
        self.lag = Histogram(DELIVERY_LAG_BUCKETS) if lag is None else lag
        self._wall_clock = wall_clock
        self._subscribers: dict[int, Subscriber] = {}
        #: Each room's subscribers.
        self._members: dict[str, dict[int, Subscriber]] = {}
        self._ids = itertools.count(1)
        self._dropped_slow = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def statistics(self) -> FanoutStatistics:
        return FanoutStatistics(
            subscribers=len(self._subscribers),
            rooms=len(self._members),
            dropped_slow=self._dropped_slow,
        )

    @contextmanager
    def subscribe(self, on_evict: Callable[[CloseCode], None]) -> Iterator[Subscriber]:
        """Subscribe for the duration of the ``with`` block; leaving is guaranteed."""
        subscriber = Subscriber(next(self._ids), self._buffer_size, on_evict)
        self._subscribers[subscriber.id] = subscriber
        try:
            yield subscriber
        finally:
            self._drop(subscriber)
            subscriber.close()
            subscriber.discard_waiting()  # Batches it held are let go (delivery lag).
            subscriber.receive_channel.close()

    def enter(self, subscriber: Subscriber, room: str) -> PendingJoin:
        """``subscriber`` is in ``room`` from now on: its frames from here on are queued after
        the ``PendingJoin`` returned (which the caller settles)."""
        pending = PendingJoin(room)
        if self._queue(subscriber, pending):
            subscriber.rooms[room] = None
            self._members.setdefault(room, {})[subscriber.id] = subscriber
        return pending

    def leave(self, subscriber: Subscriber, room: str, *, announce: bool = True) -> None:
        """``subscriber`` leaves ``room``: a ``left`` frame follows its last frame of it
        (unless ``announce`` is false: a join that failed says so itself)."""
        subscriber.rooms.pop(room, None)
        self._forget_member(subscriber, room)
        if announce:
            self._queue(subscriber, (left_frame(room),))

    def broadcast(self, frames: Sequence[str]) -> None:
        """Queue ``frames``, in order, for the subscribers of their rooms; drop those that
        cannot keep up.

        ``frames`` may be shared by subscribers' queues: it must not change afterwards.
        """
        rooms = [frame_room(frame) for frame in frames]
        first = rooms[0] if rooms else None
        if rooms.count(first) == len(rooms):  # The common case: one room (or notices only).
            members = self._subscribers if first is None else self._members.get(first, {})
            # A room with no member here (the Redis hub sends every room) costs no timing.
            timing = self._timing(frames) if members else None
            if timing is not None:
                frames = TimedBatch(frames, timing)
            slow = [s for s in members.values() if not s.offer(frames)]
            if timing is not None:
                timing.holders = len(members) - len(slow)
        else:
            slow = self._broadcast_mixed(frames, rooms, self._timing(frames))
        for subscriber in slow:
            self.evict(subscriber, CloseCode.TRY_AGAIN_LATER)

    def send_to(self, subscriber: Subscriber, frame: str) -> None:
        """Queue a frame for one subscriber (e.g. an error frame); same policy when full."""
        self._queue(subscriber, (frame,))

    def evict_all(self, code: CloseCode) -> None:
        for subscriber in list(self._subscribers.values()):
            self.evict(subscriber, code)

    def evict(self, subscriber: Subscriber, code: CloseCode) -> None:
        if subscriber.id not in self._subscribers:
            return
        self._drop(subscriber)
        if code == CloseCode.TRY_AGAIN_LATER:
            self._dropped_slow += 1
        subscriber.close_code = code
        subscriber.close()
        subscriber.discard_waiting()
        subscriber.on_evict(code)

    def _queue(self, subscriber: Subscriber, item: Queued) -> bool:
        if subscriber.id not in self._subscribers:
            return False
        if not subscriber.offer(item):
            self.evict(subscriber, CloseCode.TRY_AGAIN_LATER)
            return False
        return True

    def _timing(self, frames: Sequence[str]) -> BatchTiming | None:
        """The timing of a batch with a chat message in it (its newest: the last); None for
        a batch without one."""
        for frame in reversed(frames):
            hub_ms = message_time_ms(frame)
            if hub_ms is not None:
                return BatchTiming(hub_ms / 1000, self.lag, self._wall_clock)
        return None

    def _broadcast_mixed(
        self, frames: Sequence[str], rooms: list[str | None], timing: BatchTiming | None
    ) -> list[Subscriber]:
        """A batch of several rooms: each room's frames (with the notices among them) are
        shared by its members; a subscriber in several of the rooms gets a list of its own."""
        for_everyone = None in rooms

        def new_batch() -> list[str]:
            return [] if timing is None else TimedBatch((), timing)

        by_room: dict[str, list[str]] = {
            r: new_batch() for r in rooms if r is not None and r in self._members
        }
        for frame, room in zip(frames, rooms, strict=True):
            if room is None:
                for batch in by_room.values():
                    batch.append(frame)
            elif room in by_room:
                by_room[room].append(frame)
        if for_everyone:
            recipients: Iterable[Subscriber] = self._subscribers.values()
        else:
            recipients = {s.id: s for r in by_room for s in self._members[r].values()}.values()
        slow = []
        holders = 0
        for subscriber in recipients:
            present = [room for room in subscriber.rooms if room in by_room]
            if len(present) == 1:
                batch = by_room[present[0]]
            else:
                batch = new_batch()
                batch.extend(
                    f for f, r in zip(frames, rooms, strict=True) if r is None or r in present
                )
            if batch:
                if subscriber.offer(batch):
                    holders += 1
                else:
                    slow.append(subscriber)
        if timing is not None:
            timing.holders = holders
        return slow

    def _drop(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(subscriber.id, None)
        for room in subscriber.rooms:
            self._forget_member(subscriber, room)

    def _forget_member(self, subscriber: Subscriber, room: str) -> None:
        members = self._members.get(room)
        if members is not None:
            members.pop(subscriber.id, None)
            if not members:
                del self._members[room]
