"""The Redis Streams hub: workers on several hosts share one chat through one Redis server.

Chosen with ``TRIO_CHAT_HUB=redis://host:port/db`` (or ``rediss://``). Everything the manager
hub's process keeps lives in Redis instead, changed only by the Lua scripts in ``lua/`` (each
runs atomically, so the one order, the rooms and the presence counts never race;
``lua/common.lua`` documents the keys):

- a **log** stream that every worker reads with ``XREAD BLOCK`` from the position it reached:
  messages of every room (id ``<message id>-0``: one sequence of ids for all rooms) and
  presence frames, in one order, each entry naming its room. Reading takes nothing away, so a
  worker that reconnects goes on from its position and misses nothing Redis still holds; the
  log is trimmed to about ``mailbox_size`` entries, and a worker that falls further behind
  notices the gap in the message ids and tells its clients;
- per **room**: a history stream of its messages (the newest ``retention_messages``, none
  older than ``retention_days``; a join gets the last ``history_size`` of them, scrollback
  (``older``) reads further back) and the newest id it dropped (``Snapshot.first_available``),
  its presence (connections online, names, the version and time of its last frame; frames
  coalesced per room), and its place in the rooms registry: at most ``max_rooms`` rooms, a new
  one taking the place of the longest idle empty one (or refused), empty rooms forgotten after
  ``EMPTY_ROOM_SECONDS`` idle. A forgotten room keeps its history: it expires
  ``retention_days`` after the room's last message, so Redis keeps the history of the rooms
  written to within that time, and no more;
- per **worker**: a hash of its members (``"<connection> <room>"`` -> name) and a lease,
  renewed by its heartbeat, so that the users of a host that died leave presence (in all their
  rooms) when its lease runs out;
- per **server address** (a host and the TCP ports its Hypercorn master listens on): the
  figures of the workers answering there, which each worker hands in every second and gets
  back for all of them (``lua/figures.lua``, the same books as ``metrics.board``). Servers
  that share a Redis are one chat, but each address reports its own figures (Prometheus adds
  targets up); two servers sharing a port on one host (a rolling deploy) share its figures,
  so a scrape of that port gives the same whichever answers. ``rooms`` is the chat's.

Routing: unlike the manager and in-process hubs, which give a worker only the frames of rooms
it has a member in, one log cannot route by interest: every worker reads every room's frames,
and its room fan-out drops those of rooms none of its connections is in. (A stream per room
would route, but lose the one order across rooms and the single position a worker resumes
from.)

Ids and timestamps come from Redis (one counter, one clock) whatever host publishes. History
is as durable as Redis's own persistence (``docs/deployment.md``): restarted with its data
(``appendfsync always``), Redis has every id and message it acknowledged, and the workers go
on in the same run of ids, missing nothing. If Redis loses its data or goes back in time (a
restart from an older snapshot, or one that lost its last second of writes), its ids could
repeat ones given before: the scripts refuse workers whose epoch or last id Redis no longer
matches (or that read another message under an id than Redis now has), and the first to
re-join starts a new run of ids (epoch); every worker tells its clients.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ... import hypercorn_worker
from ...config import Settings
from ...hub.state import EMPTY_ROOM_SECONDS
from ...hub_address import HubConfigError, read_secret_file
from ...metrics.board import LAPSED_KEPT_SECONDS
from ...metrics.figures import Counts, ServerFigures, WorkerReport, since_baseline, sorted_by_pid
from ...protocol import body_room, is_room_name, presence_frame, stamp_chat_frame
from ..bridge import BridgedHub, Fetched
from ..interface import (
    LEASE_SECONDS,
    MAX_LISTED_ROOMS,
    MAX_LISTED_USERS,
    MAX_OLDER_MESSAGES,
    Member,
    Older,
    RoomCount,
    Snapshot,
)

logger = logging.getLogger("trio_chat.hub")

#: How long a read waits for new entries before returning empty (and being made again).
READ_BLOCK_SECONDS = 5.0
#: Presence frames are coalesced to one per interval per room, across all workers.
PRESENCE_INTERVAL_SECONDS = 0.25
#: A call that takes longer than this means Redis is unreachable (a read also blocks for
#: ``READ_BLOCK_SECONDS``).
SOCKET_TIMEOUT_SECONDS = READ_BLOCK_SECONDS + 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
MS_PER_DAY = 24 * 60 * 60 * 1000
#: A server none of whose workers has reported for this long is gone: its figures are dropped.
FIGURES_KEPT_SECONDS = LAPSED_KEPT_SECONDS
#: Marks a member that left its room, in presence changes sent to Redis (names have no
#: controls).
_GONE = "\0"


class HubStateLost(Exception):
    """Redis no longer knows this worker (its lease ran out, or Redis lost its data)."""


class RedisHub(BridgedHub):
    def __init__(
        self,
        settings: Settings,
        *,
        lease_seconds: float = LEASE_SECONDS,
        empty_room_seconds: float = EMPTY_ROOM_SECONDS,
    ) -> None:
        super().__init__(
            RedisBackend(
                settings, lease_seconds=lease_seconds, empty_room_seconds=empty_room_seconds
            ),
            settings,
            label=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
        )


@functools.cache
def _script_source(name: str) -> str:
    folder = Path(__file__).with_name("lua")
    return (folder / "common.lua").read_text() + (folder / f"{name}.lua").read_text()


class RedisBackend:
    link_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, HubStateLost)
    # The join script replaces whatever Redis still has of the worker.
    rejoin_replaces = True

    def __init__(
        self,
        settings: Settings,
        *,
        lease_seconds: float = LEASE_SECONDS,
        empty_room_seconds: float = EMPTY_ROOM_SECONDS,
        lapsed_kept_seconds: float = LAPSED_KEPT_SECONDS,
    ) -> None:
        password = None
        if settings.hub_secret_file is not None:
            password = read_secret_file(settings.hub_secret_file).decode().strip()
        database = urllib.parse.urlsplit(settings.hub).path.strip("/")
        if database and not database.isdigit():
            # redis-py would quietly use database 0 instead.
            raise HubConfigError(f"TRIO_CHAT_HUB={settings.hub!r}: the database must be a number")
        try:
            self._client = redis.Redis.from_url(
                settings.hub,
                password=password,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                # A call that failed may have been carried out: never send it twice (the reader
                # reconnects and re-joins instead).
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as error:
            raise HubConfigError(f"TRIO_CHAT_HUB={settings.hub!r}: {error}") from None
        kwargs = self._client.connection_pool.connection_kwargs
        self._where = f"redis {kwargs.get('host', kwargs.get('path'))}:{kwargs.get('port', '')}"
        self._where += f"/{kwargs.get('db', 0)}"
        self._common_args: tuple[str | int, ...] = (
            settings.redis_prefix,
            settings.history_size,
            settings.mailbox_size,
            MAX_LISTED_USERS,
            int(PRESENCE_INTERVAL_SECONDS * 1000),
            int(lease_seconds * 1000),
            # Three heartbeats per lease: one late or lost call does not count a worker dead.
            int(lease_seconds / 3 * 1000),
            settings.max_rooms,
            int(empty_room_seconds * 1000),
            settings.retention_messages,
            # At least a millisecond: an expiry of 0 would delete a history as it is written.
            max(1, round(settings.retention_days * MS_PER_DAY)),
        )
        self._prefix = settings.redis_prefix
        self._log_key = f"{settings.redis_prefix}:log"
        self._rooms_key = f"{settings.redis_prefix}:rooms"
        self._scripts = {
            name: self._client.register_script(_script_source(name))
            for name in ("join", "update", "snapshot", "leave", "figures")
        }
        self._server = server_name()
        self._lapsed_kept = lapsed_kept_seconds
        #: Where the reader is in the log, and the last message id before it (None: not
        #: known): kept across memberships, so that a re-join reads on from there.
        self.position = ""
        self.last_message_id: int | None = None
        #: The time (``t``) of that message, if the reader has read it: a re-join checks that
        #: Redis still has that message under its id, not another one it gave the id again.
        self.last_message_ts = ""

    def describe(self) -> str:
        return self._where

    def call(self, script: str, *args: str | int) -> Any:
        return self._scripts[script](args=(*self._common_args, *args))

    def join(
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> _RedisMembership:
        pairs = [item for member, name in presence.items() for item in (_member(member), name)]
        read: tuple[int | str, str] = ("", "")
        if self.last_message_id is not None and self.last_message_ts:
            read = (self.last_message_id, self.last_message_ts)
        reply = self.call(
            "join", label, last_id, epoch, secrets.token_hex(4), self.position, *read, *pairs
        )
        epoch, continuous, self.position, position_id, due_ms = reply
        if position_id >= 0:
            self.last_message_id = position_id  # Reading starts after the newest entry.
            self.last_message_ts = ""
        elif not continuous:
            # Reading on from where we were: what follows may have gaps, and the clients are
            # told once (the bridge does), not at every gap.
            self.last_message_id = None
            self.last_message_ts = ""
        return _RedisMembership(self, label, epoch, bool(continuous), due_ms / 1000)

    def rooms(self) -> list[RoomCount]:
        """The busiest rooms first, then by name (the registry's score is minus the online)."""
        listed: Any = self._client.zrange(self._rooms_key, 0, MAX_LISTED_ROOMS - 1, withscores=True)
        return [(str(room), -int(float(minus_online))) for room, minus_online in listed]

    def older(self, room: str, before: int, limit: int) -> Older:
        """Up to ``limit`` of the room's messages with ids below ``before``, oldest first: one
        read of its history stream, of one message more than asked for, which tells whether
        older ones are kept. A plain read: no script, whatever state the worker is in."""
        limit = max(0, min(limit, MAX_OLDER_MESSAGES))
        if before <= 1 or not is_room_name(room):
            # No id is below 1; a name that is not a room's has no history (nor a safe key).
            return Older(room, [], complete=True)
        entries: Any = self._client.xrevrange(
            f"{self._prefix}:history:{room}", f"({before}-0", "-", count=limit + 1
        )
        page = entries[:limit]
        return Older(
            room,
            [
                stamp_chat_frame(int(entry_id.partition("-")[0]), int(fields["t"]), fields["b"])
                for entry_id, fields in reversed(page)
            ],
            complete=len(entries) == len(page),
        )

    def disconnect(self) -> None:
        """Close every connection to Redis (a later call would open one again)."""
        self._client.connection_pool.disconnect()

    def figures(self, what: str, report: WorkerReport) -> ServerFigures:
        """Hand in a worker's report (``what``: "report", or "final" as it leaves); its
        server's figures."""
        reply = self.call(
            "figures",
            self._server,
            what,
            report.pid,
            report.counts.tally,
            "-" if report.process_start is None else report.process_start,
            json.dumps(report.to_json(), separators=(",", ":")),
            int(FIGURES_KEPT_SECONDS * 1000),
            int(self._lapsed_kept * 1000),
        )
        rooms, retired, *workers = reply
        return ServerFigures(
            workers=sorted_by_pid(_counted(*workers[i : i + 3]) for i in range(0, len(workers), 3)),
            retired=Counts.from_json(json.loads(retired)),
            rooms=int(rooms),
            hub_pid=None,
        )

    def read(self, max_entries: int) -> Fetched:
        """The next entries of the log after the reader's position, as frames."""
        reply: Any = self._client.xread(
            {self._log_key: self.position},
            count=max_entries,
            block=int(READ_BLOCK_SECONDS * 1000),
        )
        if not reply:
            return Fetched([])
        # [[stream, entries]] in RESP2, {stream: [entries]} in RESP3 (if the URL asks for it).
        entries: list[tuple[str, dict[str, str]]] = (
            next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        )
        frames = []
        missed = False
        for entry_id, fields in entries:
            self.position = entry_id
            number, _, sequence = entry_id.partition("-")
            try:
                if sequence == "0":
                    message = int(number)
                    frame = _message_frame(message, fields)
                    if self.last_message_id is not None and message != self.last_message_id + 1:
                        missed = True  # Trimmed from the log before we read it.
                    self.last_message_id, self.last_message_ts = message, fields["t"]
                else:
                    frame = _presence_frame(fields)
            except (KeyError, ValueError, TypeError):
                # Not written by our scripts: skipped (and the position moves past it), so that
                # one bad entry cannot stop the reader for good.
                logger.warning("event=bad_log_entry id=%s", entry_id)
                continue
            frames.append(frame)
        return Fetched(frames, missed)


def _counted(state: str, baseline: str, report: str) -> WorkerReport:
    """A worker as the script keeps it, as its server's figures show it: its counts since its
    baseline, its hub link down if it has lapsed."""
    first = WorkerReport.from_json(json.loads(baseline))
    newest = WorkerReport.from_json(json.loads(report))
    return since_baseline(newest, first.counts, hub_up=state == "live")


def server_name() -> str:
    """Names this worker's server by what a scrape reaches it at: its host and the TCP ports
    its Hypercorn master listens on (``tcp:8000,8443``). Servers that share a Redis may share
    a port on one host (a rolling deploy): they then share one hash of figures, so a scrape of
    that port gives the same figures whichever of them answers. Outside a Hypercorn worker
    process (or one with no TCP port): its master's pid (``pid:<n>``), or its own without a
    master."""
    try:
        worker = hypercorn_worker.current()
    except hypercorn_worker.HypercornWorkerError:
        worker = None  # Its startup fails for that anyway (``lifespan``).
    ports = sorted({listening.port for listening in worker.tcp_ports}) if worker else []
    if ports:
        return f"{socket.gethostname()}:tcp:{','.join(map(str, ports))}"
    master = multiprocessing.parent_process()
    return f"{socket.gethostname()}:pid:{os.getpid() if master is None else master.pid}"


def _member(member: Member) -> str:
    """A member as the scripts name it: ``"<connection> <room>"``."""
    connection, room = member
    return f"{connection} {room}"


def _message_frame(message: int, fields: Mapping[str, str]) -> str:
    body = fields["b"]
    if body_room(body) != fields["r"]:
        raise ValueError("a chat body of the entry's room")
    return stamp_chat_frame(message, int(fields["t"]), body)


def _presence_frame(fields: Mapping[str, str]) -> str:
    room = fields["r"]
    if not is_room_name(room):
        raise ValueError("a presence frame of a room")
    listed = json.loads(fields["u"]) or []
    return presence_frame(
        room,
        int(fields["v"]),
        int(fields["o"]),
        listed,
        json.loads(fields["j"]) or [],
        json.loads(fields["l"]) or [],
        truncated=int(fields["n"]) > len(listed),
    )


class _RedisMembership:
    def __init__(
        self, backend: RedisBackend, label: str, epoch: str, continuous: bool, due_in: float
    ) -> None:
        self._backend = backend
        self._label = label
        self.epoch = epoch
        self.continuous = continuous
        self.starts_after = 0  # The worker reads on from its own position in the log.
        self._lost = False
        # Snapshots (any thread) may bring the next update forward; updates set it.
        self._lock = threading.Lock()
        self._due_at = time.monotonic() + due_in

    @property
    def update_due_in(self) -> float | None:
        with self._lock:
            return max(0.0, self._due_at - time.monotonic())

    def fetch(self, max_frames: int) -> Fetched | None:
        if self._lost:
            return None
        return self._backend.read(max_frames)

    def update(self, bodies: Sequence[str], presence: Mapping[Member, str | None]) -> int:
        pairs = [
            item
            for member, name in presence.items()
            for item in (_member(member), _GONE if name is None else name)
        ]
        last_id, due_ms, published = self._backend.call(
            "update", self._label, self.epoch, self._seen(), len(bodies), *bodies, *pairs
        )
        if last_id < 0:
            raise self._state_lost()
        with self._lock:
            self._due_at = time.monotonic() + due_ms / 1000
        return int(published)

    def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        reply = self._backend.call(
            "snapshot",
            self._label,
            self.epoch,
            self._seen(),
            room,
            "" if since is None else since,
            "" if epoch is None else f"={epoch}",
            connection,
            name,
        )
        if reply is None:
            raise self._state_lost()
        hub_epoch, valid, last_id, first_available, due_ms, refused = reply[:6]
        with self._lock:
            self._due_at = min(self._due_at, time.monotonic() + due_ms / 1000)
        if refused:
            return Snapshot(room, [], last_id, first_available, "", 0, hub_epoch, refused=True)
        complete = bool(reply[6])
        version, online, listed_json, names = reply[7:11]
        listed = json.loads(listed_json) or []
        rest = reply[11:]
        return Snapshot(
            room=room,
            messages=[
                stamp_chat_frame(int(rest[i]), int(rest[i + 1]), rest[i + 2])
                for i in range(0, len(rest), 3)
            ],
            last_id=last_id,
            first_available=first_available,
            presence=presence_frame(
                room, version, online, listed, (), (), truncated=names > len(listed)
            ),
            presence_version=version,
            epoch=hub_epoch,
            since_valid=bool(valid),
            complete=complete,
        )

    def rooms(self) -> list[RoomCount]:
        return self._backend.rooms()

    def older(self, room: str, before: int, limit: int) -> Older:
        return self._backend.older(room, before, limit)

    def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        return self._backend.figures("report", report)

    def final_figures(self, report: WorkerReport) -> None:
        self._backend.figures("final", report)

    def leave(self) -> None:
        try:
            self._backend.call("leave", self._label)
        finally:
            # The worker's last call (a re-join replaces a membership without leaving it): its
            # connections are closed now rather than whenever they are collected, the one a
            # thread abandoned in a read included (it fails, and its result is dropped).
            self._backend.disconnect()

    def _seen(self) -> int:
        return self._backend.last_message_id or 0

    def _state_lost(self) -> HubStateLost:
        self._lost = True  # The reader sees it at its next read and re-joins.
        return HubStateLost("Redis no longer knows this worker")
