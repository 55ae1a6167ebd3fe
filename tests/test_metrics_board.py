"""``MetricsBoard``: the whole server's figures from its workers' reports, on a clock moved by
hand. A worker counts from the first report the board gets of it (sent as it joins); workers
that leave or fall silent are retired, and no counter ever goes backwards."""

from __future__ import annotations

import dataclasses

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_chat.metrics.board import LAPSED_KEPT_SECONDS, MetricsBoard
from trio_chat.metrics.figures import Counts, ServerFigures, WorkerReport

LEASE = 15.0


def report(
    pid: int, published: int, *, connections: int = 1, start: int | None = None
) -> WorkerReport:
    return WorkerReport(pid, connections, True, Counts(messages_published=published), start)


def board(*joined: int) -> MetricsBoard:
    """A board that has had the first report (all zeros, sent as they join) of workers
    ``joined``, at 0."""
    b = MetricsBoard(hub_pid=42, lease_seconds=LEASE)
    for pid in joined:
        b.report(report(pid, 0, connections=0), 0.0)
    return b


def pids(figures: ServerFigures) -> list[int]:
    return [worker.pid for worker in figures.workers]


def test_two_workers_reports_add_up_whichever_reports_last() -> None:
    b = board(10, 20)
    b.report(report(20, 5, connections=3), 0.0)
    figures = b.report(report(10, 7, connections=2), 0.5, rooms=4)

    assert pids(figures) == [10, 20]
    assert figures.connections == 5
    assert figures.totals.messages_published == 12
    assert (figures.rooms, figures.hub_pid) == (4, 42)
    assert figures.retired == Counts()


def test_a_newer_report_replaces_the_older_and_a_late_one_is_ignored() -> None:
    b = board(1)
    b.report(report(1, 5, connections=3), 0.0)
    assert b.report(report(1, 8, connections=1), 1.0).totals.messages_published == 8
    # One sent before the last, arriving after it (two round trips crossing).
    late = b.report(report(1, 6, connections=9), 1.1)
    assert late.totals.messages_published == 8
    assert late.connections == 1


def test_a_worker_that_leaves_is_retired_with_its_final_report() -> None:
    b = board(1, 2)
    b.report(report(1, 5), 0.0)
    b.report(report(2, 3, connections=4), 0.0)
    b.leave(2, report(2, 4, connections=0), 1.0)

    figures = b.report(report(1, 6), 1.5)
    assert pids(figures) == [1]  # Its gauges are gone...
    assert figures.connections == 1
    assert figures.retired.messages_published == 4  # ...its counts are not.
    assert figures.totals.messages_published == 10


def test_a_report_that_arrives_after_its_workers_final_one_is_ignored() -> None:
    b = board(2)
    b.leave(2, report(2, 4), 1.0)
    figures = b.report(report(2, 3), 2.0)  # Sent before it left.
    assert pids(figures) == []
    assert figures.totals.messages_published == 4
    b.leave(2, report(2, 4), 2.5)  # Leaving twice counts once.
    assert b.figures().totals.messages_published == 4


def test_a_worker_that_leaves_without_a_final_report_is_retired_with_its_last() -> None:
    b = board(2, 3)
    b.report(report(2, 3), 0.0)
    b.leave(2, None, 1.0)
    assert b.figures().retired.messages_published == 3
    # A final report behind the last one counts as the last one.
    b.report(report(3, 9), 1.0)
    b.leave(3, report(3, 7), 2.0)
    assert b.figures().retired.messages_published == 12


def test_a_worker_silent_for_its_lease_shows_its_hub_link_down_with_its_last_report() -> None:
    """It may only be cut off from the hub, its clients still connected."""
    b = board(1, 2)
    b.report(report(1, 5), 0.0)
    b.report(report(2, 3, connections=4), 0.0)
    figures = b.report(report(1, 6), LEASE)  # Not yet past its lease.
    assert [worker.hub_up for worker in figures.workers] == [True, True]

    figures = b.report(report(1, 7), LEASE + 0.1)
    assert pids(figures) == [1, 2]
    assert [worker.hub_up for worker in figures.workers] == [True, False]
    assert figures.connections == 5  # Its clients are still there, as far as anyone knows.
    assert figures.retired == Counts()
    assert figures.totals.messages_published == 10


