"""The figures' data (``trio_chat/metrics/figures.py``): adding counts, histograms, and the
round trips through JSON (the Redis hub) and pickle (the manager hub).

Sums of histograms are multiples of 1/1024 here, so that float addition is exact and the laws
hold to the bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.metrics.figures import (
    DELIVERY_LAG_BUCKETS,
    HUB_ROUND_TRIP_BUCKETS,
    Counts,
    Histogram,
    HistogramFigures,
    ServerFigures,
    WorkerFigures,
    WorkerReport,
    read_process_start,
)
from trio_chat.protocol import CloseCode, ErrorCode

small = st.integers(min_value=0, max_value=10**12)
exact_sums = st.integers(min_value=0, max_value=10**9).map(lambda n: n / 1024)


def histograms(bounds: tuple[float, ...]) -> st.SearchStrategy[HistogramFigures]:
    return st.builds(
        HistogramFigures,
        st.just(bounds),
        st.lists(small, min_size=len(bounds) + 1, max_size=len(bounds) + 1).map(tuple),
        exact_sums,
    )


counts = st.builds(
    Counts,
    messages_published=small,
    frames_sent=small,
    bytes_sent=small,
    hub_reconnects=small,
    frames_refused=st.dictionaries(st.sampled_from([c.value for c in ErrorCode]), small),
    handshakes_refused=st.dictionaries(
        st.sampled_from(["origin", "too_many_connections", "unknown_path", "not_serving"]), small
    ),
    disconnects=st.dictionaries(st.sampled_from([int(c) for c in CloseCode] + [4000]), small),
    hub_round_trip=histograms(HUB_ROUND_TRIP_BUCKETS),
    delivery_lag=histograms(DELIVERY_LAG_BUCKETS),
)
reports = st.builds(
    WorkerReport,
    st.integers(1, 2**22),
    st.integers(0, 10**6),
    st.booleans(),
    counts,
    st.none() | st.integers(0, 2**40),
)
server_figures = st.builds(
    ServerFigures,
    st.lists(reports, max_size=4, unique_by=lambda r: r.pid).map(
        lambda rs: tuple(sorted(rs, key=lambda r: r.pid))
    ),
    counts,
    st.none() | st.integers(0, 1000),
    st.none() | st.integers(1, 2**22),
)


@given(counts, counts, counts)
def test_adding_counts_is_associative(a: Counts, b: Counts, c: Counts) -> None:
    assert (a + b) + c == a + (b + c)


@given(counts, counts)
def test_adding_counts_is_commutative(a: Counts, b: Counts) -> None:
    assert a + b == b + a


@given(counts)
def test_no_counts_add_nothing(a: Counts) -> None:
    assert Counts() + a == a == a + Counts()


@given(counts, counts)
def test_a_sum_has_every_key_of_either_and_the_tally_adds(a: Counts, b: Counts) -> None:
    total = a + b
    assert set(total.disconnects) == set(a.disconnects) | set(b.disconnects)
    for code, count in total.disconnects.items():
        assert count == a.disconnects.get(code, 0) + b.disconnects.get(code, 0)
    assert total.tally == a.tally + b.tally


@given(counts, counts)
def test_subtracting_what_was_added_gives_back_the_counts(a: Counts, b: Counts) -> None:
    """A hub's baseline of a worker is taken off its later reports."""
    difference = (a + b) - b
    assert difference.tally == a.tally
    # Keys under which nothing was counted are left out.
    assert difference.disconnects == {k: v for k, v in a.disconnects.items() if v}
    assert difference.frames_refused == {k: v for k, v in a.frames_refused.items() if v}
    assert difference.hub_round_trip.counts == a.hub_round_trip.counts
    assert difference.delivery_lag.sum == pytest.approx(a.delivery_lag.sum)


@given(counts)
def test_counts_less_themselves_are_zero(a: Counts) -> None:
    nothing = a - a
    assert nothing.tally == 0
    assert (nothing.frames_refused, nothing.handshakes_refused, nothing.disconnects) == ({},) * 3
    assert a - Counts() == dataclasses.replace(
        a,
        frames_refused={k: v for k, v in a.frames_refused.items() if v},
        handshakes_refused={k: v for k, v in a.handshakes_refused.items() if v},
        disconnects={k: v for k, v in a.disconnects.items() if v},
    )


def test_subtracting_histograms_of_other_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="bounds"):
        _ = HistogramFigures.empty((1.0,)) - HistogramFigures.empty((2.0,))


