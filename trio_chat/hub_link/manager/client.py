"""The multiprocessing manager that carries hub calls, and the blocking client of it.

Every call is a pickled round trip over an authenticated connection (``multiprocessing``
checks the ``authkey`` with an HMAC challenge before anything is unpickled). Proxies open one
connection per thread; ``HubClient`` is used from the threads of the Trio bridge only.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from multiprocessing.managers import BaseManager, BaseProxy, RemoteError
from typing import Any, cast

from ...hub_address import Address
from ...metrics.figures import ServerFigures, WorkerReport
from ..interface import MAX_LISTED_ROOMS, Member, Older, RoomCount, Snapshot

HUB_TYPEID = "hub"

#: What a broken or absent hub raises in a client: refused or reset sockets, EOF mid-call, a
#: failed authentication, and a call that reached a restarted hub that does not know the proxy.
HUB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    multiprocessing.ProcessError,
    RemoteError,
)


class HubManager(BaseManager):
    """Client side: knows the hub's typeid, not how to make one (registered below)."""


class HubClient:
    """A connection to a running hub; every method blocks for one round trip."""

    def __init__(self, address: Address, authkey: bytes) -> None:
        manager = HubManager(address=address, authkey=authkey)
        manager.connect()
        # Proxies share their per-thread connections through a class-level cache keyed by
        # address, and never reconnect. After a hub restart on the same address, a new proxy
        # would reuse the dead hub's connections: drop the cache entry so that this client's
        # proxy opens its own. Proxies made earlier keep the entry they already hold.
        BaseProxy._address_to_local.pop(address, None)
        self._hub: Any = getattr(manager, HUB_TYPEID)()

    def join(
        self,
        label: str,
        presence: Mapping[Member, str] | None = None,
        last_id: int = 0,
        epoch: str = "",
    ) -> str:
        return cast(str, self._hub.join(label, dict(presence or {}), last_id, epoch))

    def current_epoch(self) -> str:
        return cast(str, self._hub.current_epoch())

    def join_point(self, mailbox_id: str) -> tuple[int, bool]:
        return cast("tuple[int, bool]", self._hub.join_point(mailbox_id))

    def leave(self, mailbox_id: str) -> None:
        self._hub.leave(mailbox_id)

    def update(
        self, mailbox_id: str, bodies: Sequence[str], presence: Mapping[Member, str | None]
    ) -> int:
        return cast(int, self._hub.update(mailbox_id, list(bodies), dict(presence)))

    def update_and_count(
        self, mailbox_id: str, bodies: Sequence[str], presence: Mapping[Member, str | None]
    ) -> tuple[int, int]:
        """``update``, and how many of the bodies the hub took in its order (the others were
        not chat bodies)."""
        counted = self._hub.update_and_count(mailbox_id, list(bodies), dict(presence))
        return cast("tuple[int, int]", counted)

    def publish(self, bodies: Sequence[str]) -> int:
        return cast(int, self._hub.publish(list(bodies)))

    def snapshot(
        self,
        room: str,
        since: int | None,
        epoch: str | None = None,
        mailbox_id: str = "",
        presence: Mapping[int, str] | None = None,
    ) -> Snapshot:
        return cast(
            Snapshot, self._hub.snapshot(room, since, epoch, mailbox_id, dict(presence or {}))
        )

    def rooms(self, limit: int = MAX_LISTED_ROOMS) -> list[RoomCount]:
        return cast("list[RoomCount]", self._hub.rooms(limit))

    def older(self, room: str, before: int, limit: int) -> Older:
        return cast(Older, self._hub.older(room, before, limit))

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        return cast(ServerFigures, self._hub.exchange_figures(report))

    def final_figures(self, report: WorkerReport) -> None:
        self._hub.final_figures(report)

    def fetch(self, mailbox_id: str, max_frames: int) -> list[str] | None:
        return cast("list[str] | None", self._hub.fetch(mailbox_id, max_frames))

    def statistics(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._hub.statistics())


#: The hub's remote interface: what a worker calls (``HubClient``'s methods) is what the hub
#: process exposes of its ``HubCore``, by name; written out once, here.
EXPOSED = tuple(
    name for name, value in vars(HubClient).items() if callable(value) and not name.startswith("_")
)
HubManager.register(HUB_TYPEID, exposed=EXPOSED)
