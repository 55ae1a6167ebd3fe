"""The outbox: bodies that a worker's sessions want published, waiting for the publisher.

It is bounded (``Settings.outbox_size``): when it is full, a sender waits, so a client whose
messages cannot go out as fast as it sends them is read no faster. The publisher is woken
through it too (``Wake``); a wake-up that finds it full is dropped: the publisher is busy then,
and sees the change anyway.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable

import trio

logger = logging.getLogger("trio_chat.hub")


class Pending:
    """A body waiting to be published, and who to tell if it is not: a pipelining sender's
    ``on_failure``, or a waiting one's ``done`` event."""

    __slots__ = ("body", "done", "on_failure", "published")

    def __init__(
        self,
        body: str,
        on_failure: Callable[[], None] | None = None,
        done: trio.Event | None = None,
    ) -> None:
        self.body = body
        self.on_failure = on_failure
        self.done = done
        self.published = False

    def settle(self) -> None:
        if self.done is not None:
            self.done.set()
        if not self.published and self.on_failure is not None:
            try:
                self.on_failure()
            except Exception:
                # A bug in the sender's callback must not stop the publisher.
                logger.exception("event=publish_failure_report_error")


class Wake(enum.Enum):
    """Why a waiting publisher is woken."""

    #: Presence changed: it goes in the next round trip.
    PRESENCE = "presence"
    #: The next update falls due at another time: wait until then instead.
    DUE_TIME = "due time"


class Outbox:
    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Pending | Wake](size)
        #: Taken by the publisher, not yet sent.
        self._taken: list[Pending] = []

    async def put(self, pending: Pending) -> None:
        await self._send.send(pending)

    def wake(self, why: Wake) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(why)

    async def wait(self, due: Callable[[], float]) -> None:
        """Until a body comes, or a presence change, or the time ``due()`` (which may change,
        with a ``Wake.DUE_TIME``)."""
        while True:
            with trio.move_on_at(due()) as timer:
                first = await self._receive.receive()
                if first is Wake.DUE_TIME:
                    continue
                if isinstance(first, Pending):
                    self._taken.append(first)
            if timer.cancelled_caught and due() > trio.current_time():
                continue  # The due time moved later meanwhile: no wake is sent for that.
            return

    def take(self, limit: float) -> list[Pending]:
        """What was taken, and what waits, up to ``limit`` bodies."""
        while len(self._taken) < limit:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                break
            if isinstance(item, Pending):
                self._taken.append(item)
        batch, self._taken = self._taken, []
        return batch
