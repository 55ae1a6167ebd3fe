"""What one worker process shares among its connections: settings, the fan-out, the hub link and
what the worker counts (``WorkerFigures``), and the whole server's figures from any worker.

Made at lifespan startup and handed to every connection through the ASGI lifespan ``state``
(Hypercorn copies it into each connection's scope), so that nothing is a module global and a
test can build as many workers as it likes in one process.
"""

from __future__ import annotations

import contextlib
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
from .metrics import exposition
from .metrics.figures import ServerFigures, WorkerFigures, WorkerReport
from .protocol import CloseCode, Limits, NoticeCode, notice_frame
from .static import StaticFiles, default_static_dir

STATE_KEY = "trio_chat.worker"
#: The busiest rooms are asked of the hub at most this often per worker: a page polling
#: ``GET /rooms`` or clients sending ``rooms`` frames cost the hub nothing more.
ROOMS_LIST_MAX_AGE_SECONDS = 1.0
#: The whole server's figures are asked of the hub for at most this long (a scrape must not
#: wait for a hub that hangs): then they cannot be had.
FIGURES_TIMEOUT_SECONDS = 2.0


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: This worker's side of the hub, set once it has joined (``lifespan``).
        self.link: HubLink = _NotJoined()
        #: What this worker counts; the whole server's figures add up every worker's.
        self.figures = WorkerFigures()
        self.fanout = Fanout(settings.subscriber_buffer, lag=self.figures.delivery_lag)
        #: Where the hub link hands the frames it fetches, and gets the worker's figures.
        self.listener = FanoutListener(self)
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
        # ``server_figures``: exchanges with the hub started so far, and the last one's number
        # and outcome (None: the hub could not be reached), one exchange at a time.
        self._exchanges_started = 0
        self._last_exchange: tuple[int, ServerFigures | None] = (0, None)
        self._figures_lock = trio.Lock()
        # ``render_metrics``: one rendering at a time, and the last one, by the figures it was
        # made from.
        self._render_limiter = trio.CapacityLimiter(1)
        self._rendered: tuple[ServerFigures, bytes] | None = None

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

    def report(self) -> WorkerReport:
        """This worker's figures as of now."""
        return self.figures.report(self.pid, self.connections, self.link.connected)

    async def server_figures(self) -> ServerFigures:
        """The whole server's figures: this worker sends the hub its fresh report and gets
        every worker's back, in one round trip.

        Raises ``HubUnavailable`` when the hub cannot be reached in time: the other workers'
        figures cannot be had then, and this worker's fresh counts added to older figures of
        theirs could make a counter go backwards from one scrape to the next.

        Scrapes that come while an exchange is under way share the next one: one exchange at
        a time, however many scrapes, and each answer comes from an exchange that began after
        its scrape arrived. As the hub keeps every worker's newest report, two answers in a
        row, from any workers, never go backwards.
        """
        arrived_after = self._exchanges_started
        async with self._figures_lock:
            number, figures = self._last_exchange
            if number <= arrived_after:  # Nothing begun since this scrape came: ask.
                self._exchanges_started += 1
                number, figures = self._exchanges_started, None
                with (
                    trio.move_on_after(FIGURES_TIMEOUT_SECONDS),
                    contextlib.suppress(HubUnavailable),
                ):
                    figures = await self.link.exchange_figures(self.report())
                self._last_exchange = (number, figures)
        if figures is None:
            raise HubUnavailable("the hub did not answer for the whole server's figures")
        return figures

    async def render_metrics(self, figures: ServerFigures) -> bytes:
        """``figures`` and the server's process metrics in the Prometheus text format.

        Rendered in a thread, the one use of ``trio.to_thread`` outside the hub bridge:
        reading every process's ``/proc`` counts its file descriptors, and a worker with
        10,000 connections has as many, which takes milliseconds per process (measured: 16 ms
        for 20,000), too long for the Trio thread that serves the clients. Scrapes that share
        an exchange (``server_figures``) share its rendering too. Not abandoned on
        cancellation: a cancelled scrape waits the few milliseconds the rendering has left.
        """
        async with self._render_limiter:
            if self._rendered is None or self._rendered[0] is not figures:
                body = await trio.to_thread.run_sync(exposition.render, figures)
                self._rendered = (figures, body)
            return self._rendered[1]


class FanoutListener:
    """The worker's ``HubListener``: frames from the hub go straight to its fan-out; the link
    counts in the worker's figures and reports them."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._fanout = worker.fanout
        self.figures = worker.figures

    def report(self) -> WorkerReport:
        return self._worker.report()

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

    async def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        raise HubUnavailable("this worker has not joined its hub")
