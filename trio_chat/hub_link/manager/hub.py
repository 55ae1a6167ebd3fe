"""The multiprocessing manager hub as a ``bridge.Backend``: the default, zero-setup backend.

The hub process keeps a mailbox per worker (``HubCore``); a worker's reader fetches from it.
With a store, a worker that re-joins in the same run of ids finds what it missed while its link
was down at the head of its new mailbox; without one, every re-join counts as a gap.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

from ...config import Settings
from ...hub.store import StoreWriteError
from ...hub_address import Endpoint, resolve_endpoint
from ...metrics.figures import ServerFigures, WorkerReport
from ..bridge import BridgedHub, Fetched
from ..interface import HubUnavailable, Member, Older, RoomCount, Snapshot
from .client import HUB_ERRORS, HubClient
from .launcher import HubStartError, connect_or_start


class ManagerHub(BridgedHub):
    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        super().__init__(
            ManagerBackend(settings, endpoint),
            settings,
            label=f"{socket.gethostname()}:{os.getpid()}",
        )


class ManagerBackend:
    link_errors: tuple[type[BaseException], ...] = (*HUB_ERRORS, HubStartError)
    # A join opens a new mailbox: the old one is left (freed) first.
    rejoin_replaces = False

    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        self._settings = settings
        self._endpoint = endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            self._endpoint = resolve_endpoint(self._settings)
        return self._endpoint

    def describe(self) -> str:
        return self.endpoint.describe()

    def join(
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> _ManagerMembership:
        client = connect_or_start(self.endpoint, self._settings)
        mailbox_id = client.join(label, presence, last_id, epoch)
        return _ManagerMembership(client, mailbox_id, client.current_epoch())


class _ManagerMembership:
    def __init__(self, client: HubClient, mailbox_id: str, epoch: str) -> None:
        self._client = client
        self._mailbox_id = mailbox_id
        self.epoch = epoch
        # The hub began the mailbox with all the worker missed (from its store), or it only
        # holds what was published since the join (``HubState.join_point``).
        self.starts_after, self.continuous = client.join_point(mailbox_id)

    @property
    def update_due_in(self) -> None:
        return None  # The hub learns that the worker is alive from its fetches.

    def fetch(self, max_frames: int) -> Fetched | None:
        frames = self._client.fetch(self._mailbox_id, max_frames)
        return None if frames is None else Fetched(frames)

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> int:
        try:
            return self._client.update_and_count(self._mailbox_id, bodies, presence)[1]
        except StoreWriteError as error:
            # The hub is fine but could not store the bodies (a full disk, say): the senders
            # are told, as when the hub is out of reach, and this is no bug of ours to log.
            raise HubUnavailable(str(error)) from error

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        return self._client.snapshot(room, since, epoch, self._mailbox_id, {connection: name})

    def rooms(self) -> list[RoomCount]:
        return self._client.rooms()

    def older(self, room: str, before: int, limit: int) -> Older:
        return self._client.older(room, before, limit)

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        return self._client.exchange_figures(report)

    def final_figures(self, report: WorkerReport) -> None:
        self._client.final_figures(report)

    def leave(self) -> None:
        self._client.leave(self._mailbox_id)
