"""What one worker process shares among its connections: settings, the room and the hub link.

Made at lifespan startup and handed to every connection through the ASGI lifespan ``state``
(Hypercorn copies it into each connection's scope), so that nothing is a module global and a
test can build as many workers as it likes in one process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence

import trio

from .config import Settings
from .guards import AddressCounter
from .hub_link import HubLink, HubUnavailable, Snapshot
from .protocol import CloseCode, Limits, NoticeCode, notice_frame
from .room import Room
from .static import StaticFiles, default_static_dir

STATE_KEY = "trio_chat.worker"


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: This worker's side of the hub, set once it has joined (``lifespan``).
        self.link: HubLink = _NotJoined()
        self.room = Room(settings.subscriber_buffer)
        #: Where the hub link hands the frames it fetches.
        self.listener = RoomListener(self.room)
        self.limits = Limits(
            max_sender_chars=settings.max_sender_chars,
            max_message_bytes=settings.max_message_bytes,
        )
        self.static = StaticFiles(settings.static_dir or default_static_dir())
        self.addresses = AddressCounter(settings.max_connections_per_address)
        self.pid = os.getpid()
        #: True once the worker is shutting down: no new sessions.
        self.closing = False
        #: Set when the worker's shutdown has begun; the lifespan's watchdog bounds it.
        self.shutting_down = trio.Event()
        #: Sessions running, evicted ones still closing included (``len(room)`` counts only
        #: those in the room).
        self.open_sessions = 0
        self._connection_ids = itertools.count(1)

    @property
    def connections(self) -> int:
        """Sessions in the room."""
        return len(self.room)

    def close_all_sessions(self) -> None:
        self.closing = True
        self.room.evict_all(CloseCode.GOING_AWAY)

    def next_connection_id(self) -> int:
        return next(self._connection_ids)


class RoomListener:
    """The worker's ``HubListener``: frames from the hub go straight to its room."""

    def __init__(self, room: Room) -> None:
        self._room = room

    def deliver(self, frames: Sequence[str]) -> None:
        self._room.broadcast(frames)

    def messages_missed(self, epoch: str) -> None:
        self._room.broadcast(
            [
                notice_frame(
                    NoticeCode.MESSAGES_MISSED,
                    "The server lost its link to the other workers for a moment: "
                    "messages sent meanwhile may be missing.",
                    epoch=epoch,
                )
            ]
        )


class _NotJoined:
    """The link of a worker that has not joined its hub (yet): everything is unavailable."""

    connected = False

    async def publish(self, body: str) -> None:
        raise HubUnavailable("this worker has not joined its hub")

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        raise HubUnavailable("this worker has not joined its hub")

    async def snapshot(
        self, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        raise HubUnavailable("this worker has not joined its hub")

    def present(self, connection: int, name: str) -> None:
        pass

    def absent(self, connection: int) -> None:
        pass
