"""What a server counts, as plain data: one worker's report, and the whole server's figures.

Sans I/O (but for reading a process's start time, ``read_process_start``) and without Trio:
the hub process imports it too. Everything here is picklable (the manager hub) and converts to
and from plain JSON documents (the Redis hub keeps reports as JSON, and its Lua script adds
them up: see ``lua/figures.lua``).

Counts only ever grow within one worker process. A hub counts each worker from the first report
it gets of it (its baseline): what the worker counted after that (``Counts`` subtract). So the
sum of every worker's counts since its baseline and what gone workers had counted
(``ServerFigures.retired``) never goes backwards, however workers come and go, and a new hub
starts from about 0 instead of from the live workers' whole counts. Gauges (connections,
whether the hub is up) belong to the workers the hub knows, and go with them.
Histograms keep non-cumulative bucket counts (the last one is the ``+Inf`` bucket); their upper
bounds are Prometheus's ``le``: a value equal to a bound falls in that bound's bucket.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "DELIVERY_LAG_BUCKETS",
    "HUB_ROUND_TRIP_BUCKETS",
    "Counts",
    "Histogram",
    "HistogramFigures",
    "ServerFigures",
    "WorkerFigures",
    "WorkerReport",
]

#: Seconds. Bucket upper bounds (Prometheus ``le``), +Inf implied.
HUB_ROUND_TRIP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
DELIVERY_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip

K = TypeVar("K")

PROC = "/proc"


class Histogram:
    """A histogram being filled, in one worker: ``observe`` is one bisection and two adds."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def figures(self) -> HistogramFigures:
        return HistogramFigures(self._bounds, tuple(self._counts), self._sum)