def test_a_silent_worker_that_reports_again_goes_on_and_is_not_counted_twice() -> None:
    b = board(2)
    b.report(report(2, 3), 0.0)
    b.expire(LEASE + 1)
    assert not b.figures().workers[0].hub_up

    figures = b.report(report(2, 5), LEASE + 2)  # The hub was out of its reach for a while.
    assert pids(figures) == [2]
    assert figures.workers[0].hub_up
    assert figures.retired == Counts()
    assert figures.totals.messages_published == 5


def test_another_process_with_a_silent_workers_pid_counts_from_its_first_report() -> None:
    b = board(2)
    b.report(report(2, 30), 0.0)
    figures = b.report(report(2, 1), LEASE + 1)  # Counts that do not go on from the old ones.
    assert figures.retired.messages_published == 30
    assert figures.totals.messages_published == 30
    assert b.report(report(2, 4), LEASE + 2).totals.messages_published == 33


def test_another_process_with_a_workers_pid_is_told_by_its_start_time() -> None:
    b = board()
    b.report(report(2, 0, start=100), 0.0)
    b.report(report(2, 30, start=100), 1.0)
    # Another process got the pid (the first died unheard): its tally would look late.
    figures = b.report(report(2, 0, start=200), 2.0)
    assert figures.retired.messages_published == 30
    assert b.report(report(2, 4, start=200), 3.0).totals.messages_published == 34


def test_a_silent_worker_is_forgotten_after_a_while_and_then_counts_from_its_next_report() -> None:
    b = board(2)
    b.report(report(2, 3, connections=4), 0.0)
    b.expire(LEASE + LAPSED_KEPT_SECONDS + 1)
    figures = b.figures()
    assert pids(figures) == []  # Its gauges are gone...
    assert figures.retired.messages_published == 3  # ...its counts are not.
    # Should it report again, that report is its baseline: nothing is counted twice.
    later = LEASE + LAPSED_KEPT_SECONDS + 2
    assert b.report(report(2, 5), later).totals.messages_published == 3
    assert b.report(report(2, 8), later + 1).totals.messages_published == 6


def test_a_new_board_counts_each_worker_from_the_first_report_it_gets() -> None:
    """A hub that replaces one that died: its workers' counts so far are not new, and a
    counter that starts again near 0 is a reset Prometheus understands."""
    b = board()
    figures = b.report(report(1, 1_000_000, connections=3), 0.0)
    assert figures.totals.messages_published == 0
    assert figures.connections == 3
    assert figures.workers[0].counts == Counts()
    figures = b.report(report(1, 1_000_007, connections=3), 1.0)
    assert figures.totals.messages_published == 7
    assert figures.workers[0].counts.messages_published == 7
    # Leaving, it hands in what it counted here.
    b.leave(1, report(1, 1_000_009), 2.0)
    assert b.figures().retired.messages_published == 9


def test_a_worker_unknown_to_the_board_that_leaves_leaves_nothing() -> None:
    b = board()
    b.leave(1, report(1, 50), 0.0)  # Its final report would have been its baseline.
    assert b.figures().totals == Counts()


def test_a_worker_of_this_machine_whose_process_is_gone_is_retired_at_once() -> None:
    starts = {7: 111, 8: 222}
    b = MetricsBoard(lease_seconds=LEASE, process_start=starts.get)
    b.report(report(7, 0, start=111), 0.0)
    b.report(report(7, 5, connections=3, start=111), 1.0)
    # Another machine's worker: its pid here is another process (or none), so only its
    # silence tells.
    b.report(report(9, 0, start=999), 0.0)
    b.report(report(9, 2, start=999), 1.0)

    del starts[7]  # Killed.
    figures = b.report(report(8, 0, start=222), 1.5)
    assert pids(figures) == [8, 9]
    assert figures.retired.messages_published == 5
    assert figures.totals.messages_published == 7
    # Past the lease, the other machine's worker is kept, its hub link down.
    figures = b.report(report(8, 0, start=222), LEASE + 2)
    assert pids(figures) == [8, 9]
    assert not figures.workers[1].hub_up


def test_a_worker_of_this_machine_whose_pid_another_process_took_is_retired() -> None:
    starts = {7: 111}
    b = MetricsBoard(lease_seconds=LEASE, process_start=starts.get)
    b.report(report(7, 0, start=111), 0.0)
    b.report(report(7, 4, start=111), 1.0)
    starts[7] = 333  # It died, and something else started with its pid.
    figures = b.report(report(8, 0), 1.5)
    assert pids(figures) == [8]
    assert figures.retired.messages_published == 4


def test_a_worker_replaced_by_another_loses_no_count() -> None:
    """A reload: every worker leaves, new ones (new pids) start from zero."""
    b = board(1, 2, 3)
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
