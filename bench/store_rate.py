"""The SQLite store's own publish rate, and its share of the hub's write path.

    python bench/store_rate.py                    # 3 runs, 2 s a case: prints the tables
    python bench/store_rate.py --append bench/store-results.md   # ... and puts them there
    python bench/store_rate.py --profile          # where an update's time goes (cProfile)

Two measurements, each case in a temporary directory of its own (removed afterwards; by
default under the system's temporary folder: pass ``--dir`` for another disk):

- **the store**: ``MessageStore.append`` of batches of 1, 16, 64 and 256 messages (a
  transaction each, as the hub makes one per update), for ``seconds`` each. Texts are 100 to
  200 characters of random words, from 20 senders, in 4 rooms. Figures: messages committed per
  second and µs per commit (wall clock, inside ``append`` only: making the messages is not
  counted), and the CPU per message (the difference is waiting for the disk, at checkpoints).
- **the hub's write path**: ``HubCore.update`` with bodies as workers send them
  (``encode_chat_body``), batches of the same sizes, with the SQLite store and without it
  (``TRIO_CHAT_STORE=memory``), one after the other in each run (alternating which goes
  first). Four workers' mailboxes, each with a member in every room, so every message is
  handed to four mailboxes, which are emptied (``fetch_nowait``) after every update, as the
  workers' fetches do; that is timed apart and not in the figures. The store's share is
  1 - (µs per message without) / (µs per message with).

Every figure is the median of the runs; each ratio is the median of the runs' ratios.
``run.py --scenario store`` runs this after its end-to-end measurements and puts both in one
report.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import json
import pstats
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from trio_chat.config import Settings
from trio_chat.hub.core import HubCore
from trio_chat.hub.server import (
    FETCH_LINGER_SECONDS,
    PRESENCE_DELIVERIES_PER_SECOND,
    PRESENCE_INTERVAL_SECONDS,
)
from trio_chat.hub.store import MessageStore, StoredMessage
from trio_chat.protocol import ChatMessage, encode_chat_body

BATCHES = (1, 16, 64, 256)
ROOMS = 4
SENDERS = 20
WORKERS = 4
TEXT_CHARS = (100, 200)
#: Distinct messages made up front and used in turn (ids are given afresh each time).
POOL_SIZE = 4096
#: What a fetch takes at most here: more than any batch leaves in a mailbox.
FETCH_MAX_FRAMES = 4096
SECTION_TITLE = "## The store's own rate, and its share of the hub's write path"


@dataclasses.dataclass(frozen=True)
class RateConfig:
    runs: int = 3
    #: How long each case runs, in each run.
    seconds: float = 2.0
    batches: tuple[int, ...] = BATCHES
    #: Where the temporary stores go (``None``: the system's temporary folder).
    directory: Path | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    """A pool of realistic messages: (room, sender, text), and each as a worker's body."""

    fields: list[tuple[str, str, str]]
    bodies: list[str]

    @classmethod
    def make(cls, seed: int = 16) -> Sample:
        rng = random.Random(seed)
        words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=n)) for n in range(2, 10)]
        words += ["the", "a", "of", "and", "to", "in", "is", "it", "that", "was"]
        fields = []
        for _ in range(POOL_SIZE):
            length = rng.randint(*TEXT_CHARS)
            text = ""
            while len(text) < length:
                text += rng.choice(words) + " "
            fields.append(
                (f"room-{rng.randrange(ROOMS)}", f"user-{rng.randrange(SENDERS)}", text[:length])
            )
        bodies = [
            encode_chat_body(room, ChatMessage(sender, text)) for room, sender, text in fields
        ]
        return cls(fields, bodies)


@contextlib.contextmanager
def _store(config: RateConfig) -> Iterator[MessageStore]:
    with tempfile.TemporaryDirectory(prefix="trio-chat-store-", dir=config.directory) as folder:
        store = MessageStore.open(Path(folder))
        try:
            yield store
        finally:
            store.close()


