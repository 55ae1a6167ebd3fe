"""An in-process hub: the hub's state (``HubState``) in the same Trio run, no process, no thread.

Several workers may join one ``LocalHub`` (tests do, to show cross-worker order); frames are
handed to every worker's listener synchronously after each change. With one worker it also
serves deployments that need no hub process (``TRIO_CHAT_HUB=local``, ``hypercorn -w 1``).

Nothing ever waits on the state here, so what its calls say to wake is not needed: every
mailbox is emptied after every change. Nor is housekeeping: a worker leaves when its ``run``
ends, and presence frames are never held back (no presence interval).

The whole server's figures are a ``MetricsBoard`` here, on Trio's clock. It keys workers by pid,
as every hub does: workers that share a ``LocalHub`` in one process (tests) must report pids of
their own to be told apart. A worker's first report goes in as it joins, before it has served
anyone: the board's baseline of it. Its workers are in its process, so never dead while it
runs: one that stops reporting (a test's ``connected`` False) lapses, ``hub_up`` False.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

import trio

from ..hub.core import new_epoch, wall_clock_ms
from ..hub.state import DEFAULT_MAX_ROOMS, HubState
from ..metrics.board import MetricsBoard
from ..metrics.figures import ServerFigures, WorkerFigures, WorkerReport
from .interface import (
    REPORT_INTERVAL_SECONDS,
    HubLink,
    HubListener,
    HubUnavailable,
    Older,
    RoomCount,
    Snapshot,
)

# Frames are delivered synchronously after every change, so mailboxes never fill.
_UNBOUNDED = 1 << 30


class LocalHub:
    def __init__(
        self,
        history_size: int = 100,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        max_rooms: int = DEFAULT_MAX_ROOMS,
    ):
        #: The hub's state (tests publish through it, then call ``deliver_all``). With no
        #: housekeeping, its monotonic clock only keeps the books (and empty rooms are only
        #: forgotten to make way for new ones).
        self.state = HubState(
            mailbox_size=_UNBOUNDED,
            history_size=history_size,
            max_rooms=max_rooms,
            epoch=new_epoch(),
            monotonic=time.monotonic,
            clock_ms=clock_ms,
        )
        self._listeners: dict[str, HubListener] = {}
        self._labels = itertools.count(1)
        #: Tests set this to False to play a hub that cannot be reached.
        self.connected = True
        self.board = MetricsBoard()

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        mailbox_id, _ = self.state.join(f"local-{next(self._labels)}")
        self._listeners[mailbox_id] = listener
        try:
            self.deliver_all()
            if self.connected:
                # The board's baseline of it; joined, whatever the worker's link says yet.
                self.exchange_figures(dataclasses.replace(listener.report(), hub_up=True))
            task_status.started(_LocalLink(self, mailbox_id, listener.figures))
            while True:
                await trio.sleep(REPORT_INTERVAL_SECONDS)
                if self.connected:
                    self.exchange_figures(listener.report())
        finally:
            del self._listeners[mailbox_id]
            self.state.leave(mailbox_id)
            self.deliver_all()
            self.final_figures(listener.report())

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        return self.board.report(report, trio.current_time(), rooms=self.state.occupied_rooms())

    def final_figures(self, report: WorkerReport) -> None:
        """A worker's last report: it leaves the server (``MetricsBoard.leave``)."""
        self.board.leave(report.pid, report, trio.current_time())

    async def publish(self, body: str) -> None:
        """Publish from outside any worker, as a tool would (tests use it)."""
        await trio.lowlevel.checkpoint()
        self.state.publish([body])
        self.deliver_all()

    def deliver_all(self) -> None:
        for mailbox_id, listener in list(self._listeners.items()):
            frames = self.state.take(mailbox_id, _UNBOUNDED)
            if frames:
                listener.deliver(frames)


class _LocalLink:
    def __init__(self, hub: LocalHub, mailbox_id: str, figures: WorkerFigures) -> None:
        self._hub = hub
        self._mailbox_id = mailbox_id
        self._figures = figures

    @property
    def connected(self) -> bool:
        return self._hub.connected

    async def publish(self, body: str) -> None:
        await trio.lowlevel.checkpoint()
        self._check_connected()
        before = self._hub.state.last_id
        last_id, _ = self._hub.state.update(self._mailbox_id, [body])
        # What the hub took in the order: a body it drops as bad is not published.
        self._figures.messages_published += last_id - before
        self._hub.deliver_all()

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        await self.publish(body)  # In process: published by the time it returns, or not at all.

    async def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        await trio.lowlevel.checkpoint()
        self._check_connected()
        snapshot, _ = self._hub.state.snapshot(
            room, since, epoch, self._mailbox_id, {connection: name}
        )
        self._hub.deliver_all()
        return snapshot

    def present(self, connection: int, room: str, name: str) -> None:
        self._change_presence(connection, room, name)

    def absent(self, connection: int, room: str) -> None:
        self._change_presence(connection, room, None)

    async def rooms(self) -> list[RoomCount]:
        await trio.lowlevel.checkpoint()
        self._check_connected()
        return self._hub.state.rooms()

    async def older(self, room: str, before: int, limit: int) -> Older:
        await trio.lowlevel.checkpoint()
        self._check_connected()
        return self._hub.state.older(room, before, limit)

    async def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        await trio.lowlevel.checkpoint()
        self._check_connected()
        return self._hub.exchange_figures(report)

    def _change_presence(self, connection: int, room: str, name: str | None) -> None:
        self._hub.state.update(self._mailbox_id, presence={(connection, room): name})
        self._hub.deliver_all()

    def _check_connected(self) -> None:
        if not self._hub.connected:
            raise HubUnavailable("the hub is unreachable right now")