@dataclasses.dataclass(frozen=True)
class HistogramFigures:
    bounds: tuple[float, ...]
    #: NON-cumulative, ``len(bounds) + 1`` of them (the last is the ``+Inf`` bucket).
    counts: tuple[int, ...]
    sum: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> HistogramFigures:
        return cls(bounds, (0,) * (len(bounds) + 1))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __add__(self, other: HistogramFigures) -> HistogramFigures:
        return self.combined(other, 1)

    def __sub__(self, other: HistogramFigures) -> HistogramFigures:
        """What was observed after ``other`` (an earlier state of the same histogram)."""
        return self.combined(other, -1)

    def combined(self, other: HistogramFigures, sign: int) -> HistogramFigures:
        """``self + sign * other``."""
        if other.bounds != self.bounds:
            raise ValueError(f"histograms of bounds {self.bounds} and {other.bounds} differ")
        counts = tuple(a + sign * b for a, b in zip(self.counts, other.counts, strict=True))
        return HistogramFigures(self.bounds, counts, self.sum + sign * other.sum)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, ``math.inf`` last; how many observations were at most that)."""
        total, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets

    def to_json(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> HistogramFigures:
        return _histogram(tuple(float(b) for b in document["bounds"]), document)


def _histogram(bounds: tuple[float, ...], document: Mapping[str, Any]) -> HistogramFigures:
    counts = tuple(int(c) for c in document["counts"])
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds")
    return HistogramFigures(bounds, counts, float(document["sum"]))


def _empty_round_trips() -> HistogramFigures:
    return HistogramFigures.empty(HUB_ROUND_TRIP_BUCKETS)


def _empty_lags() -> HistogramFigures:
    return HistogramFigures.empty(DELIVERY_LAG_BUCKETS)


@dataclasses.dataclass(frozen=True)
class Counts:
    """Everything that only ever grows."""

    messages_published: int = 0
    #: WebSocket frames sent to clients (a batch-mode frame is one), and their payload bytes
    #: (the UTF-8 of the text).
    frames_sent: int = 0
    bytes_sent: int = 0
    #: Times the worker joined its hub again after losing it.
    hub_reconnects: int = 0
    #: Error frames sent, by ``ErrorCode`` value (``"rate_limited"``, ...).
    frames_refused: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Handshakes refused, by reason (``"origin"``, ``"too_many_connections"``,
    #: ``"unknown_path"``, ``"not_serving"``).
    handshakes_refused: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Sessions ended, by close code (1000, 1001, 1005, 1006, 1009, 1011, 1012, 1013, ...).
    disconnects: Mapping[int, int] = dataclasses.field(default_factory=dict)
    hub_round_trip: HistogramFigures = dataclasses.field(default_factory=_empty_round_trips)
    delivery_lag: HistogramFigures = dataclasses.field(default_factory=_empty_lags)

    def __add__(self, other: Counts) -> Counts:
        return self._combined(other, 1)

    def __sub__(self, other: Counts) -> Counts:
        """What was counted after ``other`` (an earlier report of the same worker): a hub's
        baseline of a worker is taken off its reports."""
        return self._combined(other, -1)

    def _combined(self, other: Counts, sign: int) -> Counts:
        """``self + sign * other``, field by field (what ``figures.lua`` does too)."""
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, int):
                fields[field.name] = mine + sign * theirs
            elif isinstance(mine, HistogramFigures):
                fields[field.name] = mine.combined(theirs, sign)
            else:
                fields[field.name] = _merged(mine, theirs, sign)
        return Counts(**fields)

    @property
    def tally(self) -> int:
        """One number that grows whenever any count does: of two reports of one worker, the
        one with the lower tally is the older (a report that arrives late is told by it)."""
        return (
            self.messages_published
            + self.frames_sent
            + self.bytes_sent
            + self.hub_reconnects
            + sum(self.frames_refused.values())
            + sum(self.handshakes_refused.values())
            + sum(self.disconnects.values())
            + self.hub_round_trip.count
            + self.delivery_lag.count
        )

    def to_json(self) -> dict[str, Any]:
        """A document the Redis hub's script can add to another one field by field: numbers
        add, objects add key by key, lists element by element (the histograms' bounds are
        therefore left out: they are the constants above)."""
        return {
            "messages_published": self.messages_published,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "hub_reconnects": self.hub_reconnects,
            "frames_refused": dict(self.frames_refused),
            "handshakes_refused": dict(self.handshakes_refused),
            "disconnects": {str(code): count for code, count in self.disconnects.items()},
            "hub_round_trip": {
                "counts": list(self.hub_round_trip.counts),
                "sum": self.hub_round_trip.sum,
            },
            "delivery_lag": {
                "counts": list(self.delivery_lag.counts),
                "sum": self.delivery_lag.sum,
            },
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Counts:
        """The inverse of ``to_json``; fields it lacks are zero. Numbers may come back as
        floats (Lua has no integers): they are made integers again."""
        return cls(
            messages_published=int(document.get("messages_published", 0)),
            frames_sent=int(document.get("frames_sent", 0)),
            bytes_sent=int(document.get("bytes_sent", 0)),
            hub_reconnects=int(document.get("hub_reconnects", 0)),
            frames_refused=_mapping(document.get("frames_refused"), str),
            handshakes_refused=_mapping(document.get("handshakes_refused"), str),
            disconnects=_mapping(document.get("disconnects"), int),
            hub_round_trip=_histogram_or_empty(HUB_ROUND_TRIP_BUCKETS, document, "hub_round_trip"),
            delivery_lag=_histogram_or_empty(DELIVERY_LAG_BUCKETS, document, "delivery_lag"),
        )


def _merged(a: Mapping[K, int], b: Mapping[K, int], sign: int) -> dict[K, int]:
    """``a + sign * b`` key by key. A difference leaves out the keys whose count did not
    change: nothing was counted under them."""
    merged = dict(a)
    for key, count in b.items():
        merged[key] = merged.get(key, 0) + sign * count
    return merged if sign > 0 else {key: count for key, count in merged.items() if count}


def _mapping(document: Any, key_type: type[K]) -> dict[K, int]:
    # An empty object may come back from Lua as an empty list (cjson cannot tell them apart).
    if not document:
        return {}
    return {key_type(key): int(count) for key, count in document.items()}  # type: ignore[call-arg]


def _histogram_or_empty(
    bounds: tuple[float, ...], document: Mapping[str, Any], field: str
) -> HistogramFigures:
    histogram = document.get(field)
    return HistogramFigures.empty(bounds) if histogram is None else _histogram(bounds, histogram)


@dataclasses.dataclass(frozen=True)
class WorkerReport:
    """One worker's figures as of now: its gauges and its counts.

    In ``ServerFigures``, ``counts`` are what the worker counted since its hub's baseline of it,
    and ``hub_up`` is False for a worker the hub has not heard from for its lease.
    """

    pid: int
    #: Sessions subscribed now.
    connections: int
    hub_up: bool
    counts: Counts
    #: When the worker's process started, in the kernel's clock ticks since boot
    #: (``process_start``); None where unknown. With the pid it names the process on its
    #: machine: a hub on the same machine can tell a worker that died from one cut off.
    process_start: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "connections": self.connections,
            "hub_up": self.hub_up,
            "counts": self.counts.to_json(),
            "process_start": self.process_start,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> WorkerReport:
        process_start = document.get("process_start")
        return cls(
            pid=int(document["pid"]),
            connections=int(document["connections"]),
            hub_up=bool(document["hub_up"]),
            counts=Counts.from_json(document["counts"]),
            process_start=None if process_start is None else int(process_start),
        )


@dataclasses.dataclass(frozen=True)
class ServerFigures:
    """The whole server's figures, as its hub has them."""

    #: The workers the hub knows, sorted by pid: those reporting, and those silent past the
    #: lease (``hub_up`` False) until the hub forgets them. Their counts are what they counted
    #: since the hub's baseline of them.
    workers: tuple[WorkerReport, ...]
    #: What workers that are gone had counted.
    retired: Counts
    #: Rooms the hub holds with a member in them; None: the hub cannot tell.
    rooms: int | None
    #: The hub process on this machine (for its process metrics); None for Redis and local.
    hub_pid: int | None

    @property
    def totals(self) -> Counts:
        """Retired workers' counts and every known worker's (since its baseline)."""
        return sum((worker.counts for worker in self.workers), self.retired)

    @property
    def connections(self) -> int:
        return sum(worker.connections for worker in self.workers)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [worker.to_json() for worker in self.workers],
            "retired": self.retired.to_json(),
            "rooms": self.rooms,
            "hub_pid": self.hub_pid,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ServerFigures:
        rooms, hub_pid = document.get("rooms"), document.get("hub_pid")
        return cls(
            workers=sorted_by_pid(WorkerReport.from_json(w) for w in document["workers"]),
            retired=Counts.from_json(document["retired"]),
            rooms=None if rooms is None else int(rooms),
            hub_pid=None if hub_pid is None else int(hub_pid),
        )


