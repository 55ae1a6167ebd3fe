"""The whole server's figures in the Prometheus text format, for ``GET /metrics``.

prometheus_client writes the format (``generate_latest``); what it writes comes from a custom
collector over one ``ServerFigures``, in a registry of its own made for each scrape, never the
library's global default registry (which would count this worker alone, and whose multiprocess
mode needs a directory wiped at startup and a hook for dead workers that Hypercorn lacks).

Invariants:

- Counters are the server's totals (``ServerFigures.totals``: retired workers' counts plus
  what every known worker counted since the hub's first report of it), so they never go
  backwards when workers are replaced.
- Gauges about one worker carry a ``worker`` label (its pid) and exist while the hub knows the
  worker: one it has not heard from for its lease shows ``trio_chat_hub_up`` 0 with its last
  connections, until it is forgotten or known to be dead.
- The codes and reasons that label counters are always present for the known ones (the close
  codes we send or see, every error frame code, every handshake refusal reason), at 0 until they
  happen, so that dashboards have series from the start and ``rate()`` sees the first one.
- Every label has a bounded set of values: pids of live workers, error codes and refusal
  reasons the server defines, and close codes the standards define, those a client may pick
  for itself (3000 to 4999) being added up as ``code="other"``.
- Nothing here holds a name, a room name or a message: only counts, pids and codes.

Process metrics (CPU, memory, file descriptors) are read from ``/proc`` by prometheus_client's
``ProcessCollector`` for each live worker of this machine and for the hub process, and labelled
``process="worker", worker="<pid>"`` or ``process="hub"``. A process that is gone by the time of
the scrape is left out. A worker counts as this machine's when it is this process or a child of
this process's parent (Hypercorn's workers are all children of its master): with the Redis hub,
other machines' workers are in the figures too, and a pid of theirs may be an unrelated process
here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..protocol import CloseCode, ErrorCode, HandshakeRefusal
from .figures import PROC, HistogramFigures, ServerFigures, stat_fields

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

#: Close codes always shown in ``trio_chat_disconnects_total``: those we send and those a
#: client's going shows as (1005: closed without a code; 1006: the connection just dropped).
KNOWN_CLOSE_CODES = tuple(sorted(int(code) for code in CloseCode))
#: Close codes shown as they are when they happen: those RFC 6455 and the IANA registry
#: define. A client may close with any code from 3000 to 4999; shown one by one, a client
#: going through them would leave Prometheus thousands of series, so they are added up as
#: ``code="other"``.
DEFINED_CLOSE_CODES = range(1000, 1016)
OTHER_CODE = "other"
#: Error frame codes always shown in ``trio_chat_frames_refused_total``: every one there is.
KNOWN_ERROR_CODES = tuple(sorted(code.value for code in ErrorCode))
#: Reasons always shown in ``trio_chat_handshakes_refused_total``.
KNOWN_REFUSAL_REASONS = tuple(sorted(reason.value for reason in HandshakeRefusal))

#: How a hub process's command line names it.
HUB_MODULE = b"trio_chat.hub"
HUB_SCRIPT = b"trio-chat-hub"

K = TypeVar("K", str, int)


def render(figures: ServerFigures, *, proc: str = PROC) -> bytes:
    """``figures`` and the process metrics of the server's processes (read under ``proc``), in
    the text format."""
    registry = CollectorRegistry()
    registry.register(FiguresCollector(figures))
    registry.register(ServerProcessesCollector(figures, proc))
    return generate_latest(registry)


class FiguresCollector(Collector):
    """The chat's own metrics, from one ``ServerFigures``."""

    def __init__(self, figures: ServerFigures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures
        totals = figures.totals
        yield GaugeMetricFamily(
            "trio_chat_connections",
            "WebSocket sessions open now on the whole server (every worker the hub knows of).",
            value=figures.connections,
        )
        per_worker = GaugeMetricFamily(
            "trio_chat_worker_connections",
            "WebSocket sessions open now on one worker process (worker: its pid).",
            labels=["worker"],
        )
        hub_up = GaugeMetricFamily(
            "trio_chat_hub_up",
            "1 if the worker process (worker: its pid) is linked to the hub now, else 0.",
            labels=["worker"],
        )
        for report in figures.workers:
            per_worker.add_metric([str(report.pid)], report.connections)
            hub_up.add_metric([str(report.pid)], 1 if report.hub_up else 0)
        yield per_worker
        yield hub_up
        yield GaugeMetricFamily(
            "trio_chat_workers",
            "Worker processes the hub knows of: those reporting, and those it has not heard from "
            "for its lease (trio_chat_hub_up 0) until it forgets them.",
            value=len(figures.workers),
        )
        if figures.rooms is not None:
            yield GaugeMetricFamily(
                "trio_chat_rooms", "Rooms with at least one member now.", value=figures.rooms
            )
        yield _counter(
            "trio_chat_messages_published",
            "Chat messages published to the hub (each once, however many receive it).",
            totals.messages_published,
        )
        yield _counter(
            "trio_chat_frames_sent",
            "WebSocket frames sent to clients (a batch of frames sent as one counts once).",
            totals.frames_sent,
        )
        yield _counter(
            "trio_chat_bytes_sent",
            "Payload bytes (UTF-8 text) of the WebSocket frames sent to clients.",
            totals.bytes_sent,
        )
        yield _labelled_counter(
            "trio_chat_frames_refused",
            "Error frames sent to clients for frames refused, by error code.",
            "code",
            _with_known(totals.frames_refused, KNOWN_ERROR_CODES),
        )
        yield _labelled_counter(
            "trio_chat_handshakes_refused",
            "WebSocket handshakes refused, by reason.",
            "reason",
            _with_known(totals.handshakes_refused, KNOWN_REFUSAL_REASONS),
        )
        yield _labelled_counter(
            "trio_chat_disconnects",
            "WebSocket sessions ended, by close code: the one the server closed with, or the "
            "one Hypercorn reports for a client's going (1006 for any close by the client: "
            "Hypercorn 0.18 does not pass on the code of a client's close frame).",
            "code",
            _close_codes(_with_known(totals.disconnects, KNOWN_CLOSE_CODES)),
        )
        yield _counter(
            "trio_chat_hub_reconnects",
            "Times a worker process linked to the hub again after losing its link.",
            totals.hub_reconnects,
        )
        yield _histogram(
            "trio_chat_hub_round_trip_seconds",
            "Seconds from a worker sending a request to the hub to its answer.",
            totals.hub_round_trip,
        )
        yield _histogram(
            "trio_chat_delivery_lag_seconds",
            "Seconds from the hub stamping a message to its frame leaving a worker for clients.",
            totals.delivery_lag,
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled_counter(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in counts.items():
        family.add_metric([key], count)
    return family


def _with_known(counts: Mapping[K, int], known: Iterable[K]) -> dict[str, int]:
    """``counts``, with 0 for every known key that has not happened yet, keys in order and as
    label values."""
    merged = {key: 0 for key in known} | dict(counts)
    return {str(key): merged[key] for key in sorted(merged)}


def _close_codes(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` by close code, with codes no standard defines added up as ``other``."""
    shown: dict[str, int] = {}
    for code, count in counts.items():
        key = code if int(code) in DEFINED_CLOSE_CODES else OTHER_CODE
        shown[key] = shown.get(key, 0) + count
    return shown


def _histogram(name: str, documentation: str, histogram: HistogramFigures) -> Metric:
    buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.sum)


def _bound(seconds: float) -> str:
    return "+Inf" if math.isinf(seconds) else repr(float(seconds))


class ServerProcessesCollector(Collector):
    """Process metrics of each live worker of this machine and of the hub, relabelled."""

    def __init__(self, figures: ServerFigures, proc: str = PROC) -> None:
        self._proc = proc
        self._processes = [
            (report.pid, {"process": "worker", "worker": str(report.pid)})
            for report in figures.workers
            if _is_sibling_worker(report.pid, proc)
        ]
        if figures.hub_pid is not None and _is_hub(figures.hub_pid, proc):
            self._processes.append((figures.hub_pid, {"process": "hub"}))

    def collect(self) -> Iterator[Metric]:
        # /proc files are made by the kernel on reading, with no disk behind them; counting a
        # process's file descriptors still takes milliseconds when it has thousands, so the
        # worker renders in a thread (``Worker.render_metrics``).
        families: dict[str, Metric] = {}
        for pid, labels in self._processes:
            # registry=None: a reader of one pid's /proc, not registered anywhere.
            reader = ProcessCollector(pid=_constant(pid), proc=self._proc, registry=None)
            # A process gone since it reported: its files are gone, and it yields nothing.
            for metric in reader.collect():
                family = families.get(metric.name)
                if family is None:
                    family = Metric(metric.name, metric.documentation, metric.type)
                    families[metric.name] = family
                for sample in metric.samples:
                    family.add_sample(sample.name, {**sample.labels, **labels}, sample.value)
        yield from families.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def _is_sibling_worker(pid: int, proc: str) -> bool:
    """Whether ``pid`` is this process or another child of its parent (Hypercorn's master)."""
    return pid == os.getpid() or _parent_pid(pid, proc) == os.getppid()


def _is_hub(pid: int, proc: str) -> bool:
    """Whether ``pid`` is a trio_chat hub on this machine. A hub started by hand may be on
    another machine (``tcp://``), and its pid here an unrelated process."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as cmdline:
            arguments = cmdline.read().split(b"\0")
    except OSError:
        return False
    # ``python -m trio_chat.hub`` (the automatic hub, or by hand), or the ``trio-chat-hub``
    # script.
    return HUB_MODULE in arguments or any(a.endswith(HUB_SCRIPT) for a in arguments)


def _parent_pid(pid: int, proc: str) -> int | None:
    fields = stat_fields(pid, proc)
    try:
        return None if fields is None else int(fields[1])
    except (IndexError, ValueError):
        return None
