"""What the bridge asks of a hub backend with a blocking client, and what a fetch brings.

Every method here blocks (a socket round trip, or a wait for frames): the bridge calls them
from worker threads only (``threads``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from ..interface import Member, Older, RoomCount, Snapshot

if TYPE_CHECKING:
    from ...metrics.figures import ServerFigures, WorkerReport

#: Frames taken per fetch, and bodies published per round trip. A batch is queued whole for
#: each subscriber, so it is also kept to a quarter of a subscriber's buffer.
MAX_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Frames in hub order; ``missed``: some that belong before them will never arrive."""

    frames: list[str]
    missed: bool = False


class Membership(Protocol):
    """One worker joined to the hub, through blocking calls (made from threads)."""

    #: Which run of ids the hub's are (``Snapshot.epoch``).
    epoch: str
    #: Whether the frames published since the worker's previous membership all follow (only
    #: a backend with a durable log can know; the others never do).
    continuous: bool
    #: Every message after this id, of the worker's rooms, comes through this membership (the
    #: worker has seen what is before, or its clients got it in snapshots); 0 for a backend
    #: that keeps its own position (Redis).
    starts_after: int

    @property
    def update_due_in(self) -> float | None:
        """Seconds until ``update`` must be called even with nothing to send; None: never.

        ``update`` and ``snapshot`` may change it (e.g. a presence frame falls due)."""

    def fetch(self, max_frames: int) -> Fetched | None:
        """Wait (up to a heartbeat) for frames; None once the hub has dropped this member."""

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> int | None:
        """Publish ``bodies`` in order and apply presence changes (None: gone). Returns how
        many of the bodies the hub took in its order (it drops one that is not a chat body of
        a room); None: the backend does not tell, and all of them count as published."""

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot: ...

    def rooms(self) -> list[RoomCount]:
        """The busiest rooms (``MAX_LISTED_ROOMS`` at most)."""

    def older(self, room: str, before: int, limit: int) -> Older:
        """Up to ``limit`` of the room's messages with ids below ``before``, oldest first."""

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        """Hand the hub the worker's report; the whole server's figures."""

    def final_figures(self, report: WorkerReport) -> None:
        """The worker's last report: it is leaving the server for good (a re-join does not)."""

    def leave(self) -> None: ...


class Backend(Protocol):
    #: What a broken or absent hub raises from its client.
    link_errors: tuple[type[BaseException], ...]
    #: Whether a join replaces what the hub still has of the worker's previous membership (then
    #: there is no leaving before re-joining, which would show its users leaving and coming back).
    rejoin_replaces: bool

    def describe(self) -> str:
        """Where the hub is, for logs and errors."""

    def join(
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> Membership:
        """Connect and join with the worker's members; ``last_id`` and ``epoch``: the
        highest id the worker has seen, and the run of ids it was part of."""
