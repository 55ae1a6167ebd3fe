"""Where the hub's blocking calls run: worker threads. The only place trio_chat enters them.

What may block: every backend call is a socket round trip to the hub (the manager process, or
Redis), and a fetch also waits up to a heartbeat for frames. A hub that hangs (stopped,
swapping, deadlocked) keeps its connections open, so a call may not fail but never return.

Cancellation: a caller that is cancelled never waits for its call. The thread is abandoned
(``abandon_on_cancel=True``): it goes on until the call returns, and its result is dropped.
Each caller says why that is harmless for it (``reader``, ``publisher``, ``membership``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from ..interface import HubUnavailable
from .backend import Backend

T = TypeVar("T")

#: Threads for hub calls: the reader's fetching thread holds one for as long as it runs, the
#: publisher one per round trip; the rest serve joining clients' snapshots, in parallel, and
#: joining and leaving.
HUB_THREADS = 8
#: A hub that hangs keeps its connections open, so no call fails: it just never answers.
#: Every call but ``fetch`` gives up after this long, its thread abandoned, and counts as a
#: broken link (``reader.HUB_SILENCE_SECONDS`` is the fetch's own limit).
HUB_CALL_TIMEOUT_SECONDS = 10.0


class HubThreads:
    """One worker's threads for hub calls, at most ``HUB_THREADS`` at once."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._limiter = trio.CapacityLimiter(HUB_THREADS)

    async def run_sync(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread, abandoned if the caller is cancelled."""
        return await trio.to_thread.run_sync(
            fn, *args, abandon_on_cancel=True, limiter=self._limiter
        )

    async def call(
        self, fn: Callable[..., T], *args: object, give_up_after: float = HUB_CALL_TIMEOUT_SECONDS
    ) -> T:
        """A hub call that gives up, abandoning its thread, when the hub does not answer:
        raises ``HubUnavailable`` then."""
        with trio.move_on_after(give_up_after):
            return await self.run_sync(fn, *args)
        raise HubUnavailable(
            f"the hub at {self._backend.describe()} did not answer within {give_up_after:g} s"
        )
