"""What a worker needs from a hub, whatever the backend.

A hub gives every published chat message a place in one total order (its ``id``, one sequence
for all rooms), keeps each room's recent history and who is online in it, and hands the stamped
frames, in that order, to the workers that have joined: every frame of a room to every worker
with a member in it (the manager and in-process hubs route by this interest; with Redis every
worker reads everything and its fan-out drops what no member of its wants). Joining
(``Hub.run``) gives the worker a ``HubLink``, its side of the hub. Backends: ``ManagerHub`` (a
multiprocessing manager process; the default), ``RedisHub`` (several hosts) and ``LocalHub``
(in-process: one worker in production, several in tests).

Every backend also adds up the workers' figures for the whole server (``trio_chat.metrics``):
a joined worker's link sends the hub its report (``HubListener.report``) every
``REPORT_INTERVAL_SECONDS`` and a final one when it leaves, and ``HubLink.exchange_figures``
sends a fresh one and gets the whole server's figures back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trio

    from ..metrics.figures import ServerFigures, WorkerFigures, WorkerReport

__all__ = [
    "FETCH_HEARTBEAT_SECONDS",
    "LEASE_SECONDS",
    "MAX_LISTED_ROOMS",
    "MAX_LISTED_USERS",
    "MAX_OLDER_MESSAGES",
    "REPORT_INTERVAL_SECONDS",
    "Hub",
    "HubLink",
    "HubListener",
    "HubUnavailable",
    "Member",
    "Older",
    "RoomCount",
    "Snapshot",
]

#: The longest a hub's fetch waits before returning empty: the worker's heartbeat.
FETCH_HEARTBEAT_SECONDS = 5.0
#: A worker not heard from for this long has died without leaving: its users leave presence.
LEASE_SECONDS = 3 * FETCH_HEARTBEAT_SECONDS
#: A joined worker sends the hub its figures this often (and a final report when it leaves).
REPORT_INTERVAL_SECONDS = 1.0
#: Names listed in a presence frame at most; past this the frame says it is truncated.
MAX_LISTED_USERS = 1000
#: Rooms listed (busiest first) in a ``rooms`` frame and by ``GET /rooms`` at most.
MAX_LISTED_ROOMS = 100

#: Messages one ``older`` request (scrollback) returns at most.
MAX_OLDER_MESSAGES = 100

#: One connection's place in one room, as presence counts it: (connection id, room).
Member = tuple[int, str]
#: A room and how many connections are in it.
RoomCount = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a client joining a room is sent before live frames, and where live frames take
    over."""

    room: str
    #: The room's message frames after ``since`` (or its whole history), oldest first.
    messages: list[str]
    #: The highest id given so far: live messages with an id up to this one are in the past.
    last_id: int
    #: Every message of the room with an id from this one on is still kept (ids are shared by
    #: all rooms, so the room's own ids skip: this is one past the newest it dropped).
    first_available: int
    #: The presence frame as of now, and its version: older presence frames are in the past.
    presence: str
    presence_version: int
    #: Which run of ids this hub's are (it changes when a new server starts from scratch).
    epoch: str = ""
    #: False when ``since`` was ahead of ``last_id`` or from another epoch (the messages are
    #: then the whole history).
    since_valid: bool = True
    #: The room did not exist and the hub holds its limit of rooms: the client is not in it,
    #: and the rest of the snapshot is empty.
    refused: bool = False
    #: Nothing of the room older than the first of ``messages`` (with none: nothing at all) is
    #: kept: there is nothing to scroll back to. False when the hub cannot tell.
    complete: bool = False


@dataclasses.dataclass(frozen=True)
class Older:
    """A page of a room's scrollback: messages older than those a client has."""

    room: str
    #: The room's newest message frames before the id asked for, oldest first.
    messages: list[str]
    #: Nothing of the room older than the first of ``messages`` (or than the id asked for,
    #: when there are none) is kept.
    complete: bool


class HubUnavailable(Exception):
    """The hub cannot be reached now; nothing was published."""


class HubListener(Protocol):
    """The worker side of a hub link: where frames go once they arrive."""

    def deliver(self, frames: Sequence[str]) -> None:
        """Frames in hub order; must not block (it runs on the link's reader task)."""

    def messages_missed(self, epoch: str) -> None:
        """The link broke and came back: frames published meanwhile will never arrive.

        ``epoch``: the run of ids the frames from here on belong to (a new hub starts a new
        one, whose ids may repeat ones the clients saw).
        """

    @property
    def figures(self) -> WorkerFigures:
        """Where the link counts what it does: messages published, re-joins, round trips."""

    def report(self) -> WorkerReport:
        """The worker's figures as of now, for the hub; must not block."""


class HubLink(Protocol):
    """One worker's membership of the hub."""

    @property
    def connected(self) -> bool:
        """Whether the link is up right now."""

    async def publish(self, body: str) -> None:
        """Publish an encoded chat body (its room is in it: ``protocol.encode_chat_body``);
        returns once the hub has it in the total order.

        Raises ``HubUnavailable`` when the link is down.
        """

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        """Publish an encoded chat body, after those this worker submitted before, without
        waiting for it to be in the total order (only while the worker's outbox is full): a
        client's messages are pipelined.

        Raises ``HubUnavailable`` when the link is down now; if the body cannot be published
        later on, ``on_failure`` is called (from the link's task: it must not block).
        """

    async def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        """A client joins ``room``: it is in the room's presence under ``name`` ("" for none)
        from now on, and gets the room's history and presence (itself included), unless the
        snapshot says ``refused``; raises ``HubUnavailable``."""

    def present(self, connection: int, room: str, name: str) -> None:
        """This worker's connection is in ``room`` under ``name`` ("" for no name); never
        blocks."""

    def absent(self, connection: int, room: str) -> None:
        """This worker's connection has left ``room`` (or is gone); never blocks."""

    async def rooms(self) -> list[RoomCount]:
        """The busiest rooms, at most ``MAX_LISTED_ROOMS``; raises ``HubUnavailable``."""

    async def older(self, room: str, before: int, limit: int) -> Older:
        """Up to ``limit`` (at most ``MAX_OLDER_MESSAGES``) of ``room``'s messages with ids
        below ``before``, from the hub's store; raises ``HubUnavailable``."""

    async def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        """Hand the hub this worker's ``report`` and get the whole server's figures back, in
        one round trip; raises ``HubUnavailable``."""


class Hub(Protocol):
    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = ...,
    ) -> None:
        """Join the hub and feed ``listener`` until cancelled; then leave.

        Meanwhile the worker's report (``listener.report()``) goes to the hub every
        ``REPORT_INTERVAL_SECONDS``, and a last one as it leaves, so that the whole server's
        counts lose nothing of a worker that ends (a reload replaces every worker).

        Starts with the worker's ``HubLink`` once joined. Raises ``HubUnavailable`` if the
        first attempt to join fails (so that a worker with no hub does not start); later
        breaks are survived by reconnecting.
        """
