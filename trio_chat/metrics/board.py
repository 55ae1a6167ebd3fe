"""``MetricsBoard``: the whole server's figures, as the hub keeps them from its workers' reports.

Pure bookkeeping with an injected clock (and, for a hub that can see its workers' processes,
an injected way to read when a process started), no lock and no Trio: the manager hub's
``HubCore`` calls it under a lock of its own, ``LocalHub`` from its one Trio run. The Redis hub
keeps the same books in Redis (``hub_link/redis/lua/figures.lua``), by the same rules:

- The first report the board gets of a worker it does not know is its **baseline**: the
  worker counts from there on (its counts minus the baseline). A new worker's first report,
  sent as it joins, is all zeros, so nothing is lost; a worker that joins a new hub (the old
  one died, or Redis lost the figures) or comes back after being forgotten starts from 0 in
  that board instead of adding its whole counts again. So a new hub starts near 0, a proper
  counter reset, and nothing is counted twice.
- A worker's newest report replaces its older one; one that arrives after a newer one (two
  round trips of one worker crossing) is ignored: it has the lower ``Counts.tally``.
- A worker that leaves hands in its final report: its counts go to ``retired`` and its gauges
  vanish. Reports of it that arrive late (a round trip abandoned before it left) are ignored
  for ``LEASE_SECONDS``.
- A worker not heard from for ``LEASE_SECONDS`` has **lapsed**: it may only be cut off from the
  hub (its clients still connected), so it stays among the workers, ``hub_up`` False, with its
  last report, until ``LAPSED_KEPT_SECONDS`` after it was last heard from; then it is
  forgotten, its counts folded into ``retired``. Should it report again before that, it takes
  up its place; after that, it is a worker the board does not know. A report of a lapsed
  worker's pid with a lower tally, or one from a process started at another time, is another
  process that got the pid again: the old one's counts go to ``retired``.
- A worker the board has seen on its own machine (its report's ``process_start`` was the start
  time of that pid here) whose process is gone is retired at once, with its last report: no
  gauges linger for a worker known to be dead (one ``/proc`` read per such worker and call).

So ``ServerFigures.totals`` never goes backwards while the hub runs, whichever workers come
and go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..hub_link.interface import LEASE_SECONDS
from .figures import Counts, ServerFigures, WorkerReport, since_baseline, sorted_by_pid

#: How long a worker silent past its lease is kept (``hub_up`` False, its counts apart), in
#: case it was only cut off from the hub and reports again: longer than a hub restart or a
#: network outage.
LAPSED_KEPT_SECONDS = 300.0


@dataclasses.dataclass
class _Known:
    #: Its newest report, as the worker sent it (its whole counts).
    report: WorkerReport
    #: Its first report's counts: it counts from there in this board.
    baseline: Counts
    #: When it was last heard from (on the board's clock, seconds).
    at: float
    #: Its process's start time, seen on this machine while it reported; None: not seen here.
    local_start: int | None

    @property
    def counted(self) -> Counts:
        return self.report.counts - self.baseline

    def shown(self, *, hub_up: bool) -> WorkerReport:
        return since_baseline(self.report, self.baseline, hub_up=hub_up)


class MetricsBoard:
    def __init__(
        self,
        *,
        hub_pid: int | None = None,
        lease_seconds: float = LEASE_SECONDS,
        lapsed_kept_seconds: float = LAPSED_KEPT_SECONDS,
        process_start: Callable[[int], int | None] | None = None,
    ) -> None:
        """``process_start``: when a process of this machine started (None: it is gone), for a
        hub whose workers may be on its machine; None: the board cannot see processes."""
        self._hub_pid = hub_pid
        self._lease = lease_seconds
        self._lapsed_kept = lapsed_kept_seconds
        self._process_start = process_start
        self._live: dict[int, _Known] = {}
        #: Workers silent past their lease: shown with ``hub_up`` False.
        self._lapsed: dict[int, _Known] = {}
        #: Workers that left, and when: late reports of theirs are ignored.
        self._left: dict[int, float] = {}
        self._retired = Counts()

    def report(
        self, report: WorkerReport, now: float, *, rooms: int | None = None
    ) -> ServerFigures:
        """Take a worker's report; the whole server's figures (``rooms``: as the hub counts
        them, None if it cannot tell)."""
        self.expire(now)
        self._take(report, now)
        return self.figures(rooms=rooms)

    def leave(self, pid: int, final_report: WorkerReport | None, now: float) -> None:
        """A worker leaves with its final report (None: with its last one). A worker the board
        did not know leaves nothing: its final report would have been its baseline."""
        self.expire(now)
        if pid in self._left:
            return
        known = self._live.pop(pid, None) or self._lapsed.pop(pid, None)
        if known is not None:
            if final_report is not None and _newer(final_report, known.report):
                known.report = final_report
            self._retired += known.counted
        self._left[pid] = now

    def expire(self, now: float) -> None:
        """Lapse workers silent past their lease, retire those known to be dead and those
        silent for too long, and forget what is no longer needed."""
        for pid, known in list(self._live.items()):
            if self._is_dead(pid, known):
                self._retire(self._live.pop(pid))
            elif now - known.at > self._lease:
                self._lapsed[pid] = self._live.pop(pid)
        for pid, known in list(self._lapsed.items()):
            if now - known.at > self._lapsed_kept or self._is_dead(pid, known):
                self._retire(self._lapsed.pop(pid))
        for pid, left_at in list(self._left.items()):
            if now - left_at > self._lease:
                del self._left[pid]

    def figures(self, *, rooms: int | None = None) -> ServerFigures:
        """The whole server's figures as of the last ``report``, ``leave`` or ``expire``."""
        return ServerFigures(
            workers=sorted_by_pid(
                [
                    *(known.shown(hub_up=True) for known in self._live.values()),
                    *(known.shown(hub_up=False) for known in self._lapsed.values()),
                ]
            ),
            retired=self._retired,
            rooms=rooms,
            hub_pid=self._hub_pid,
        )

    def _take(self, report: WorkerReport, now: float) -> None:
        pid = report.pid
        if pid in self._left:
            return  # Sent before its final report, and arrived after it.
        lapsed = pid in self._lapsed
        known = self._live.pop(pid, None) or self._lapsed.pop(pid, None)
        if known is not None and _another_process(report, known, lapsed=lapsed):
            self._retire(known)
            known = None
        if known is None:
            self._live[pid] = _Known(report, report.counts, now, self._seen_here(report))
        elif _newer(report, known.report):
            known.report, known.at = report, now
            self._live[pid] = known
        else:
            # Overtaken by a newer report of the same worker: kept where it was.
            (self._lapsed if lapsed else self._live)[pid] = known

    def _retire(self, known: _Known) -> None:
        self._retired += known.counted

    def _seen_here(self, report: WorkerReport) -> int | None:
        """The report's process start if it is that of its pid on this machine."""
        start = report.process_start
        if start is None or self._process_start is None:
            return None
        return start if self._process_start(report.pid) == start else None

    def _is_dead(self, pid: int, known: _Known) -> bool:
        if known.local_start is None or self._process_start is None:
            return False  # Not seen on this machine: only its silence tells.
        return self._process_start(pid) != known.local_start


def _newer(report: WorkerReport, than: WorkerReport) -> bool:
    return report.counts.tally >= than.counts.tally


def _another_process(report: WorkerReport, known: _Known, *, lapsed: bool) -> bool:
    """Whether ``report`` comes from another process than ``known``'s, with the same pid."""
    start, known_start = report.process_start, known.report.process_start
    if start is not None and known_start is not None:
        return start != known_start
    # Counts that do not go on from the old ones. (A live worker's such report is one that
    # came late.)
    return lapsed and not _newer(report, known.report)
