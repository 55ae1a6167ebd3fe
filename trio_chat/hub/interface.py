"""What a worker needs from a hub, whatever the backend.

A hub gives every published chat message a place in one total order (its ``id``) and hands the
stamped frames, in that order, to every worker that has joined. Backends: ``ManagerHub`` (a
multiprocessing manager process; the default) and ``LocalHub`` (in-process, one worker only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio


class HubUnavailable(Exception):
    """The hub cannot be reached now; the message was not published."""


class HubListener(Protocol):
    """The worker side of a hub link: where frames go once they arrive."""

    def deliver(self, frames: Sequence[str]) -> None:
        """Frames in hub order; must not block (it runs on the link's reader task)."""

    def messages_missed(self) -> None:
        """The link broke and came back: frames published meanwhile will never arrive."""


class Hub(Protocol):
    @property
    def connected(self) -> bool:
        """Whether the worker's link to the hub is up right now."""

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Join the hub and feed ``listener`` until cancelled; then leave.

        Calls ``task_status.started()`` once joined. Raises ``HubUnavailable`` if the first
        attempt to join fails (so that a worker with no hub does not start); later breaks are
        survived by reconnecting.
        """

    async def publish(self, body: str) -> None:
        """Publish an encoded chat body; returns once the hub has it in the total order.

        Raises ``HubUnavailable`` when the link is down.
        """
