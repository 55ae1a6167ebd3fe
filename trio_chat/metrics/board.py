"""``MetricsBoard``: the whole server's figures, as the hub keeps them from its workers' reports.

Pure bookkeeping with an injected clock, no lock and no Trio: the manager hub's ``HubCore``
calls it under a lock of its own, ``LocalHub`` from its one Trio run. The Redis hub keeps the
same books in Redis (``hub_link/redis/lua/figures.lua``), by the same rules:

- A worker's newest report replaces its older one; one that arrives after a newer one (two
  round trips of one worker crossing) is ignored: it has the lower ``Counts.tally``.
- A worker that leaves hands in its final report: its counts go to ``retired`` and its gauges
  vanish. Reports of it that arrive late (a round trip abandoned before it left) are ignored
  for ``LEASE_SECONDS``.
- A worker not heard from for ``LEASE_SECONDS`` is retired with its last report: its gauges
  vanish and its counts show under ``retired``. It may only have been cut off from the hub for
  a while, so its counts are kept apart for ``LAPSED_KEPT_SECONDS``: should it report again, its
  new counts (which go on from the old ones) take their place instead of adding to them. A
  report of that pid with a lower tally is another process that got the pid again.

So ``ServerFigures.totals`` never goes backwards while the hub runs, whichever workers come
and go.
"""

from __future__ import annotations

import dataclasses

from ..hub_link.interface import LEASE_SECONDS
from .figures import Counts, ServerFigures, WorkerReport, sorted_by_pid

#: How long the counts of a worker retired for its silence are kept apart, in case it was only
#: cut off from the hub and reports again: longer than a hub restart or a network outage.
LAPSED_KEPT_SECONDS = 300.0


@dataclasses.dataclass(frozen=True)
class _Heard:
    report: WorkerReport
    #: When (on the board's clock, seconds).
    at: float


class MetricsBoard:
    def __init__(
        self,
        *,
        hub_pid: int | None = None,
        lease_seconds: float = LEASE_SECONDS,
        lapsed_kept_seconds: float = LAPSED_KEPT_SECONDS,
    ) -> None:
        self._hub_pid = hub_pid
        self._lease = lease_seconds
        self._lapsed_kept = lapsed_kept_seconds
        self._live: dict[int, _Heard] = {}
        #: Workers silent past their lease: their counts show as retired.
        self._lapsed: dict[int, _Heard] = {}
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
        """A worker leaves with its final report (None: with its last one)."""
        self.expire(now)
        if pid in self._left:
            return
        heard = self._live.pop(pid, None) or self._lapsed.pop(pid, None)
        counts = None if heard is None else heard.report.counts
        if final_report is not None and (counts is None or _newer(final_report.counts, counts)):
            counts = final_report.counts
        if counts is not None:
            self._retired += counts
        self._left[pid] = now

    def expire(self, now: float) -> None:
        """Retire workers silent past their lease, and forget what is no longer needed."""
        for pid, heard in list(self._live.items()):
            if now - heard.at > self._lease:
                self._lapsed[pid] = self._live.pop(pid)
        for pid, heard in list(self._lapsed.items()):
            if now - heard.at > self._lapsed_kept:
                self._retired += self._lapsed.pop(pid).report.counts
        for pid, left_at in list(self._left.items()):
            if now - left_at > self._lease:
                del self._left[pid]

    def figures(self, *, rooms: int | None = None) -> ServerFigures:
        """The whole server's figures as of the last ``report``, ``leave`` or ``expire``."""
        return ServerFigures(
            workers=sorted_by_pid(heard.report for heard in self._live.values()),
            retired=sum((heard.report.counts for heard in self._lapsed.values()), self._retired),
            rooms=rooms,
            hub_pid=self._hub_pid,
        )

    def _take(self, report: WorkerReport, now: float) -> None:
        pid = report.pid
        if pid in self._left:
            return  # Sent before its final report, and arrived after it.
        live = self._live.get(pid)
        if live is not None and not _newer(report.counts, live.report.counts):
            return  # Overtaken by a newer report of the same worker.
        lapsed = self._lapsed.pop(pid, None)
        if lapsed is not None and not _newer(report.counts, lapsed.report.counts):
            # Counts that do not go on from the old ones: another process with that pid.
            self._retired += lapsed.report.counts
        self._live[pid] = _Heard(report, now)


def _newer(counts: Counts, than: Counts) -> bool:
    return counts.tally >= than.tally
