"""What one worker process shares among its connections: settings, the fan-out and the hub link.

Made at lifespan startup and handed to every connection through the ASGI lifespan ``state``
(Hypercorn copies it into each connection's scope), so that nothing is a module global and a
test can build as many workers as it likes in one process.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence

import trio

from .config import Settings
from .fanout import Fanout
from .guards import AddressCounter
from .hub_link import HubLink, HubUnavailable, RoomCount, Snapshot
from .hub_link.interface import Older
from .protocol import CloseCode, Limits, NoticeCode, notice_frame
from .static import StaticFiles, default_static_dir

STATE_KEY = "trio_chat.worker"
#: The busiest rooms are asked of the hub at most this often per worker: a page polling
#: ``GET /rooms`` or clients sending ``rooms`` frames cost the hub nothing more.
ROOMS_LIST_MAX_AGE_SECONDS = 1.0


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: This worker's side of the hub, set once it has joined (``lifespan``).
        self.link: HubLink = _NotJoined()
        self.fanout = Fanout(settings.subscriber_buffer)
        #: Where the hub link hands the frames it fetches.
        self.listener = FanoutListener(self.fanout)
        self.limits = Limits(
            max_sender_chars=settings.max_sender_chars,
            max_message_bytes=settings.max_message_bytes,
            max_rooms=settings.max_rooms_per_connection,
        )
        self.static = StaticFiles(settings.static_dir or default_static_dir())
        self.addresses = AddressCounter(settings.max_connections_per_address)
        self.pid = os.getpid()
        #: True once the worker is shutting down: no new sessions.
        self.closing = False
        #: Set when the worker's shutdown has begun; the lifespan's watchdog bounds it.
        self.shutting_down = trio.Event()
        #: Sessions running, evicted ones still closing included (``len(fanout)`` counts only
        #: those subscribed).
        self.open_sessions = 0
        self._connection_ids = itertools.count(1)
        self._rooms_list: list[RoomCount] = []
        self._rooms_listed_at = -math.inf
        self._rooms_lock = trio.Lock()

    @property
    def connections(self) -> int:
        """Sessions subscribed to the fan-out."""
        return len(self.fanout)

    def close_all_sessions(self, code: CloseCode = CloseCode.GOING_AWAY) -> None:
        """Close every session with ``code`` (1001 when the server stops, 1012 when it
        restarts), and take no new ones."""
        self.closing = True
        self.fanout.evict_all(code)

    def next_connection_id(self) -> int:
        return next(self._connection_ids)

    async def busiest_rooms(self) -> list[RoomCount]:
        """The hub's busiest rooms, at most ``ROOMS_LIST_MAX_AGE_SECONDS`` old; raises
        ``HubUnavailable``. One request at a time goes to the hub; the others wait for it."""
        async with self._rooms_lock:
            if trio.current_time() - self._rooms_listed_at >= ROOMS_LIST_MAX_AGE_SECONDS:
                self._rooms_list = await self.link.rooms()
                self._rooms_listed_at = trio.current_time()
            return self._rooms_list


class FanoutListener:
    """The worker's ``HubListener``: frames from the hub go straight to its fan-out."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout

    def deliver(self, frames: Sequence[str]) -> None:
        self._fanout.broadcast(frames)

    def messages_missed(self, epoch: str) -> None:
        self._fanout.broadcast(
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
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        raise HubUnavailable("this worker has not joined its hub")

    def present(self, connection: int, room: str, name: str) -> None:
        pass

    def absent(self, connection: int, room: str) -> None:
        pass

    async def rooms(self) -> list[RoomCount]:
        raise HubUnavailable("this worker has not joined its hub")

    async def older(self, room: str, before: int, limit: int) -> Older:
        raise HubUnavailable("this worker has not joined its hub")