def test_adding_histograms_of_other_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="bounds"):
        _ = HistogramFigures.empty((1.0,)) + HistogramFigures.empty((2.0,))


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False)))
def test_a_histogram_counts_each_value_in_the_first_bucket_it_fits(values: list[float]) -> None:
    histogram = Histogram(DELIVERY_LAG_BUCKETS)
    for value in values:
        histogram.observe(value)
    figures = histogram.figures()

    assert figures.count == len(values)
    assert figures.sum == pytest.approx(sum(values))
    cumulative = figures.cumulative()
    assert [bound for bound, _ in cumulative] == [*DELIVERY_LAG_BUCKETS, math.inf]
    for bound, total in cumulative:  # Prometheus's le: at most the bound.
        assert total == sum(1 for value in values if value <= bound)
    assert [total for _, total in cumulative] == sorted(total for _, total in cumulative)


def test_a_value_on_a_bound_falls_in_that_bounds_bucket() -> None:
    histogram = Histogram((0.5, 1.0))
    for value in (0.5, 1.0, 1.5, 0.0):
        histogram.observe(value)
    assert histogram.figures().counts == (2, 1, 1)


@given(counts)
def test_counts_come_back_from_json_unchanged(original: Counts) -> None:
    assert Counts.from_json(json.loads(json.dumps(original.to_json()))) == original


@given(server_figures)
def test_server_figures_come_back_from_json_and_pickle_unchanged(original: ServerFigures) -> None:
    assert ServerFigures.from_json(json.loads(json.dumps(original.to_json()))) == original
    assert pickle.loads(pickle.dumps(original)) == original


@given(histograms(HUB_ROUND_TRIP_BUCKETS))
def test_histogram_figures_come_back_from_json_unchanged(original: HistogramFigures) -> None:
    assert HistogramFigures.from_json(json.loads(json.dumps(original.to_json()))) == original


def test_counts_from_lua_are_read_back_whatever_lua_made_of_them() -> None:
    """Lua's cjson writes an empty object as either ``{}`` or ``[]``, and whole numbers may
    come back as floats; fields an older report lacks are zero."""
    document = {
        "messages_published": 3.0,
        "frames_refused": [],
        "disconnects": {"1000": 2.0},
        "hub_round_trip": {"counts": [1.0] + [0] * len(HUB_ROUND_TRIP_BUCKETS), "sum": 0.0001},
    }
    counts = Counts.from_json(document)
    assert counts.messages_published == 3
    assert counts.frames_refused == {}
    assert counts.disconnects == {1000: 2}
    assert counts.hub_round_trip.count == 1
    assert counts.delivery_lag == HistogramFigures.empty(DELIVERY_LAG_BUCKETS)


def test_a_worker_report_is_what_was_counted_then_and_stays_so() -> None:
    figures = WorkerFigures()
    figures.messages_published += 2
    figures.frames_sent += 3
    figures.bytes_sent += 30
    figures.frames_refused[ErrorCode.RATE_LIMITED.value] += 1
    figures.disconnects[CloseCode.TRY_AGAIN_LATER] += 1
    figures.delivery_lag.observe(0.003)

    report = figures.report(pid=7, connections=4, hub_up=True)
    figures.messages_published += 5
    figures.disconnects[CloseCode.NORMAL] += 1
    figures.delivery_lag.observe(0.5)

    assert (report.pid, report.connections, report.hub_up) == (7, 4, True)
    assert report.counts.messages_published == 2
    assert (report.counts.frames_sent, report.counts.bytes_sent) == (3, 30)
    assert report.counts.frames_refused == {"rate_limited": 1}
    assert report.counts.disconnects == {1013: 1}
    assert report.counts.delivery_lag.count == 1
    assert figures.report(7, 4, True).counts.tally > report.counts.tally
    assert report.process_start is None  # Not this process's pid: its start is not known.


def test_a_report_of_this_process_names_its_start_time() -> None:
    report = WorkerFigures().report(pid=os.getpid(), connections=0, hub_up=True)
    assert report.process_start is not None
    assert report.process_start == read_process_start(os.getpid())
    assert WorkerReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_the_start_time_of_a_process_that_is_gone_is_none(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait(timeout=30) == 0
    assert read_process_start(process.pid) is None
    # A zombie (exited, not yet reaped) is gone too.
    proc = tmp_path / "proc"
    (proc / "5").mkdir(parents=True)
    (proc / "5" / "stat").write_text("5 (a (b) c) Z 1 " + "0 " * 17 + "12345 0")
    (proc / "6").mkdir()
    (proc / "6" / "stat").write_text("6 (a (b) c) S 1 " + "0 " * 17 + "12345 0")
    assert read_process_start(5, str(proc)) is None
    assert read_process_start(6, str(proc)) == 12345


def test_the_totals_are_the_retired_counts_and_every_live_workers() -> None:
    a = WorkerReport(2, 3, True, Counts(messages_published=1, disconnects={1000: 1}))
    b = WorkerReport(5, 4, False, Counts(messages_published=10, disconnects={1001: 2}))
    figures = ServerFigures((a, b), Counts(messages_published=100), rooms=2, hub_pid=9)

    assert figures.connections == 7
    assert figures.totals.messages_published == 111
    assert figures.totals.disconnects == {1000: 1, 1001: 2}
