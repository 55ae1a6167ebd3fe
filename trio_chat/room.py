"""In-process fan-out: one worker's subscribers, each with its own bounded memory channel.

The hub bridge calls ``Room.broadcast`` with a batch of frames in hub order; the room puts that
very batch (shared, never copied) in every subscriber's channel without ever awaiting, so one
slow client can never delay the others. Each session's writer task drains its own channel at
its client's pace.

Slow-consumer policy: a subscriber may have at most ``buffer_size`` frames waiting. One that
would go past it when a batch arrives is evicted on the spot: it leaves the room, its channel
is closed, its ``close_code`` becomes 1013 ("try again later") and its ``on_evict`` callback
runs with that code (the session then closes the connection with it). Memory per subscriber
is therefore bounded, and nobody else waits. ``evict_all`` does the same to everyone at
shutdown, with 1001.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import trio

from .protocol import CloseCode


@dataclasses.dataclass(frozen=True)
class RoomStatistics:
    subscribers: int
    #: Subscribers dropped so far because their buffer was full.
    dropped_slow: int


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
        "waiting",
    )

    def __init__(self, subscriber_id: int, buffer_size: int, on_evict: Callable[[CloseCode], None]):
        self.id = subscriber_id
        self._buffer_size = buffer_size
        # Every batch holds at least one frame, so the frame count is the tighter bound.
        self._send_channel, self.receive_channel = trio.open_memory_channel[Sequence[str]](
            buffer_size
        )
        self.on_evict = on_evict
        #: Frames queued and not yet taken by the writer (``taken``).
        self.waiting = 0
        #: Set once the room evicts this subscriber: the code to close its connection with.
        self.close_code: CloseCode | None = None
        self._lingering: trio.CancelScope | None = None

    def offer(self, frames: Sequence[str]) -> bool:
        """Queue a batch without waiting; False if it would not fit (or the channel is closed)."""
        if self.waiting + len(frames) > self._buffer_size:
            return False
        try:
            self._send_channel.send_nowait(frames)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self.waiting += len(frames)
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

    def taken(self, batch: Sequence[str]) -> None:
        """The writer has sent ``batch``: its frames no longer count as waiting."""
        self.waiting -= len(batch)

    def close(self) -> None:
        self._send_channel.close()


class Room:
    def __init__(self, buffer_size: int) -> None:
        self._buffer_size = buffer_size
        self._subscribers: dict[int, Subscriber] = {}
        self._ids = itertools.count(1)
        self._dropped_slow = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(subscribers=len(self._subscribers), dropped_slow=self._dropped_slow)

    @contextmanager
    def subscribe(self, on_evict: Callable[[CloseCode], None]) -> Iterator[Subscriber]:
        """Join the room for the duration of the ``with`` block; leaving is guaranteed."""
        subscriber = Subscriber(next(self._ids), self._buffer_size, on_evict)
        self._subscribers[subscriber.id] = subscriber
        try:
            yield subscriber
        finally:
            self._subscribers.pop(subscriber.id, None)
            subscriber.close()
            subscriber.receive_channel.close()

    def broadcast(self, frames: Sequence[str]) -> None:
        """Queue ``frames``, in order, for every subscriber; drop those that cannot keep up.

        ``frames`` is shared by every subscriber's queue: it must not change afterwards.
        """
        slow = [s for s in self._subscribers.values() if not s.offer(frames)]
        for subscriber in slow:
            self.evict(subscriber, CloseCode.TRY_AGAIN_LATER)

    def send_to(self, subscriber: Subscriber, frame: str) -> None:
        """Queue a frame for one subscriber (e.g. an error frame); same policy when full."""
        if subscriber.id in self._subscribers and not subscriber.offer((frame,)):
            self.evict(subscriber, CloseCode.TRY_AGAIN_LATER)

    def evict_all(self, code: CloseCode) -> None:
        for subscriber in list(self._subscribers.values()):
            self.evict(subscriber, code)

    def evict(self, subscriber: Subscriber, code: CloseCode) -> None:
        if self._subscribers.pop(subscriber.id, None) is None:
            return
        if code == CloseCode.TRY_AGAIN_LATER:
            self._dropped_slow += 1
        subscriber.close_code = code
        subscriber.close()
        subscriber.discard_waiting()
        subscriber.on_evict(code)
