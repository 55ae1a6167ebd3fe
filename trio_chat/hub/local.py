"""An in-process hub: the total order for listeners in one Trio run, with no process or thread.

Used by tests as the stand-in for a real backend (several "workers" can share one), and by
single-process deployments (``TRIO_CHAT_HUB=local``, e.g. ``hypercorn -w 1``) that need no hub
process at all. It keeps the contract of ``Hub``: one order, every listener, never blocking.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .core import Sequencer, wall_clock_ms
from .interface import HubListener, HubUnavailable


class LocalHub:
    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._sequencer = Sequencer(clock_ms)
        self._listeners: list[HubListener] = []
        self.connected = True

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._listeners.append(listener)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._listeners.remove(listener)

    async def publish(self, body: str) -> None:
        await trio.lowlevel.checkpoint()
        if not self.connected:
            raise HubUnavailable("the hub is unreachable right now")
        frames = self._sequencer.stamp([body])
        for listener in self._listeners:
            listener.deliver(frames)
