"""``MetricsBoard``: the whole server's figures from its workers' reports, on a clock moved by
hand. Workers that leave or fall silent are retired, and no counter ever goes backwards."""

from __future__ import annotations

import dataclasses

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_chat.metrics.board import LAPSED_KEPT_SECONDS, MetricsBoard
from trio_chat.metrics.figures import Counts, ServerFigures, WorkerReport

LEASE = 15.0


def report(pid: int, published: int, *, connections: int = 1) -> WorkerReport:
    return WorkerReport(pid, connections, True, Counts(messages_published=published))


def board() -> MetricsBoard:
    return MetricsBoard(hub_pid=42, lease_seconds=LEASE)


def pids(figures: ServerFigures) -> list[int]:
    return [worker.pid for worker in figures.workers]


def test_two_workers_reports_add_up_whichever_reports_last() -> None:
    b = board()
    b.report(report(20, 5, connections=3), 0.0)
    figures = b.report(report(10, 7, connections=2), 0.5, rooms=4)

    assert pids(figures) == [10, 20]
    assert figures.connections == 5
    assert figures.totals.messages_published == 12
    assert (figures.rooms, figures.hub_pid) == (4, 42)
    assert figures.retired == Counts()


def test_a_newer_report_replaces_the_older_and_a_late_one_is_ignored() -> None:
    b = board()
    b.report(report(1, 5, connections=3), 0.0)
    assert b.report(report(1, 8, connections=1), 1.0).totals.messages_published == 8
    # One sent before the last, arriving after it (two round trips crossing).
    late = b.report(report(1, 6, connections=9), 1.1)
    assert late.totals.messages_published == 8
    assert late.connections == 1


def test_a_worker_that_leaves_is_retired_with_its_final_report() -> None:
    b = board()
    b.report(report(1, 5), 0.0)
    b.report(report(2, 3, connections=4), 0.0)
    b.leave(2, report(2, 4, connections=0), 1.0)

    figures = b.report(report(1, 6), 1.5)
    assert pids(figures) == [1]  # Its gauges are gone...
    assert figures.connections == 1
    assert figures.retired.messages_published == 4  # ...its counts are not.
    assert figures.totals.messages_published == 10


def test_a_report_that_arrives_after_its_workers_final_one_is_ignored() -> None:
    b = board()
    b.leave(2, report(2, 4), 1.0)
    figures = b.report(report(2, 3), 2.0)  # Sent before it left.
    assert pids(figures) == []
    assert figures.totals.messages_published == 4
    b.leave(2, report(2, 4), 2.5)  # Leaving twice counts once.
    assert b.figures().totals.messages_published == 4


def test_a_worker_that_leaves_without_a_final_report_is_retired_with_its_last() -> None:
    b = board()
    b.report(report(2, 3), 0.0)
    b.leave(2, None, 1.0)
    assert b.figures().retired.messages_published == 3
    # A final report behind the last one counts as the last one.
    b.report(report(3, 9), 1.0)
    b.leave(3, report(3, 7), 2.0)
    assert b.figures().retired.messages_published == 12


def test_a_worker_silent_for_its_lease_is_retired_with_its_last_report() -> None:
    b = board()
    b.report(report(1, 5), 0.0)
    b.report(report(2, 3, connections=4), 0.0)
    assert pids(b.report(report(1, 6), LEASE)) == [1, 2]  # Not yet past its lease.

    figures = b.report(report(1, 7), LEASE + 0.1)
    assert pids(figures) == [1]
    assert figures.connections == 1
    assert figures.retired.messages_published == 3
    assert figures.totals.messages_published == 10


def test_a_retired_silent_worker_that_reports_again_is_not_counted_twice() -> None:
    b = board()
    b.report(report(2, 3), 0.0)
    b.expire(LEASE + 1)
    assert b.figures().retired.messages_published == 3

    figures = b.report(report(2, 5), LEASE + 2)  # The hub was out of its reach for a while.
    assert pids(figures) == [2]
    assert figures.retired == Counts()
    assert figures.totals.messages_published == 5


def test_another_process_with_a_silent_workers_pid_adds_to_its_counts() -> None:
    b = board()
    b.report(report(2, 30), 0.0)
    figures = b.report(report(2, 1), LEASE + 1)  # Counts that do not go on from the old ones.
    assert figures.retired.messages_published == 30
    assert figures.totals.messages_published == 31


def test_a_silent_worker_is_retired_for_good_after_a_while() -> None:
    b = board()
    b.report(report(2, 3), 0.0)
    b.expire(LEASE + LAPSED_KEPT_SECONDS + 1)
    assert b.figures().retired.messages_published == 3
    # From then on its pid is a new worker's.
    assert b.report(report(2, 5), LEASE + LAPSED_KEPT_SECONDS + 2).totals.messages_published == 8


def test_a_worker_replaced_by_another_loses_no_count() -> None:
    """A reload: every worker leaves, new ones (new pids) start from zero."""
    b = board()
    b.report(report(1, 5), 0.0)
    b.report(report(2, 7), 0.0)
    b.leave(1, report(1, 6), 1.0)
    b.leave(2, report(2, 7), 1.0)
    figures = b.report(report(3, 0), 2.0)
    assert pids(figures) == [3]
    assert figures.totals.messages_published == 13


# Counters never go backwards, whatever happens.

events = st.lists(
    st.tuples(
        st.sampled_from(["report", "leave", "vanish", "late"]),
        st.integers(0, 2),  # Which worker slot.
        st.integers(0, 5),  # Counts added meanwhile.
        st.sampled_from([0.0, 0.5, LEASE / 2, LEASE + 1, LAPSED_KEPT_SECONDS]),  # Time passing.
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(events)
@example([("report", 0, 1, 0.0), ("report", 0, 1, 0.0), ("late", 0, 0, 0.0)])
@example([("report", 0, 1, 0.0), ("vanish", 0, 0, LEASE + 1), ("report", 1, 1, 0.0)])
def test_no_counter_of_the_totals_ever_goes_backwards(
    script: list[tuple[str, int, int, float]],
) -> None:
    b = board()
    now = 0.0
    next_pid = 100
    # Each slot holds a live worker process: its pid, its counts, and its first report, which
    # may come again late (a round trip that was overtaken).
    slots: dict[int, tuple[int, Counts, WorkerReport | None]] = {}
    previous = b.figures().totals
    for what, slot, grown, elapsed in script:
        now += elapsed
        if slot not in slots:
            slots[slot] = (next_pid, Counts(), None)
            next_pid += 1
        pid, counts, first = slots[slot]
        counts = dataclasses.replace(
            counts,
            messages_published=counts.messages_published + grown,
            disconnects={1000: counts.disconnects.get(1000, 0) + grown % 2},
        )
        current = WorkerReport(pid, grown, True, counts)
        slots[slot] = (pid, counts, first)
        if what == "report":
            b.report(current, now)
            slots[slot] = (pid, counts, first or current)
        elif what == "late" and first is not None:
            b.report(first, now)
        elif what == "leave":
            b.leave(pid, current, now)
            del slots[slot]  # A new process takes its place.
        elif what == "vanish":
            del slots[slot]  # Killed: never heard from again.
        b.expire(now)
        totals = b.figures().totals
        assert totals.messages_published >= previous.messages_published
        assert totals.disconnects.get(1000, 0) >= previous.disconnects.get(1000, 0)
        previous = totals