def append_rate(sample: Sample, batch: int, config: RateConfig) -> dict[str, Any]:
    """``MessageStore.append`` of ``batch`` messages at a time, for ``config.seconds``."""
    with _store(config) as store:
        next_id, cpu = store.last_id + 1, 0.0
        durations: list[float] = []  # Each commit's, in seconds.
        deadline = time.perf_counter() + config.seconds
        while time.perf_counter() < deadline:
            ts = time.time_ns() // 1_000_000
            messages = [_stored(sample, next_id + i, ts) for i in range(batch)]
            cpu_start, wall_start = time.thread_time(), time.perf_counter()
            store.append(messages)
            durations.append(time.perf_counter() - wall_start)
            cpu += time.thread_time() - cpu_start
            next_id += batch
        stored = store.statistics()
    commits, wall = len(durations), sum(durations)
    messages_total = commits * batch
    durations.sort()
    return {
        "batch": batch,
        "commits": commits,
        "messages": messages_total,
        "seconds_in_append": wall,
        "messages_per_second": messages_total / wall,
        "us_per_commit": wall / commits * 1e6,
        "commit_ms": {
            "p50": durations[commits // 2] * 1e3,
            "p99": durations[min(commits - 1, commits * 99 // 100)] * 1e3,
            "max": durations[-1] * 1e3,
        },
        "cpu_us_per_message": cpu / messages_total * 1e6,
        "wall_over_cpu": wall / cpu if cpu else None,
        "bytes_per_message": stored["bytes"] / max(1, stored["stored"]),
    }


def _stored(sample: Sample, message_id: int, ts: int) -> StoredMessage:
    room, sender, text = sample.fields[message_id % POOL_SIZE]
    return StoredMessage(message_id, room, ts, sender, text)


def hub_rate(sample: Sample, batch: int, durable: bool, config: RateConfig) -> dict[str, Any]:
    """``HubCore.update`` of ``batch`` bodies at a time, with the store or without."""
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(_store(config)) if durable else None
        core = _hub_core(store)
        mailboxes = [
            core.join(f"worker-{w}", {(w * ROOMS + r, f"room-{r}"): f"m{w}" for r in range(ROOMS)})
            for w in range(WORKERS)
        ]
        _empty(core, mailboxes)
        position, updates, wall, cpu, fetch_wall = 0, 0, 0.0, 0.0, 0.0
        deadline = time.perf_counter() + config.seconds
        while time.perf_counter() < deadline:
            bodies = sample.bodies[position : position + batch]
            position = (position + batch) % POOL_SIZE
            cpu_start, wall_start = time.thread_time(), time.perf_counter()
            core.update(mailboxes[updates % WORKERS], bodies)
            wall += time.perf_counter() - wall_start
            cpu += time.thread_time() - cpu_start
            updates += 1
            fetch_start = time.perf_counter()
            _empty(core, mailboxes)
            fetch_wall += time.perf_counter() - fetch_start
    messages = updates * batch
    return {
        "batch": batch,
        "store": "sqlite" if durable else "memory",
        "updates": updates,
        "messages": messages,
        "messages_per_second": messages / wall,
        "us_per_message": wall / messages * 1e6,
        "us_per_update": wall / updates * 1e6,
        "cpu_us_per_message": cpu / messages * 1e6,
        "fetch_us_per_message": fetch_wall / messages * 1e6,
    }


def _hub_core(store: MessageStore | None) -> HubCore:
    """A hub core as ``hub.server.serve`` makes it, with the default settings."""
    settings = Settings()
    return HubCore(
        mailbox_size=settings.mailbox_size,
        history_size=settings.history_size,
        max_rooms=settings.max_rooms,
        presence_interval=PRESENCE_INTERVAL_SECONDS,
        presence_deliveries=PRESENCE_DELIVERIES_PER_SECOND,
        fetch_linger=FETCH_LINGER_SECONDS,
        store=store,
    )


def _empty(core: HubCore, mailboxes: list[str]) -> None:
    for mailbox_id in mailboxes:
        if core.fetch_nowait(mailbox_id, FETCH_MAX_FRAMES) is None:
            raise RuntimeError(f"mailbox {mailbox_id} was dropped: the benchmark is wrong")


def measure(config: RateConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every case, ``config.runs`` times; the raw figures of every run."""
    sample = Sample.make()
    runs = []
    for run in range(config.runs):
        log(f" store rate, run {run + 1}/{config.runs}")
        appends = []
        for batch in config.batches:
            result = append_rate(sample, batch, config)
            log(
                f"  append, batch {batch:3}: {result['messages_per_second']:9,.0f} messages/s, "
                f"{result['us_per_commit']:7.1f} µs per commit"
            )
            appends.append(result)
        hub = []
        for batch in config.batches:
            pair = {}
            for durable in (True, False) if run % 2 == 0 else (False, True):
                result = hub_rate(sample, batch, durable, config)
                pair[result["store"]] = result
                log(
                    f"  HubCore.update, batch {batch:3}, {result['store']:6}: "
                    f"{result['us_per_message']:6.2f} µs per message"
                )
            hub.append(pair)
        runs.append({"append": appends, "hub": hub})
    where = config.directory or Path(tempfile.gettempdir())
    return {
        "config": {**dataclasses.asdict(config), "directory": str(where)},
        "filesystem": _filesystem(where),
        "sqlite": sqlite3.sqlite_version,
        "runs": runs,
    }


def _filesystem(path: Path) -> str:
    """The filesystem type of ``path`` (``/proc/self/mounts``: the longest mount point)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _, mount_point, fs_type, *_ = line.split()
            inside = str(path.resolve()).startswith(mount_point.rstrip("/") + "/")
            if (inside or str(path.resolve()) == mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report_lines(result: dict[str, Any], heading: str = "##") -> list[str]:
    """The two tables, in Markdown, with what was measured and where, under a ``heading``
    (``##``: a section of its own; ``###``: in ``run.py``'s report)."""
    config, runs = result["config"], result["runs"]
    batches = config["batches"]

    def appended(i: int, key: str) -> float:
        return _median([run["append"][i][key] for run in runs])

    def hub(i: int, store: str, key: str) -> float:
        return _median([run["hub"][i][store][key] for run in runs])

    def hub_ratio(i: int, key: str) -> float:
        return _median(
            [run["hub"][i]["sqlite"][key] / run["hub"][i]["memory"][key] for run in runs]
        )

    lines = [
        heading + SECTION_TITLE.removeprefix("##"),
        "",
        "Measured by `bench/store_rate.py` (its docstring says what runs), in one process: "
        f"medians of {len(runs)} runs of {config['seconds']:g} s per case; stores in "
        f"{config['directory']} ({result['filesystem']}), SQLite {result['sqlite']}, WAL, "
        "`synchronous=NORMAL`; texts of 100-200 characters, 20 senders, 4 rooms.",
        "",
        "`MessageStore.append` alone, a transaction per call:",
        "",
        "| messages per commit | messages committed per second | µs per commit (mean) "
        "| one commit's time: p50, p99 (ms) | longest commit, all runs (ms) "
        "| CPU µs per message | wall / CPU | bytes on disk per message |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, batch in enumerate(batches):
        p50, p99 = (_median([r["append"][i]["commit_ms"][k] for r in runs]) for k in ("p50", "p99"))
        longest = max(r["append"][i]["commit_ms"]["max"] for r in runs)
        lines.append(
            f"| {batch} | {appended(i, 'messages_per_second'):,.0f} | "
            f"{appended(i, 'us_per_commit'):,.1f} | {p50:.2f}, {p99:.2f} | {longest:.1f} | "
            f"{appended(i, 'cpu_us_per_message'):.2f} | {appended(i, 'wall_over_cpu'):.2f} | "
            f"{appended(i, 'bytes_per_message'):,.0f} |"
        )
    lines += [
        "",
        "`HubCore.update`, the hub's whole write path (check the bodies, stamp, store, hand to "
        f"{WORKERS} workers' mailboxes), with the SQLite store and with `TRIO_CHAT_STORE=memory`, "
        "side by side:",
        "",
        "| messages per update | µs per message, memory | µs per message, SQLite | ratio "
        "| the store's share | messages per second through `update`, SQLite |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, batch in enumerate(batches):
        ratio = hub_ratio(i, "us_per_message")
        lines.append(
            f"| {batch} | {hub(i, 'memory', 'us_per_message'):.2f} | "
            f"{hub(i, 'sqlite', 'us_per_message'):.2f} | {ratio:.2f} | {1 - 1 / ratio:.0%} | "
            f"{hub(i, 'sqlite', 'messages_per_second'):,.0f} |"
        )
    lines += ["", "<details><summary>every run</summary>", ""]
    for n, run in enumerate(runs, 1):
        for a in run["append"]:
            lines.append(
                f"- run {n}, append, batch {a['batch']}: {a['messages']:,} messages in "
                f"{a['commits']:,} commits, {a['messages_per_second']:,.0f}/s, "
                f"{a['us_per_commit']:.1f} µs per commit (p99 {a['commit_ms']['p99']:.2f} ms, "
                f"max {a['commit_ms']['max']:.1f} ms), CPU {a['cpu_us_per_message']:.2f} µs "
                "per message"
            )
        for pair in run["hub"]:
            m, q = pair["memory"], pair["sqlite"]
            lines.append(
                f"- run {n}, update, batch {m['batch']}: memory {m['us_per_message']:.2f}, "
                f"SQLite {q['us_per_message']:.2f} µs per message; the fetches "
                f"{m['fetch_us_per_message']:.2f} and {q['fetch_us_per_message']:.2f}"
            )
    return [*lines, "", "</details>"]


def replace_section(path: Path, result: dict[str, Any]) -> None:
    """Put the tables in ``path``: in place of an earlier section of ours (up to the next
    heading of its level or above, at its level: ``run.py``'s report has it as ``###``), or at
    the end; and the raw figures in ``path``'s ``.json``, where ``run.py`` keeps them."""
    text = path.read_text() if path.exists() else ""
    title = SECTION_TITLE.lstrip("# ")
    found = re.search(rf"^(#+) {re.escape(title)}$", text, re.MULTILINE)
    if found is None:
        head, tail = text.rstrip("\n") + ("\n\n" if text.strip() else ""), ""
        section = report_lines(result)
    else:
        level = found.group(1)
        following = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE).search(text, found.end())
        head, tail = text[: found.start()], "\n" + text[following.start() :] if following else ""
        section = report_lines(result, heading=level)
    path.write_text(head + "\n".join(section) + "\n" + tail)
    raw_path = path.with_suffix(".json")
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    store = raw.get("results", {}).get("store")
    if isinstance(store, dict):
        store["store_rate"] = [result]
    else:
        raw["store_rate"] = result
    raw_path.write_text(json.dumps(raw, indent=1, default=str))


def profile(config: RateConfig, batch: int, lines: int = 25) -> None:
    """Where ``HubCore.update``'s time goes with the store (cProfile, by own time)."""
    sample = Sample.make()
    profiler = cProfile.Profile()
    profiler.runcall(hub_rate, sample, batch, True, config)
    print(f"HubCore.update with the SQLite store, batches of {batch}, {config.seconds:g} s:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RateConfig.runs)
    parser.add_argument("--seconds", type=float, default=RateConfig.seconds, help="per case")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=list(BATCHES), help="messages per commit"
    )
    parser.add_argument("--dir", type=Path, help="where the temporary stores go")
    parser.add_argument("--append", type=Path, help="put the tables in this Markdown file too")
    parser.add_argument(
        "--profile", action="store_true", help="profile HubCore.update instead (cProfile)"
    )
    args = parser.parse_args(argv)
    if any(POOL_SIZE % batch for batch in args.batches):
        parser.error(f"every batch must divide {POOL_SIZE}")
    config = RateConfig(args.runs, args.seconds, tuple(args.batches), args.dir)
    if args.profile:
        for batch in config.batches:
            profile(config, batch)
        return
    result = measure(config)
    print("\n".join(report_lines(result)))
    if args.append:
        replace_section(args.append, result)


if __name__ == "__main__":
    main()
