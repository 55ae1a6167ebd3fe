"""metrics/exposition.py: ServerFigures built by hand, rendered, and read back with
prometheus_client's own parser: every family, value and label.

The last tests check the Grafana dashboard in ``docs/`` against what is rendered.

Process metrics are read from a fake ``/proc`` tree (``FakeProc``), so that which processes
are shown, and that one gone since it reported is left out, is decided here and not by the
machine; one test reads the real ``/proc`` for this process.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from trio_chat.metrics.exposition import (
    KNOWN_CLOSE_CODES,
    KNOWN_ERROR_CODES,
    KNOWN_REFUSAL_REASONS,
    render,
)
from trio_chat.metrics.figures import (
    DELIVERY_LAG_BUCKETS,
    HUB_ROUND_TRIP_BUCKETS,
    Counts,
    HistogramFigures,
    ServerFigures,
    WorkerReport,
)
from trio_chat.protocol import CloseCode, ErrorCode

#: Every family of the chat's own, and its type.
CHAT_FAMILIES = {
    "trio_chat_connections": "gauge",
    "trio_chat_worker_connections": "gauge",
    "trio_chat_hub_up": "gauge",
    "trio_chat_workers": "gauge",
    "trio_chat_rooms": "gauge",
    "trio_chat_messages_published": "counter",
    "trio_chat_frames_sent": "counter",
    "trio_chat_bytes_sent": "counter",
    "trio_chat_frames_refused": "counter",
    "trio_chat_handshakes_refused": "counter",
    "trio_chat_disconnects": "counter",
    "trio_chat_hub_reconnects": "counter",
    "trio_chat_hub_round_trip_seconds": "histogram",
    "trio_chat_delivery_lag_seconds": "histogram",
}
PROCESS_FAMILIES = {
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}

# Pids of the fake /proc: two workers of this server (children of this process's parent, as
# Hypercorn's workers are of its master), one of another machine's, and a hub.
WORKER_A, WORKER_B, ELSEWHERE, HUB = 40001, 40002, 40003, 40010
HUB_COMMAND = ("/usr/bin/python3", "-m", "trio_chat.hub", "--listen", "unix:/run/hub.sock")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BOOT_TIME = 1_700_000_000

Labels = frozenset[tuple[str, str]]


def histogram(bounds: tuple[float, ...], observations: list[float]) -> HistogramFigures:
    counts = [0] * (len(bounds) + 1)
    for seconds in observations:
        counts[next((i for i, bound in enumerate(bounds) if seconds <= bound), len(bounds))] += 1
    return HistogramFigures(bounds, tuple(counts), sum(observations))


def counts(**fields: object) -> Counts:
    return Counts(**fields)  # type: ignore[arg-type]


RETIRED = counts(
    messages_published=100,
    frames_sent=400,
    bytes_sent=40_000,
    hub_reconnects=1,
    frames_refused={"rate_limited": 2},
    handshakes_refused={"origin": 1},
    disconnects={1000: 5, 1012: 3},
    hub_round_trip=histogram(HUB_ROUND_TRIP_BUCKETS, [0.0004, 0.002]),
    delivery_lag=histogram(DELIVERY_LAG_BUCKETS, [0.003]),
)
COUNTS_A = counts(
    messages_published=7,
    frames_sent=20,
    bytes_sent=2_000,
    frames_refused={"rate_limited": 1, "message_too_long": 4},
    handshakes_refused={"too_many_connections": 2},
    disconnects={1000: 1, 1013: 2, 4000: 1, 3001: 2, 1015: 1},
    hub_round_trip=histogram(HUB_ROUND_TRIP_BUCKETS, [0.0005, 0.03, 9.0]),
    delivery_lag=histogram(DELIVERY_LAG_BUCKETS, [0.001, 0.2, 0.2]),
)
COUNTS_B = counts(
    messages_published=3,
    frames_sent=9,
    bytes_sent=900,
    hub_reconnects=2,
    disconnects={1006: 4},
    delivery_lag=histogram(DELIVERY_LAG_BUCKETS, [6.0]),
)
FIGURES = ServerFigures(
    workers=(
        WorkerReport(WORKER_A, connections=5, hub_up=True, counts=COUNTS_A),
        WorkerReport(WORKER_B, connections=2, hub_up=False, counts=COUNTS_B),
    ),
    retired=RETIRED,
    rooms=4,
    hub_pid=HUB,
)


class FakeProc:
    """A /proc tree with the files ProcessCollector and the sibling check read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "stat").write_text(f"cpu  1 2 3 4\nbtime {BOOT_TIME}\n")

    def add(
        self,
        pid: int,
        parent: int,
        *,
        rss_pages: int,
        cpu_ticks: int,
        fds: int,
        cmdline: Sequence[str] = ("python", "-c", "from multiprocessing.spawn import ..."),
    ) -> None:
        folder = self.root / str(pid)
        (folder / "fd").mkdir(parents=True)
        (folder / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
        for fd in range(fds):
            (folder / "fd" / str(fd)).touch()
        # After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss.
        fields = ["S", str(parent), *["0"] * 9, str(cpu_ticks), "0", *["0"] * 6]
        fields += [str(100 * CLOCK_TICKS), "123456789", str(rss_pages)]
        (folder / "stat").write_text(f"{pid} (py (worker)) {' '.join(fields)} 0 0\n")
        (folder / "limits").write_text(
            "Limit                     Soft Limit           Hard Limit           Units\n"
            "Max open files            1024                 4096                 files\n"
        )

    def remove(self, pid: int) -> None:
        for path in sorted((self.root / str(pid)).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    proc = FakeProc(tmp_path)
    proc.add(WORKER_A, os.getppid(), rss_pages=1000, cpu_ticks=3 * CLOCK_TICKS, fds=7)
    proc.add(WORKER_B, os.getppid(), rss_pages=2000, cpu_ticks=5 * CLOCK_TICKS, fds=9)
    proc.add(ELSEWHERE, os.getpid(), rss_pages=1, cpu_ticks=1, fds=1)
    proc.add(HUB, 1, rss_pages=500, cpu_ticks=CLOCK_TICKS, fds=4, cmdline=HUB_COMMAND)
    return proc


def families(figures: ServerFigures, proc: FakeProc | str) -> dict[str, Metric]:
    root = str(proc.root) if isinstance(proc, FakeProc) else proc
    text = render(figures, proc=root).decode()
    parsed = list(text_string_to_metric_families(text))
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), f"a family was rendered twice: {names}"
    return {family.name: family for family in parsed}


def values(family: Metric, sample_name: str | None = None) -> dict[Labels, float]:
    """The samples of ``family`` named ``sample_name`` (the family's own by default)."""
    name = sample_name or family.name
    found = [sample for sample in family.samples if sample.name == name]
    by_labels = {frozenset(sample.labels.items()): sample.value for sample in found}
    assert len(by_labels) == len(found), f"a sample was rendered twice: {found}"
    return by_labels


def labelled(label: str, numbers: Mapping[str, float]) -> dict[Labels, float]:
    return {frozenset({(label, key)}): value for key, value in numbers.items()}


NO_LABELS: Labels = frozenset()


# The families and their help


def test_every_family_is_rendered_with_its_type(proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    assert {name: family.type for name, family in rendered.items()} == (
        CHAT_FAMILIES | PROCESS_FAMILIES
    )


def test_every_chat_family_says_what_it_counts(proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    for name in CHAT_FAMILIES:
        documentation = rendered[name].documentation
        assert documentation.endswith(".") and len(documentation.split()) >= 5, (
            name,
            documentation,
        )


# Gauges


def test_connections_are_the_whole_servers_and_each_workers(proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    assert values(rendered["trio_chat_connections"]) == {NO_LABELS: 7}
    assert values(rendered["trio_chat_worker_connections"]) == labelled(
        "worker", {str(WORKER_A): 5, str(WORKER_B): 2}
    )
    assert values(rendered["trio_chat_workers"]) == {NO_LABELS: 2}
    assert values(rendered["trio_chat_rooms"]) == {NO_LABELS: 4}


def test_hub_up_is_one_or_zero_per_worker(proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    assert values(rendered["trio_chat_hub_up"]) == labelled(
        "worker", {str(WORKER_A): 1, str(WORKER_B): 0}
    )


def test_rooms_are_left_out_when_the_hub_cannot_tell(proc: FakeProc) -> None:
    figures = ServerFigures(FIGURES.workers, RETIRED, rooms=None, hub_pid=HUB)

    assert "trio_chat_rooms" not in families(figures, proc)


def test_no_worker_means_no_per_worker_series(proc: FakeProc) -> None:
    rendered = families(ServerFigures((), RETIRED, rooms=0, hub_pid=None), proc)

    assert values(rendered["trio_chat_connections"]) == {NO_LABELS: 0}
    assert values(rendered["trio_chat_workers"]) == {NO_LABELS: 0}
    assert values(rendered["trio_chat_worker_connections"]) == {}
    assert values(rendered["trio_chat_hub_up"]) == {}
    # What gone workers counted is still there.
    published = rendered["trio_chat_messages_published"]
    assert values(published, "trio_chat_messages_published_total") == {NO_LABELS: 100}


# Counters: retired workers' counts plus every live worker's


@pytest.mark.parametrize(
    ("name", "total"),
    [
        ("trio_chat_messages_published", 100 + 7 + 3),
        ("trio_chat_frames_sent", 400 + 20 + 9),
        ("trio_chat_bytes_sent", 40_000 + 2_000 + 900),
        ("trio_chat_hub_reconnects", 1 + 0 + 2),
    ],
)
def test_plain_counters_are_the_servers_totals(name: str, total: int, proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    assert values(rendered[name], f"{name}_total") == {NO_LABELS: total}


def test_frames_refused_by_code_with_every_error_code_present(proc: FakeProc) -> None:
    family = families(FIGURES, proc)["trio_chat_frames_refused"]

    expected = {code.value: 0 for code in ErrorCode} | {"rate_limited": 3, "message_too_long": 4}
    assert values(family, "trio_chat_frames_refused_total") == labelled("code", expected)


def test_handshakes_refused_by_reason_with_the_known_reasons_present(proc: FakeProc) -> None:
    family = families(FIGURES, proc)["trio_chat_handshakes_refused"]

    expected = {
        "origin": 1,
        "too_many_connections": 2,
        "not_serving": 0,
        "unknown_path": 0,
    }
    assert values(family, "trio_chat_handshakes_refused_total") == labelled("reason", expected)


def test_disconnects_by_code_with_the_known_codes_present(proc: FakeProc) -> None:
    family = families(FIGURES, proc)["trio_chat_disconnects"]

    expected = {str(int(code)): 0 for code in CloseCode} | {
        "1000": 5 + 1,
        "1012": 3,
        "1013": 2,
        "1006": 4,
        "1015": 1,  # defined (TLS handshake), if never sent: shown as it is
        "other": 1 + 2,  # codes of a client's own (3000 to 4999), added up
    }
    assert values(family, "trio_chat_disconnects_total") == labelled("code", expected)


def test_codes_of_clients_own_are_added_up_whatever_their_number(proc: FakeProc) -> None:
    # A client going through every code it may use leaves one series, not two thousand.
    codes = {code: 1 for code in range(3000, 5000)}
    figures = ServerFigures((), counts(disconnects=codes), rooms=None, hub_pid=None)

    family = families(figures, proc)["trio_chat_disconnects"]

    shown = values(family, "trio_chat_disconnects_total")
    assert len(shown) == len(KNOWN_CLOSE_CODES) + 1
    assert shown[frozenset({("code", "other")})] == 2000


def test_codes_that_never_happened_are_there_from_the_start(proc: FakeProc) -> None:
    rendered = families(ServerFigures((), Counts(), rooms=None, hub_pid=None), proc)

    disconnects = values(rendered["trio_chat_disconnects"], "trio_chat_disconnects_total")
    refused = values(rendered["trio_chat_handshakes_refused"], "trio_chat_handshakes_refused_total")
    frames = values(rendered["trio_chat_frames_refused"], "trio_chat_frames_refused_total")
    assert {"1000", "1001", "1006", "1009", "1011", "1012", "1013"} <= {
        dict(labels)["code"] for labels in disconnects
    }
    assert {"origin", "too_many_connections", "not_serving"} <= {
        dict(labels)["reason"] for labels in refused
    }
    assert {"rate_limited", "message_too_long"} <= {dict(labels)["code"] for labels in frames}
    assert set(disconnects.values()) == set(refused.values()) == set(frames.values()) == {0}
    assert len(KNOWN_CLOSE_CODES) == len(disconnects)
    assert len(KNOWN_REFUSAL_REASONS) == len(refused)
    assert len(KNOWN_ERROR_CODES) == len(frames)


# Histograms


@pytest.mark.parametrize(
    ("name", "bounds", "observations"),
    [
        (
            "trio_chat_hub_round_trip_seconds",
            HUB_ROUND_TRIP_BUCKETS,
            [0.0004, 0.002, 0.0005, 0.03, 9.0],
        ),
        ("trio_chat_delivery_lag_seconds", DELIVERY_LAG_BUCKETS, [0.003, 0.001, 0.2, 0.2, 6.0]),
    ],
)
def test_histograms_are_cumulative_and_inf_is_the_count(
    name: str, bounds: tuple[float, ...], observations: list[float], proc: FakeProc
) -> None:
    family = families(FIGURES, proc)[name]

    buckets = values(family, f"{name}_bucket")
    expected = {
        frozenset({("le", "+Inf" if math.isinf(bound) else repr(bound))}): sum(
            seconds <= bound for seconds in observations
        )
        for bound in (*bounds, math.inf)
    }
    assert buckets == expected
    assert values(family, f"{name}_count") == {NO_LABELS: len(observations)}
    assert values(family, f"{name}_sum") == {NO_LABELS: pytest.approx(sum(observations))}
    cumulative = [value for _, value in sorted(buckets.items(), key=lambda item: _le(item[0]))]
    assert cumulative == sorted(cumulative)


def _le(labels: Labels) -> float:
    return float(dict(labels)["le"].replace("+Inf", "inf"))


# Process metrics


def test_process_metrics_of_this_servers_workers_and_its_hub(proc: FakeProc) -> None:
    rendered = families(FIGURES, proc)

    rss = values(rendered["process_resident_memory_bytes"])
    assert rss == {
        frozenset({("process", "worker"), ("worker", str(WORKER_A))}): 1000 * PAGE_SIZE,
        frozenset({("process", "worker"), ("worker", str(WORKER_B))}): 2000 * PAGE_SIZE,
        frozenset({("process", "hub")}): 500 * PAGE_SIZE,
    }
    cpu = values(rendered["process_cpu_seconds"], "process_cpu_seconds_total")
    assert sorted(cpu.values()) == [1.0, 3.0, 5.0]
    fds = values(rendered["process_open_fds"])
    assert sorted(fds.values()) == [4, 7, 9]
    assert set(values(rendered["process_max_fds"]).values()) == {1024}
    starts = set(values(rendered["process_start_time_seconds"]).values())
    assert starts == {BOOT_TIME + 100}


def test_a_worker_that_is_not_a_sibling_has_no_process_metrics(proc: FakeProc) -> None:
    # With the Redis hub, another machine's worker may share its pid with some process here.
    elsewhere = WorkerReport(ELSEWHERE, connections=1, hub_up=True, counts=Counts())
    figures = ServerFigures((*FIGURES.workers, elsewhere), RETIRED, rooms=4, hub_pid=None)

    rendered = families(figures, proc)

    workers = {dict(labels).get("worker") for labels in values(rendered["process_open_fds"])}
    assert workers == {str(WORKER_A), str(WORKER_B)}
    # Its chat figures are the server's all the same.
    assert values(rendered["trio_chat_connections"]) == {NO_LABELS: 8}


@pytest.mark.parametrize(
    "command",
    [
        ("/usr/bin/python3", "-m", "trio_chat.hub", "--secret-stdin"),
        ("/usr/bin/python3", "/srv/chat/.venv/bin/trio-chat-hub"),
    ],
)
def test_the_hub_is_known_by_its_command_line(proc: FakeProc, command: Sequence[str]) -> None:
    proc.add(HUB + 1, 1, rss_pages=77, cpu_ticks=1, fds=1, cmdline=command)
    figures = ServerFigures((), RETIRED, rooms=0, hub_pid=HUB + 1)

    rss = values(families(figures, proc)["process_resident_memory_bytes"])

    assert rss == {frozenset({("process", "hub")}): 77 * PAGE_SIZE}


def test_a_hub_on_another_machine_has_no_process_metrics(proc: FakeProc) -> None:
    # A hub started by hand elsewhere (tcp://): its pid here is some other process.
    figures = ServerFigures(FIGURES.workers, RETIRED, rooms=4, hub_pid=ELSEWHERE)

    rendered = families(figures, proc)

    processes = {dict(labels)["process"] for labels in values(rendered["process_open_fds"])}
    assert processes == {"worker"}


def test_a_process_gone_since_it_reported_is_left_out(proc: FakeProc) -> None:
    proc.remove(WORKER_B)
    proc.remove(HUB)

    rendered = families(FIGURES, proc)

    assert values(rendered["process_resident_memory_bytes"]) == {
        frozenset({("process", "worker"), ("worker", str(WORKER_A))}): 1000 * PAGE_SIZE
    }
    # Its last report still counts: the hub retires it when its lease runs out.
    assert values(rendered["trio_chat_worker_connections"]) == labelled(
        "worker", {str(WORKER_A): 5, str(WORKER_B): 2}
    )


def test_no_live_process_means_no_process_families(proc: FakeProc) -> None:
    for pid in (WORKER_A, WORKER_B, HUB):
        proc.remove(pid)

    rendered = families(FIGURES, proc)

    assert set(rendered) == set(CHAT_FAMILIES)


def test_this_process_is_read_from_the_real_proc() -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no /proc on this system")
    me = WorkerReport(os.getpid(), connections=0, hub_up=True, counts=Counts())

    rendered = families(ServerFigures((me,), Counts(), rooms=0, hub_pid=None), "/proc")

    [(labels, rss)] = values(rendered["process_resident_memory_bytes"]).items()
    assert labels == {("process", "worker"), ("worker", str(os.getpid()))}
    assert rss > 0


# The Grafana dashboard (docs/grafana-dashboard.json) asks only for what is rendered here

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses (functions, keywords,
    strings, numbers and ranges aside)."""
    labels = {name for body in _MATCHERS.findall(expr) for name in _MATCHER_LABEL.findall(body)}
    labels |= {
        name.strip() for body in _GROUPING.findall(expr) for name in body.split(",") if name.strip()
    }
    bare = _RANGE.sub("", _MATCHERS.sub("", _GROUPING.sub("", _STRING.sub('""', expr))))
    return set(_IDENTIFIER.findall(bare)), labels


def test_promql_names_finds_metrics_and_labels_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x=~"$v", y="1"}'
        "[$__rate_interval]))) / on (z) b_total"
    )

    assert promql_names(expr) == ({"a_bucket", "b_total"}, {"instance", "le", "x", "y", "z"})


def dashboard_targets() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    return [target for panel in document["panels"] for target in panel.get("targets", [])]


def rendered_names(proc: FakeProc) -> tuple[set[str], set[str]]:
    text = render(FIGURES, proc=str(proc.root)).decode()
    samples = [
        sample for family in text_string_to_metric_families(text) for sample in family.samples
    ]
    return {s.name for s in samples}, {label for s in samples for label in s.labels}


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    document = json.loads(DASHBOARD.read_text())

    assert document["schemaVersion"] >= 39
    assert [(i["name"], i["pluginId"]) for i in document["__inputs"]] == [
        ("DS_PROMETHEUS", "prometheus")
    ]
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["targets"] and panel["title"] and panel["description"]


def test_every_dashboard_expression_names_metrics_and_labels_that_are_rendered(
    proc: FakeProc,
) -> None:
    metrics, labels = rendered_names(proc)
    targets = dashboard_targets()

    used_metrics: set[str] = set()
    for target in targets:
        names, label_names = promql_names(target["expr"])
        assert names and names <= metrics, (target["expr"], names - metrics)
        assert label_names <= labels | TARGET_LABELS, (target["expr"], label_names - labels)
        legend = set(_LEGEND_LABEL.findall(target["legendFormat"]))
        assert legend <= labels | TARGET_LABELS, (target["legendFormat"], legend)
        used_metrics |= names
    # Each of the chat's families has a panel.
    assert {name.removesuffix("_bucket") for name in used_metrics} >= {
        "trio_chat_connections",
        "trio_chat_worker_connections",
        "trio_chat_workers",
        "trio_chat_rooms",
        "trio_chat_hub_up",
        "trio_chat_messages_published_total",
        "trio_chat_frames_sent_total",
        "trio_chat_bytes_sent_total",
        "trio_chat_frames_refused_total",
        "trio_chat_handshakes_refused_total",
        "trio_chat_disconnects_total",
        "trio_chat_hub_reconnects_total",
        "trio_chat_hub_round_trip_seconds",
        "trio_chat_delivery_lag_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
