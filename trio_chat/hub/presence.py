"""Who is online in one room across all workers, kept by the hub: pure bookkeeping, no locks,
no I/O. The hub keeps one book per room.

Each worker reports its own connections in the room (``connection id -> display name``; an
empty name for a client that gave none). The book counts every connection (``online``) and
lists the distinct names (``users``). A worker that leaves or is presumed dead takes all its
connections with it, so counts never stay inflated; they cannot go negative because nothing is
ever decremented.

Changes are coalesced: many reports make one presence frame, with the names that appeared and
disappeared since the previous frame (so a second tab under the same name is not a "join").
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

from ..hub_link.interface import MAX_LISTED_USERS
from ..protocol import presence_frame


@dataclasses.dataclass(frozen=True)
class PresenceState:
    room: str
    version: int
    online: int
    users: tuple[str, ...]

    def frame(self, joined: tuple[str, ...] = (), left: tuple[str, ...] = ()) -> str:
        return presence_frame(
            self.room, self.version, self.online, self.users[:MAX_LISTED_USERS], joined, left,
            truncated=len(self.users) > MAX_LISTED_USERS,
        )  # fmt: skip


class PresenceBook:
    def __init__(self, room: str, first_version: int = 0) -> None:
        """``first_version``: the version before the book's first frame (see
        ``HubState``: versions that must keep growing across hubs start high)."""
        self.room = room
        self._by_worker: dict[str, dict[int, str]] = {}
        self._names: Counter[str] = Counter()
        self._online = 0
        self._version = first_version
        self._published_users: frozenset[str] = frozenset()
        self.dirty = False

    @property
    def online(self) -> int:
        """Connections online now (published or not)."""
        return self._online

    def connections_of(self, worker: str) -> int:
        """How many of a worker's connections are in the room."""
        return len(self._by_worker.get(worker, ()))

    def replace_worker(self, worker: str, connections: Mapping[int, str]) -> None:
        """Set all of a worker's connections at once (on joining the hub)."""
        self.drop_worker(worker)
        for connection, name in connections.items():
            self.set(worker, connection, name)

    def drop_worker(self, worker: str) -> None:
        for connection in list(self._by_worker.get(worker, ())):
            self.set(worker, connection, None)
        self._by_worker.pop(worker, None)

    def apply(self, worker: str, changes: Mapping[int, str | None]) -> None:
        for connection, name in changes.items():
            self.set(worker, connection, name)

    def set(self, worker: str, connection: int, name: str | None) -> None:
        """``name`` None: the connection is gone; "" a connection without a name."""
        connections = self._by_worker.setdefault(worker, {})
        previous = connections.pop(connection, None)
        if not connections and name is None:
            del self._by_worker[worker]  # An empty room keeps no trace of the worker.
        if previous is not None:
            self._online -= 1
            self._forget_name(previous)
        if name is not None:
            connections[connection] = name
            self._online += 1
            if name:
                self._names[name] += 1
        if previous != name:
            self.dirty = True

    def _forget_name(self, name: str) -> None:
        if name:
            self._names[name] -= 1
            if not self._names[name]:
                del self._names[name]

    def current(self) -> PresenceState:
        """The state now; its version is that of the last frame published (``publish``)."""
        return PresenceState(self.room, self._version, self._online, tuple(sorted(self._names)))

    def publish(self) -> str:
        """A new presence frame for everyone: the state now, and what changed since the last."""
        self._version += 1
        self.dirty = False
        users = frozenset(self._names)
        joined = tuple(sorted(users - self._published_users))
        left = tuple(sorted(self._published_users - users))
        self._published_users = users
        return self.current().frame(joined, left)