def sorted_by_pid(reports: Iterable[WorkerReport]) -> tuple[WorkerReport, ...]:
    return tuple(sorted(reports, key=lambda report: report.pid))


class WorkerFigures:
    """What one worker process counts, in place: plain attributes and counters that the code
    doing the thing increments (no locks: a worker is one Trio run).

    - ``messages_published``: the bridge's publisher (or the in-process hub's link), once the
      hub has a batch, by its size;
    - ``frames_sent``, ``bytes_sent``: the session's writers, per frame sent (a batch-mode
      frame is one);
    - ``frames_refused``, ``handshakes_refused``, ``disconnects``: the session;
    - ``hub_reconnects``, ``hub_round_trip``: the bridge, at each re-join and publish round
      trip;
    - ``delivery_lag``: the fan-out, once per batch of messages (``fanout.TimedBatch``).
    """

    __slots__ = (
        "bytes_sent",
        "delivery_lag",
        "disconnects",
        "frames_refused",
        "frames_sent",
        "handshakes_refused",
        "hub_reconnects",
        "hub_round_trip",
        "messages_published",
    )

    def __init__(self) -> None:
        self.messages_published = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.hub_reconnects = 0
        self.frames_refused: Counter[str] = Counter()
        self.handshakes_refused: Counter[str] = Counter()
        self.disconnects: Counter[int] = Counter()
        self.hub_round_trip = Histogram(HUB_ROUND_TRIP_BUCKETS)
        self.delivery_lag = Histogram(DELIVERY_LAG_BUCKETS)

    def counts(self) -> Counts:
        return Counts(
            messages_published=self.messages_published,
            frames_sent=self.frames_sent,
            bytes_sent=self.bytes_sent,
            hub_reconnects=self.hub_reconnects,
            frames_refused=dict(self.frames_refused),
            handshakes_refused=dict(self.handshakes_refused),
            disconnects=dict(self.disconnects),
            hub_round_trip=self.hub_round_trip.figures(),
            delivery_lag=self.delivery_lag.figures(),
        )

    def report(self, pid: int, connections: int, hub_up: bool) -> WorkerReport:
        """``process_start`` is filled in when ``pid`` is this process's."""
        start = process_start(pid) if pid == os.getpid() else None
        return WorkerReport(pid, connections, hub_up, self.counts(), start)


def since_baseline(report: WorkerReport, baseline: Counts, *, hub_up: bool) -> WorkerReport:
    """A worker's ``report`` as the whole server's figures show it: its counts since
    ``baseline`` (the first report a hub got of it), its hub link down unless ``hub_up`` (False
    once it has lapsed)."""
    counts = report.counts - baseline
    return dataclasses.replace(report, counts=counts, hub_up=report.hub_up and hub_up)


@functools.cache
def process_start(pid: int) -> int | None:
    """When this process (``pid``: its own) started (``read_process_start``), read once."""
    return read_process_start(pid)


def read_process_start(pid: int, proc: str = PROC) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``); None if
    it has exited (a zombie included) or the system has no ``/proc``."""
    fields = stat_fields(pid, proc)
    try:
        # The start time is the 22nd field, the 20th after comm.
        return None if fields is None or fields[0] in (b"Z", b"X") else int(fields[19])
    except (IndexError, ValueError):
        return None


def stat_fields(pid: int, proc: str = PROC) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the process's name (state, ppid, ...); None if
    it cannot be read. The one I/O here."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
            # the last ')'.
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
