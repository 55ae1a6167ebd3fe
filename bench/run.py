"""Run the whole benchmark: trio_chat against the baseline, side by side, and write the table.

    python bench/run.py                      # every scenario, 3 runs each, about 35 minutes
    python bench/run.py --scenario fanout    # one scenario (fanout, sweep, batch, scale, browser,
                                             # rooms, store)
    python bench/run.py --quick              # short durations: checks that everything works
    python bench/run.py --runs 5             # medians of 5 runs

Each scenario runs trio_chat (``hypercorn -c hypercorn.toml trio_chat:app``: 4 Trio workers and
the hub) and the baseline (``hypercorn -k trio -w 1 bench/baseline.py:app``) on free loopback
ports, and measures them in turn, alternating which goes first, N times. Every figure is the
median of the N runs; every ratio is the median of the N ratios measured in the same run.
Servers are started in their own process group and always stopped (with the hub, which lives
in a session of its own); a server that did not hold a measurement is restarted before the
next one. Each server gets a fresh data directory (``TRIO_CHAT_DATA_DIR``, for the hub's SQLite
store), removed when it stops. Results go to bench/results.md (and the raw figures to
bench/results.json).

The browser scenario compares trio_chat with itself instead: default settings and
``TRIO_CHAT_WEBSOCKET_COMPRESSION=on``, each measured with the plain load generator and with
its browser mode (clients that offer permessage-deflate as Chromium does).

The rooms scenario measures three setups side by side at the same deliveries per second:
trio_chat with one room, trio_chat with 100 rooms of 10, and the baseline with one room; then,
on a fresh server of each hub backend, what a worker pays for a room it has no member in
(``room_cost.py``).

The store scenario compares trio_chat with itself: the hub's SQLite store (the default) and
``TRIO_CHAT_STORE=memory``, under the fan-out load, the rooms scenario's 100 rooms of 10 and the
sweep; then the store's own rate and its share of the hub's write path (``store_rate.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import redis_server  # noqa: E402
import room_cost  # noqa: E402
import store_rate  # noqa: E402

SERVER_START_TIMEOUT_SECONDS = 60.0
SERVER_STOP_TIMEOUT_SECONDS = 10.0
#: Before a measurement, wait (at most this long) for the server to go quiet.
SETTLE_TIMEOUT_SECONDS = 15.0
SETTLE_CPU_FRACTION = 0.05


# ---------------------------------------------------------------------------------------------
# Servers


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    name: str
    workers: int
    args: tuple[str, ...]
    #: Environment variables set for this server, over the caller's and TRIO_CHAT_RATE=0.
    env: tuple[tuple[str, str], ...] = ()
    #: The folder it starts from: this checkout, or another one (``metrics_cost.py``).
    root: Path = ROOT

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "hypercorn", *self.args, "-b", f"127.0.0.1:{port}"]


TRIO_CHAT = ServerSpec("trio_chat", 4, ("-c", str(ROOT / "hypercorn.toml"), "trio_chat:app"))
TRIO_CHAT_COMPRESSION = dataclasses.replace(
    TRIO_CHAT,
    name="trio_chat-compression",
    env=(("TRIO_CHAT_WEBSOCKET_COMPRESSION", "on"),),
)
#: The store scenario's two servers: the first is the numerator of its ratios.
TRIO_CHAT_SQLITE = dataclasses.replace(
    TRIO_CHAT, name="trio_chat-sqlite", env=(("TRIO_CHAT_STORE", "sqlite"),)
)
TRIO_CHAT_MEMORY = dataclasses.replace(
    TRIO_CHAT, name="trio_chat-memory", env=(("TRIO_CHAT_STORE", "memory"),)
)
BASELINE = ServerSpec(
    "baseline",
    1,
    ("-k", "trio", "-w", "1", "--backlog", "2048", str(BENCH / "baseline.py") + ":app"),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A running server: its port, its master's pid, its log."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = log_dir / f"{spec.name}-{self.port}.log"
        # A data directory of its own, fresh: two servers on one are refused (the hub locks
        # it), and a store left by an earlier measurement would make this one's differ.
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"data-{spec.name}-", dir=log_dir))
        environment = {
            **os.environ,
            "TRIO_CHAT_RATE": "0",
            "TRIO_CHAT_DATA_DIR": str(self.data_dir),
            **dict(spec.env),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                spec.command(self.port),
                cwd=spec.root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self._tree: list[psutil.Process] = []

    def wait_ready(self) -> None:
        """Until every worker says it is running (after its lifespan startup: hub joined)."""
        marker = f"Running on http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited at startup:\n{self.log_tail()}")
            if self.log_path.read_text(errors="replace").count(marker) >= self.spec.workers:
                self._tree = loadgen.server_tree(self.pid)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.spec.name} did not start in time:\n{self.log_tail()}")

    def settle(self) -> None:
        """Wait for the server to go quiet (the previous measurement's backlog drained)."""
        loadgen.wait_quiet(self.pid, SETTLE_TIMEOUT_SECONDS, SETTLE_CPU_FRACTION)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        tree = self._tree or _safe_tree(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
        # The hub has a session of its own; it ends with the master, or here.
        _, alive = psutil.wait_procs(tree, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _safe_tree(pid: int) -> list[psutil.Process]:
    try:
        return loadgen.server_tree(pid)
    except psutil.Error:
        return []


class Servers:
    """Both servers of a scenario; restarts one on demand."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, Server] = {}

    def get(self, spec: ServerSpec) -> Server:
        server = self.running.get(spec.name)
        if server is None or server.process.poll() is not None:
            if server is not None:
                server.stop()
            server = Server(spec, self.log_dir)
            self.running[spec.name] = server
            try:
                server.wait_ready()
            except BaseException:
                server.stop()
                del self.running[spec.name]
                raise
        server.settle()
        return server

    def restart(self, spec: ServerSpec) -> None:
        server = self.running.pop(spec.name, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.running.pop(name).stop()


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    #: "load" (one measurement), "sweep", or the kind of a scenario with a runner of its own:
    #: "browser", "rooms", "store" (see ``run_<kind>_scenario``).
    kind: str
    load: dict[str, Any]
    quick: dict[str, Any]
    start_rate: float = 0.0
    #: The browser scenario's second measurement: idle connections, for their memory.
    idle: dict[str, Any] = dataclasses.field(default_factory=dict)
    idle_quick: dict[str, Any] = dataclasses.field(default_factory=dict)


FANOUT_LOAD = dict(clients=200, senders=10, rate=100.0, duration=10.0, drain=5.0, procs=2)
FANOUT_QUICK = dict(duration=3.0, drain=3.0)
#: Connections that send nothing: connected, their RSS read, closed (no message is sent).
IDLE_LOAD = dict(
    clients=2_000,
    senders=0,
    rate=0.0,
    duration=0.0,
    drain=0.0,
    procs=2,
    connect_concurrency=500,
    connect_timeout=60.0,
)

SCENARIOS = {
    "fanout": Scenario(
        "fanout",
        "(a) fan-out: 200 clients, 10 senders, 100 msg/s in total, 10 s",
        "load",
        FANOUT_LOAD,
        FANOUT_QUICK,
    ),
    "sweep": Scenario(
        "sweep",
        "(b) sweep: 100 clients, 10 senders, rate x1.5 until loss or p99 > 250 ms, then bisected",
        "sweep",
        dict(clients=100, senders=10, duration=4.0, drain=3.0, procs=2),
        dict(duration=2.0, drain=2.0),
        start_rate=20.0,
    ),
    "batch": Scenario(
        "batch",
        f"(c) batch sweep: as (b), clients ask for {loadgen.BATCH_SUBPROTOCOL}",
        "sweep",
        dict(clients=100, senders=10, duration=4.0, drain=3.0, procs=2, batch=True),
        dict(duration=2.0, drain=2.0),
        start_rate=20.0,
    ),
    "scale": Scenario(
        "scale",
        "(d) scale: 10,000 connections, 1 sender, 1 msg/s for 10 s",
        "load",
        dict(
            clients=10_000,
            senders=1,
            rate=1.0,
            duration=10.0,
            drain=5.0,
            procs=2,
            connect_concurrency=500,
            connect_timeout=60.0,
        ),
        dict(clients=2_000, duration=3.0, connect_timeout=30.0),
    ),
    "browser": Scenario(
        "browser",
        "(e) browsers: trio_chat with default settings and with compression on, each with plain "
        "and browser clients: the fan-out load of (a), and 2,000 idle connections",
        "browser",
        FANOUT_LOAD,
        FANOUT_QUICK,
        idle=IDLE_LOAD,
        idle_quick=dict(clients=1_000, connect_timeout=30.0),
    ),
}

#: The rooms scenario's loads: the same deliveries per second (10,000) in one room of 200 and in
#: 100 rooms of 10. 20,000 (the fan-out scenario's) would be 2,000 messages/s in rooms of 10,
#: more than this 2-core machine holds with the load generator on it (p99 near 2 s).
ROOMS_ONE_ROOM = dict(clients=200, senders=10, rate=50.0, duration=10.0, drain=5.0, procs=2)
ROOMS_MANY = dict(
    clients=1_000, senders=200, rooms=100, rate=1_000.0, duration=10.0, drain=5.0, procs=2
)
ROOMS_MANY_QUICK = dict(clients=200, senders=40, rooms=20, duration=3.0, drain=3.0)
#: What a worker pays for a room it has no member in (``room_cost.ProbeConfig``).
ROOMS_PROBE = dict(members=10, probes=160, rate=200.0, duration=10.0)
ROOMS_PROBE_QUICK = dict(duration=3.0)
SCENARIOS["rooms"] = Scenario(
    "rooms",
    "(f) rooms: trio_chat with one room and with 100 rooms of 10 at the same deliveries per "
    "second, the baseline with one room; and what a worker pays for a room it has no member in",
    "rooms",
    ROOMS_ONE_ROOM,
    FANOUT_QUICK,
)

#: The store scenario's loads, each another scenario's: (key, load, quick). It also sweeps as
#: (b) does, and ends with ``store_rate.py``'s measurements.
STORE_LOADS = (
    ("fanout", FANOUT_LOAD, FANOUT_QUICK),
    ("many_rooms", ROOMS_MANY, ROOMS_MANY_QUICK),
)
STORE_SWEEP = "sweep"
#: The key of ``store_rate.measure``'s result in the store scenario's results.
STORE_RATE = "store_rate"
STORE_RATE_SECONDS = 2.0
STORE_RATE_SECONDS_QUICK = 0.5
SCENARIOS["store"] = Scenario(
    "store",
    "(g) durable history: trio_chat with the SQLite store and with TRIO_CHAT_STORE=memory, side "
    "by side, under the fan-out load of (a), the 100 rooms of 10 of (f) and the sweep of (b); "
    "then the store's own rate",
    "store",
    FANOUT_LOAD,
    FANOUT_QUICK,
    start_rate=SCENARIOS[STORE_SWEEP].start_rate,
)

SWEEP_FACTOR = 1.5
SWEEP_MAX_STEPS = 25
#: Later runs of a sweep start this many x1.5 steps below the previous run's best rate.
SWEEP_RESTART_STEPS = 3


def log(line: str) -> None:
    print(line, flush=True)


def measure_load(
    servers: Servers,
    spec: ServerSpec,
    config_args: dict[str, Any],
    label: str = "",
    describe: Callable[[dict[str, Any]], str] = loadgen.one_line,
) -> dict[str, Any]:
    server = servers.get(spec)
    config = loadgen.LoadConfig(port=server.port, server_pid=server.pid, **config_args)
    result = loadgen.run(config)
    log(f"  {label or spec.name:9}: " + describe(result))
    if not result["complete"]:
        servers.restart(spec)  # not in a known state: it may still be working off a backlog
    return result


def measure_sweeps(
    servers: Servers,
    order: tuple[ServerSpec, ...],
    config_args: dict[str, Any],
    start_rate: float,
    floor: float,
) -> dict[str, dict[str, Any]]:
    """Sweep both servers in step: each rate is measured on one server, then at once on the
    other (alternating which goes first), so both see the same minute of a noisy machine."""
    log(f"  both: sweep from {start_rate:.1f} msg/s")
    sweeps = {spec.name: loadgen.Sweep(start_rate, SWEEP_FACTOR, floor) for spec in order}
    for step in range(SWEEP_MAX_STEPS):
        active = [spec for spec in order if not sweeps[spec.name].done]
        if not active:
            break
        for spec in active if step % 2 == 0 else reversed(active):
            state = sweeps[spec.name]
            server = servers.get(spec)
            config = loadgen.LoadConfig(
                port=server.port, server_pid=server.pid, rate=state.rate, **config_args
            )
            result = loadgen.run(config)
            log(f"    {spec.name:9} {state.rate:9.1f} msg/s: " + loadgen.one_line(result))
            state.record(result)
            if not result["held"]:
                servers.restart(spec)  # overloaded: start afresh for whatever comes next
    outcomes = {}
    for spec in order:
        outcome = sweeps[spec.name].outcome()
        best = outcome["best"]
        log(
            f"  {spec.name:9}: highest rate that held: "
            + (f"{best['offered_deliveries_per_second']:,.0f} deliveries/s" if best else "none")
        )
        outcomes[spec.name] = outcome
    return outcomes


def run_scenario(
    scenario: Scenario, runs: int, quick: bool, procs: int | None, log_dir: Path
) -> dict[str, list[Any]]:
    config_args = dict(scenario.load)
    if quick:
        config_args.update(scenario.quick)
    if procs:
        config_args["procs"] = procs
    log(f"\n{scenario.title}" + (" [quick]" if quick else ""))
    results: dict[str, list[Any]] = {TRIO_CHAT.name: [], BASELINE.name: []}
    servers = Servers(log_dir)
    next_start = scenario.start_rate
    try:
        for run in range(runs):
            log(f" run {run + 1}/{runs}")
            order = (TRIO_CHAT, BASELINE) if run % 2 == 0 else (BASELINE, TRIO_CHAT)
            if scenario.kind == "load":
                for spec in order:
                    results[spec.name].append(measure_load(servers, spec, config_args))
                continue
            outcomes = measure_sweeps(servers, order, config_args, next_start, scenario.start_rate)
            for name, outcome in outcomes.items():
                results[name].append(outcome)
            next_start = next_sweep_start(outcomes, scenario.start_rate) or next_start
    finally:
        servers.stop_all()
    return results


def next_sweep_start(outcomes: dict[str, dict[str, Any]], floor: float) -> float | None:
    """Where the next run's sweep starts: a few steps below the slower server's result (None
    if a server had none)."""
    bests = [o["best"]["config"]["rate"] for o in outcomes.values() if o["best"]]
    if len(bests) != len(outcomes):
        return None
    return max(floor, float(min(bests)) / SWEEP_FACTOR**SWEEP_RESTART_STEPS)


def load_args(
    load: dict[str, Any], quick_load: dict[str, Any], quick: bool, procs: int | None
) -> dict[str, Any]:
    args = {**load, **(quick_load if quick else {})}
    if procs:
        args["procs"] = procs
    return args


def run_store_scenario(
    scenario: Scenario, runs: int, quick: bool, procs: int | None, log_dir: Path
) -> dict[str, list[Any]]:
    """Each run measures both servers (``TRIO_CHAT_SQLITE``, ``TRIO_CHAT_MEMORY``) one after the
    other (in reverse order every other run) under each of ``STORE_LOADS``, then sweeps them in
    step, then stops them: every run starts with fresh servers and an empty store. Then
    ``store_rate.py``'s measurements, with the servers stopped. Results are keyed
    ``<load>/<server>``, and ``STORE_RATE``."""
    log(f"\n{scenario.title}" + (" [quick]" if quick else ""))
    specs = (TRIO_CHAT_SQLITE, TRIO_CHAT_MEMORY)
    keys = [key for key, _, _ in STORE_LOADS] + [STORE_SWEEP]
    results: dict[str, list[Any]] = {f"{k}/{spec.name}": [] for k in keys for spec in specs}
    sweep = SCENARIOS[STORE_SWEEP]
    sweep_args = load_args(sweep.load, sweep.quick, quick, procs)
    next_start = sweep.start_rate
    servers = Servers(log_dir)
    try:
        for run in range(runs):
            log(f" run {run + 1}/{runs}")
            order = specs if run % 2 == 0 else specs[::-1]
            for key, load, quick_load in STORE_LOADS:
                args = load_args(load, quick_load, quick, procs)
                for spec in order:
                    result = measure_load(servers, spec, args, f"{key} {spec.name}")
                    results[f"{key}/{spec.name}"].append(result)
            outcomes = measure_sweeps(servers, order, sweep_args, next_start, sweep.start_rate)
            for name, outcome in outcomes.items():
                results[f"{STORE_SWEEP}/{name}"].append(outcome)
            next_start = next_sweep_start(outcomes, sweep.start_rate) or next_start
            servers.stop_all()
    finally:
        servers.stop_all()
    seconds = STORE_RATE_SECONDS_QUICK if quick else STORE_RATE_SECONDS
    results[STORE_RATE] = [store_rate.measure(store_rate.RateConfig(runs, seconds), log)]
    return results


@dataclasses.dataclass(frozen=True)
class Setup:
    """A row of the browser scenario: a server, and the client it is measured with."""

    server: ServerSpec
    browser: bool

    @property
    def server_text(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.server.env) or "default settings"

    @property
    def client_text(self) -> str:
        return "browser (offers permessage-deflate)" if self.browser else "plain (offers nothing)"

    @property
    def label(self) -> str:
        return f"{self.server_text}, {'browser' if self.browser else 'plain'} client"


#: The first is the reference of every ratio.
BROWSER_SETUPS = (
    Setup(TRIO_CHAT, browser=False),
    Setup(TRIO_CHAT, browser=True),
    Setup(TRIO_CHAT_COMPRESSION, browser=False),
    Setup(TRIO_CHAT_COMPRESSION, browser=True),
)


def idle_line(r: dict[str, Any]) -> str:
    """One idle-connections measurement, in a line."""
    per = r["rss_delta_per_connection"]
    return (
        f"{r['clients_connected']:,}/{r['config']['clients']:,} idle connections, "
        + (f"{per / 1024:.1f} KiB each above idle" if per is not None else "RSS unknown")
        + (f", deflate {r['deflate_negotiated']:,}" if r["config"]["browser"] else "")
    )


def run_browser_scenario(
    scenario: Scenario, runs: int, quick: bool, procs: int | None, log_dir: Path
) -> dict[str, list[Any]]:
    """Each run measures every setup (``BROWSER_SETUPS``, in turn, alternating the order) under
    the fan-out load, then each on a freshly started server with idle connections: what an
    earlier measurement allocated and freed would otherwise hide part of the growth."""
    fanout_args = {**scenario.load, **(scenario.quick if quick else {})}
    idle_args = {**scenario.idle, **(scenario.idle_quick if quick else {})}
    if procs:
        fanout_args["procs"] = idle_args["procs"] = procs
    log(f"\n{scenario.title}" + (" [quick]" if quick else ""))
    results: dict[str, list[Any]] = {setup.label: [] for setup in BROWSER_SETUPS}
    servers = Servers(log_dir)
    try:
        for run in range(runs):
            log(f" run {run + 1}/{runs}")
            order = BROWSER_SETUPS if run % 2 == 0 else BROWSER_SETUPS[::-1]
            for setup in order:
                args = {**fanout_args, "browser": setup.browser}
                result = measure_load(servers, setup.server, args, setup.label)
                results[setup.label].append({"fanout": result})
            for setup in order:
                servers.restart(setup.server)
                args = {**idle_args, "browser": setup.browser}
                result = measure_load(servers, setup.server, args, setup.label, idle_line)
                results[setup.label][-1]["idle"] = result
    finally:
        servers.stop_all()
    return results


@dataclasses.dataclass(frozen=True)
class RoomsSetup:
    """A row of the rooms scenario: a server and a load."""

    key: str
    server: ServerSpec
    load: dict[str, Any]
    quick: dict[str, Any]

    def args(self, quick: bool, procs: int | None) -> dict[str, Any]:
        args = {**self.load, **(self.quick if quick else {})}
        if procs:
            args["procs"] = procs
        return args

    def label(self, quick: bool) -> str:
        a = self.args(quick, None)
        rooms = a.get("rooms", 0)
        shape = (
            f"{rooms} rooms of {a['clients'] // rooms}" if rooms else f"one room of {a['clients']}"
        )
        return f"{self.server.name}, {shape}, {a['senders']} senders, {a['rate']:,.0f} msg/s"


#: (a), (b), (c): the first is the reference of (b)'s ratios, the last of (a)'s.
ROOMS_SETUPS = (
    RoomsSetup("one_room", TRIO_CHAT, ROOMS_ONE_ROOM, FANOUT_QUICK),
    RoomsSetup("many_rooms", TRIO_CHAT, ROOMS_MANY, ROOMS_MANY_QUICK),
    RoomsSetup("baseline", BASELINE, ROOMS_ONE_ROOM, FANOUT_QUICK),
)
#: The no-member probes' keys in the results, by hub backend.
NO_MEMBER_MANAGER, NO_MEMBER_REDIS = "no_member_manager", "no_member_redis"


def run_rooms_scenario(
    scenario: Scenario, runs: int, quick: bool, procs: int | None, log_dir: Path
) -> dict[str, list[Any]]:
    """Each run measures (a), (b) and (c) in turn (alternating the order) on fresh servers,
    stops them, then probes what a worker pays for a room it has no member in: on a fresh
    trio_chat with the manager hub, and with the Redis hub if ``redis-server`` is installed."""
    log(f"\n{scenario.title}" + (" [quick]" if quick else ""))
    results: dict[str, list[Any]] = {setup.key: [] for setup in ROOMS_SETUPS}
    results[NO_MEMBER_MANAGER] = []
    probes = [NO_MEMBER_MANAGER]
    if redis_server.available():
        results[NO_MEMBER_REDIS] = []
        probes.append(NO_MEMBER_REDIS)
    else:
        log("  redis-server not installed: the Redis hub's probe is left out")
    probe_args = {**ROOMS_PROBE, **(ROOMS_PROBE_QUICK if quick else {})}
    servers = Servers(log_dir)
    try:
        for run in range(runs):
            log(f" run {run + 1}/{runs}")
            order = ROOMS_SETUPS if run % 2 == 0 else ROOMS_SETUPS[::-1]
            for setup in order:
                args = setup.args(quick, procs)
                label = f"{_row_name(setup.key)} {setup.server.name}"
                results[setup.key].append(measure_load(servers, setup.server, args, label))
            servers.stop_all()  # the probes' servers run alone; the next run starts afresh
            for key in probes if run % 2 == 0 else probes[::-1]:
                results[key].append(_probe(key == NO_MEMBER_REDIS, probe_args, log_dir))
    finally:
        servers.stop_all()
    return results


def _probe(redis: bool, probe_args: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """One no-member probe on a fresh trio_chat (with a fresh ``redis-server`` as its hub if
    ``redis``), stopped afterwards."""
    redis_process = redis_server.RedisProcess(log_dir, free_port()) if redis else None
    spec = TRIO_CHAT
    extra: tuple[tuple[str, int], ...] = ()
    if redis_process is not None:
        env = (("TRIO_CHAT_HUB", redis_process.url),)
        spec = dataclasses.replace(TRIO_CHAT, name="trio_chat-redis", env=env)
        extra = (("redis", redis_process.pid),)
    server = None
    try:
        server = Server(spec, log_dir)
        server.wait_ready()
        config = room_cost.ProbeConfig(
            port=server.port, server_pid=server.pid, extra_pids=extra, **probe_args
        )
        result = room_cost.measure(config)
    finally:
        if server is not None:
            server.stop()
        if redis_process is not None:
            redis_process.stop()
    log(f"  no member, {spec.name:15}: " + room_cost.one_line(result))
    return result


# ---------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass(frozen=True)
class Figure:
    label: str
    get: Callable[[Any], float | None]
    fmt: str = "{:,.1f}"
    target: str = ""
    #: Checks the target from (trio_chat median, ratio median): True, False, or None (no target).
    check: Callable[[float, float], bool] | None = None
    show_ratio: bool = True


# What else the machine was doing during a measurement: shown with every scenario, since on a
# shared machine it moves the absolute figures.
MACHINE_FIGURES = [
    Figure(
        "other processes on the machine (cores)",
        lambda r: r["other_cpu_cores"],
        "{:.2f}",
        show_ratio=False,
    ),
    Figure(
        "interrupt handling, loopback TCP included (cores)",
        lambda r: r["irq_cpu_cores"],
        "{:.2f}",
        show_ratio=False,
    ),
    Figure(
        "stolen by the hypervisor (cores)",
        lambda r: r["steal_cpu_cores"],
        "{:.2f}",
        show_ratio=False,
    ),
]


def _latency(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: r["latency_ms"][name]


def _best(
    get: Callable[[dict[str, Any]], float | None],
) -> Callable[[dict[str, Any]], float | None]:
    """A figure of a sweep's best step (none if even the first step failed)."""
    return lambda outcome: get(outcome["best"]) if outcome["best"] else math.nan


LOAD_FIGURES = {
    "fanout": [
        Figure(
            "server CPU per delivery (µs)",
            lambda r: r["server_cpu_us_per_delivery"],
            "{:.2f}",
            "≤ 1.25 x baseline",
            lambda v, q: q <= 1.25,
        ),
        Figure("latency p50 (ms)", _latency("p50"), "{:.1f}"),
        Figure("latency p90 (ms)", _latency("p90"), "{:.1f}"),
        Figure("latency p99 (ms)", _latency("p99"), "{:.1f}", "≤ 25 ms", lambda v, q: v <= 25),
        Figure("latency max (ms)", _latency("max"), "{:.1f}"),
        Figure(
            "loss (deliveries)", lambda r: r["loss"], "{:,.0f}", "0", lambda v, q: v == 0, False
        ),
        Figure("duplicates", lambda r: r["duplicates"], "{:,.0f}", "0", lambda v, q: v == 0, False),
        Figure(
            "one identical order (runs)",
            lambda r: float(r["order_ok"]),
            "{:.0%}",
            "100%",
            lambda v, q: v == 1,
            False,
        ),
        Figure("deliveries/s", lambda r: r["deliveries_per_second"], "{:,.0f}"),
        Figure(
            "clients on the busiest worker",
            loadgen.busiest_worker_share,
            "{:.0%}",
            show_ratio=False,
        ),
        Figure(
            "load generator CPU per delivery (µs)",
            lambda r: r["loadgen_cpu_us_per_delivery"],
            "{:.2f}",
            show_ratio=False,
        ),
        *MACHINE_FIGURES,
    ],
    "scale": [
        Figure("connections", lambda r: r["clients_connected"], "{:,.0f}"),
        Figure(
            "every client connected (runs)",
            lambda r: float(r["clients_connected"] == r["config"]["clients"]),
            "{:.0%}",
            "100%",
            lambda v, q: v == 1,
            False,
        ),
        Figure("connect rate (connections/s)", lambda r: r["connect_rate"], "{:,.0f}"),
        Figure("latency p50 (ms)", _latency("p50"), "{:.1f}"),
        Figure("latency p99 (ms)", _latency("p99"), "{:.1f}", "≤ 500 ms", lambda v, q: v <= 500),
        Figure(
            "loss (deliveries)", lambda r: r["loss"], "{:,.0f}", "0", lambda v, q: v == 0, False
        ),
        Figure(
            "one identical order (runs)",
            lambda r: float(r["order_ok"]),
            "{:.0%}",
            "100%",
            lambda v, q: v == 1,
            False,
        ),
        Figure(
            "memory per connection (KiB, total RSS / connections)",
            lambda r: (r["rss_per_connection"] or math.nan) / 1024,
            "{:.1f}",
        ),
        Figure(
            "memory per connection above idle (KiB)",
            lambda r: (r["rss_delta_per_connection"] or math.nan) / 1024,
            "{:.1f}",
        ),
        Figure("server CPU per delivery (µs)", lambda r: r["server_cpu_us_per_delivery"], "{:.2f}"),
        *MACHINE_FIGURES,
    ],
}


def sweep_figures(batch: bool) -> list[Figure]:
    held = Figure(
        "highest rate that held (deliveries/s)",
        lambda o: o["best"]["offered_deliveries_per_second"] if o["best"] else 0.0,
        "{:,.0f}",
        "≥ 500,000 and ≥ 0.8 x baseline" if batch else "≥ 1.6 x baseline",
        (lambda v, q: v >= 500_000 and q >= 0.8) if batch else (lambda v, q: q >= 1.6),
    )
    return [
        held,
        Figure(
            "  measured deliveries/s at that rate",
            _best(lambda r: r["deliveries_per_second"]),
            "{:,.0f}",
        ),
        Figure("  latency p99 at that rate (ms)", _best(_latency("p99")), "{:.1f}"),
        Figure(
            "  server CPU per delivery at that rate (µs)",
            _best(lambda r: r["server_cpu_us_per_delivery"]),
            "{:.2f}",
        ),
        Figure(
            "  load generator CPU per delivery (µs)",
            _best(lambda r: r["loadgen_cpu_us_per_delivery"]),
            "{:.2f}",
            show_ratio=False,
        ),
        Figure(
            "  messages per frame at that rate",
            _best(lambda r: r["messages_per_frame"]),
            "{:.1f}",
        ),
        Figure(
            "  clients that got the batch subprotocol",
            _best(lambda r: r["batch_selected"]),
            "{:,.0f}",
            show_ratio=False,
        ),
        Figure(
            "  other processes on the machine (cores)",
            _best(lambda r: r["other_cpu_cores"]),
            "{:.2f}",
            show_ratio=False,
        ),
    ]


def figures_for(name: str) -> list[Figure]:
    if name in LOAD_FIGURES:
        return LOAD_FIGURES[name]
    return sweep_figures(batch=name == "batch")


def _median(values: Sequence[float | None]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def _median_ratio(values: Sequence[float | None], bases: Sequence[float | None]) -> float:
    """The median of the runs' ratios, each value to the base measured in the same run."""
    return _median(
        [
            value / base
            for value, base in zip(values, bases, strict=True)
            if value is not None and base and not math.isnan(value) and not math.isnan(base)
        ]
    )


def _fmt(fmt: str, value: float) -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


def table(name: str, results: dict[str, list[Any]]) -> list[str]:
    return comparison_table(figures_for(name), results[TRIO_CHAT.name], results[BASELINE.name])


def comparison_table(
    figures: list[Figure],
    ours: list[Any],
    base: list[Any],
    columns: tuple[str, str] = ("trio_chat -w 4", "baseline -w 1"),
) -> list[str]:
    """A row per figure: the medians of both columns' runs, and the median of the runs'
    ratios (``ours[i]`` / ``base[i]``, measured side by side)."""
    lines = [
        f"| figure | {columns[0]} | {columns[1]} | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | :-: |",
    ]
    for figure in figures:
        a = [figure.get(r) for r in ours]
        b = [figure.get(r) for r in base]
        med_a, med_b = _median(a), _median(b)
        ratio = _median_ratio(a, b)
        met = ""
        if figure.check and not math.isnan(med_a):
            met = "yes" if figure.check(med_a, ratio) else "**no**"
        ratio_text = _fmt("{:.2f}", ratio) if figure.show_ratio else ""
        lines.append(
            f"| {figure.label} | {_fmt(figure.fmt, med_a)} | {_fmt(figure.fmt, med_b)} | "
            f"{ratio_text} | {figure.target} | {met} |"
        )
    return lines


def _fanout(get: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """A figure of a browser-scenario run's fan-out measurement."""
    return lambda run: get(run["fanout"])


BROWSER_FIGURES = [
    Figure(
        "server CPU per delivery (µs)",
        _fanout(lambda r: r["server_cpu_us_per_delivery"]),
        "{:.2f}",
    ),
    Figure("latency p50 (ms)", _fanout(_latency("p50")), "{:.1f}"),
    Figure("latency p99 (ms)", _fanout(_latency("p99")), "{:.1f}"),
    Figure(
        "every delivery once, in one order (runs)",
        _fanout(lambda r: float(r["complete"] and r["order_ok"])),
        "{:.0%}",
        show_ratio=False,
    ),
    Figure(
        "memory per idle connection (KiB)",
        lambda run: (run["idle"]["rss_delta_per_connection"] or math.nan) / 1024,
        "{:.1f}",
    ),
    Figure(
        "compressed messages' size on the wire",
        _fanout(lambda r: r["deflate_wire_ratio"] if r["deflate_wire_ratio"] else math.nan),
        "{:.0%}",
        show_ratio=False,
    ),
    Figure(
        "load generator CPU per delivery (µs)",
        _fanout(lambda r: r["loadgen_cpu_us_per_delivery"]),
        "{:.2f}",
        show_ratio=False,
    ),
    Figure(
        "other processes on the machine (cores)",
        _fanout(lambda r: r["other_cpu_cores"]),
        "{:.2f}",
        show_ratio=False,
    ),
]


def _negotiated(runs: list[dict[str, Any]], kind: str) -> str:
    """permessage-deflate negotiated on "N of C" connections (medians over the runs)."""
    negotiated = _median([run[kind]["deflate_negotiated"] for run in runs])
    connected = _median([run[kind]["clients_connected"] for run in runs])
    return f"{_fmt('{:,.0f}', negotiated)} of {_fmt('{:,.0f}', connected)}"


def browser_table(results: dict[str, list[Any]]) -> list[str]:
    """One row per setup (which server, which client); a figure with a ratio shows it in
    brackets: the median of the runs' ratios to the first row's figure of the same run."""
    reference = results[BROWSER_SETUPS[0].label]
    lines = [
        "| server | client | permessage-deflate negotiated (fan-out; idle) | "
        + " | ".join(figure.label for figure in BROWSER_FIGURES)
        + " |",
        "| --- | --- | --- |" + " ---: |" * len(BROWSER_FIGURES),
    ]
    for setup in BROWSER_SETUPS:
        runs = results[setup.label]
        cells = [
            setup.server_text,
            setup.client_text,
            f"{_negotiated(runs, 'fanout')}; {_negotiated(runs, 'idle')}",
        ]
        for figure in BROWSER_FIGURES:
            values = [figure.get(run) for run in runs]
            cell = _fmt(figure.fmt, _median(values))
            if figure.show_ratio:
                bases = [figure.get(run) for run in reference]
                cell += f" (x{_fmt('{:.2f}', _median_ratio(values, bases))})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def browser_per_run_lines(results: dict[str, list[Any]]) -> list[str]:
    lines = []
    for label, runs in results.items():
        for i, run in enumerate(runs, 1):
            lines.append(f"- {label}, run {i}: {loadgen.one_line(run['fanout'])}")
            lines.append(f"- {label}, run {i}: {idle_line(run['idle'])}")
    return lines


def _per_message(r: dict[str, Any]) -> float | None:
    """Server CPU per message sent (µs): what a message costs, its deliveries included."""
    cpu, sent = r["server_cpu_seconds"], r["messages_sent"]
    return cpu / sent * 1e6 if cpu is not None and sent else None


def _hub_per_delivery(r: dict[str, Any]) -> float | None:
    hub = r["server_cpu_by_role"].get("hub")
    return hub / r["received"] * 1e6 if hub is not None and r["received"] else None


_ROOMS_CPU = Figure(
    "server CPU per delivery (µs)", lambda r: r["server_cpu_us_per_delivery"], "{:.1f}"
)
_ROOMS_P99 = Figure("latency p99 (ms)", _latency("p99"), "{:.1f}")
#: The rooms table's columns: what each row shows (medians).
ROOMS_FIGURES = [
    Figure("deliveries/s", lambda r: r["deliveries_per_second"], "{:,.0f}"),
    _ROOMS_CPU,
    Figure("of which the hub (µs)", _hub_per_delivery, "{:.1f}"),
    Figure("server CPU per message (µs)", _per_message, "{:,.0f}"),
    Figure("latency p50 (ms)", _latency("p50"), "{:.1f}"),
    _ROOMS_P99,
    Figure("clients on the busiest worker", loadgen.busiest_worker_share, "{:.0%}"),
    Figure(
        "load generator CPU per delivery (µs)", lambda r: r["loadgen_cpu_us_per_delivery"], "{:.1f}"
    ),
    Figure("other processes (cores)", lambda r: r["other_cpu_cores"], "{:.2f}"),
]
#: The ratios shown under it: (row, reference row), each the median of the runs' ratios.
ROOMS_RATIOS = (("many_rooms", "one_room"), ("one_room", "baseline"))
ROOMS_RATIO_FIGURES = (_ROOMS_CPU, _ROOMS_P99)


def _row_name(key: str) -> str:
    return "(" + "abc"[[setup.key for setup in ROOMS_SETUPS].index(key)] + ")"


def rooms_table(results: dict[str, list[Any]], quick: bool) -> list[str]:
    """One row per setup (medians of the runs), the ratios side by side, and the no-member
    probes."""
    lines = [
        "| setup | " + " | ".join(f.label for f in ROOMS_FIGURES) + " | loss, duplicates, "
        "frames of another room (all runs) | one identical order (per room) |",
        "| --- |" + " ---: |" * len(ROOMS_FIGURES) + " ---: | ---: |",
    ]
    for setup in ROOMS_SETUPS:
        runs = results[setup.key]
        cells = [f"{_row_name(setup.key)} {setup.label(quick)}"]
        cells += [_fmt(f.fmt, _median([f.get(r) for r in runs])) for f in ROOMS_FIGURES]
        faults = [sum(r[k] for r in runs) for k in ("loss", "duplicates", "leaks")]
        cells.append(", ".join(f"{n:,}" for n in faults))
        cells.append(f"{sum(r['order_ok'] for r in runs)} of {len(runs)} runs")
        lines.append("| " + " | ".join(cells) + " |")
    ratio_figures = ROOMS_RATIO_FIGURES
    lines += [
        "",
        "| ratio (median of the runs' ratios) | "
        + " | ".join(f.label for f in ratio_figures)
        + " |",
        "| --- |" + " ---: |" * len(ratio_figures),
    ]
    for key, base in ROOMS_RATIOS:
        cells = [f"{_row_name(key)} / {_row_name(base)}"]
        for figure in ratio_figures:
            values = [figure.get(r) for r in results[key]]
            bases = [figure.get(r) for r in results[base]]
            cells.append(_fmt("{:.2f}", _median_ratio(values, bases)))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *no_member_table(results)]


#: The no-member probes' columns (medians of the runs).
NO_MEMBER_FIGURES = [
    Figure("idle (ms CPU/s)", lambda r: r["nonmember_threads_idle_cores"] * 1e3, "{:.2f}"),
    Figure("loaded (ms CPU/s)", lambda r: r["nonmember_threads_load_cores"] * 1e3, "{:.2f}"),
    Figure(
        "added per busy-room message (µs)",
        lambda r: r["nonmember_threads_us_per_message"],
        "{:+.2f}",
    ),
    Figure(
        "same from /proc/PID/stat, 10 ms ticks (µs)",
        lambda r: r["nonmember_us_per_message"],
        "{:+.1f}",
    ),
    Figure("member worker per message (µs)", lambda r: r["member_us_per_message"], "{:,.0f}"),
    Figure("hub or redis-server per message (µs)", lambda r: r["hub_us_per_message"], "{:,.0f}"),
]


def no_member_table(results: dict[str, list[Any]]) -> list[str]:
    probes = {NO_MEMBER_MANAGER: "manager", NO_MEMBER_REDIS: "Redis"}
    lines = [
        "What a worker pays for a room it has no member in: one worker holds the busy room's "
        "members, each other worker a client of another room; the figures are the workers "
        "without a member in the busy room (mean of them, median of the runs), from their "
        "threads' nanosecond counters.",
        "",
        "| hub | busy room | "
        + " | ".join(f.label for f in NO_MEMBER_FIGURES)
        + " | delivered, frames of another room (all runs) |",
        "| --- | --- |" + " ---: |" * len(NO_MEMBER_FIGURES) + " ---: |",
    ]
    for key, hub in probes.items():
        runs = results.get(key)
        if not runs:
            continue
        first = runs[0]
        busy = (
            f"{first['config']['rate']:g} msg/s, {first['members']} members on one worker; "
            f"{len(first['workers_without_member'])} workers without"
        )
        cells = [hub, busy]
        cells += [_fmt(f.fmt, _median([f.get(r) for r in runs])) for f in NO_MEMBER_FIGURES]
        delivered = sum(r["delivered"] for r in runs)
        expected = sum(r["expected"] for r in runs)
        cells.append(f"{delivered:,}/{expected:,}, {sum(r['leaks'] for r in runs)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rooms_per_run_lines(results: dict[str, list[Any]], quick: bool) -> list[str]:
    lines = []
    for setup in ROOMS_SETUPS:
        for i, run in enumerate(results[setup.key], 1):
            lines.append(
                f"- {_row_name(setup.key)} {setup.label(quick)}, run {i}: {loadgen.one_line(run)}"
            )
    for key in (NO_MEMBER_MANAGER, NO_MEMBER_REDIS):
        for i, run in enumerate(results.get(key, []), 1):
            hub = key.removeprefix("no_member_")
            lines.append(f"- no member, {hub} hub, run {i}: {room_cost.one_line(run)}")
    return lines


def per_run_lines(name: str, results: dict[str, list[Any]]) -> list[str]:
    lines = []
    for server, runs in results.items():
        for i, result in enumerate(runs, 1):
            if isinstance(result, dict) and "steps" in result:
                steps = ", ".join(
                    f"{s['offered_deliveries_per_second']:,.0f}"
                    + (
                        ""
                        if s["held"]
                        else f" ✗ ({', '.join(loadgen.failures(s))}; "
                        f"p99 {s['latency_ms']['p99']:.0f} ms)"
                    )
                    for s in result["steps"]
                )
                lines.append(f"- {server} run {i}: deliveries/s offered: {steps}")
            else:
                lines.append(f"- {server} run {i}: {loadgen.one_line(result)}")
    return lines


def _hub_per_message(r: dict[str, Any]) -> float | None:
    """The hub process's CPU per message sent (µs): where the store's writes are paid."""
    hub, sent = r["server_cpu_by_role"].get("hub"), r["messages_sent"]
    return hub / sent * 1e6 if hub is not None and sent else None


#: Within 10 % of ``TRIO_CHAT_STORE=memory`` (issue 16).
STORE_CPU_TARGET = 1.10
STORE_RATE_TARGET = 0.90
STORE_LOAD_FIGURES = [
    Figure(
        "server CPU per delivery (µs)",
        lambda r: r["server_cpu_us_per_delivery"],
        "{:.2f}",
        f"≤ {STORE_CPU_TARGET:.2f} x memory",
        lambda v, q: q <= STORE_CPU_TARGET,
    ),
    Figure("  of which the hub (µs)", _hub_per_delivery, "{:.2f}"),
    Figure("server CPU per message (µs)", _per_message, "{:,.0f}"),
    Figure("hub CPU per message (µs)", _hub_per_message, "{:,.1f}"),
    # (a)'s latency target is not this one's: shown without it.
    *[
        dataclasses.replace(f, target="", check=None)
        for f in LOAD_FIGURES["fanout"]
        if f.label.startswith(("latency p", "deliveries/s"))
    ],
    *[f for f in LOAD_FIGURES["fanout"] if not f.show_ratio],
]
STORE_SWEEP_FIGURES = [
    dataclasses.replace(
        sweep_figures(batch=False)[0],
        target=f"≥ {STORE_RATE_TARGET:.2f} x memory",
        check=lambda v, q: q >= STORE_RATE_TARGET,
    ),
    *sweep_figures(batch=False)[1:4],
    Figure("  of which the hub (µs)", _best(_hub_per_delivery), "{:.2f}"),
    Figure("  hub CPU per message (µs)", _best(_hub_per_message), "{:,.1f}"),
    *[
        f
        for f in sweep_figures(batch=False)[4:]
        if "frame" not in f.label and "batch" not in f.label
    ],
]


def _shape(args: dict[str, Any]) -> str:
    rooms = args.get("rooms", 0)
    room = f"{rooms} rooms of {args['clients'] // rooms}" if rooms else "one room"
    return (
        f"{args['clients']:,} clients in {room}, {args['senders']} senders, "
        f"{args['rate']:,.0f} msg/s in total, {args['duration']:g} s"
    )


def store_table(results: dict[str, list[Any]], quick: bool) -> list[str]:
    """A table per load and one for the sweep, SQLite against memory (medians; ratios side by
    side)."""
    columns = ("SQLite store", "memory")
    sqlite, memory = TRIO_CHAT_SQLITE.name, TRIO_CHAT_MEMORY.name
    lines = []
    for key, load, quick_load in STORE_LOADS:
        title = _shape(load_args(load, quick_load, quick, None))
        lines += [f"### {key}: {title}", ""]
        lines += comparison_table(
            STORE_LOAD_FIGURES, results[f"{key}/{sqlite}"], results[f"{key}/{memory}"], columns
        )
        lines.append("")
    lines += [f"### {SCENARIOS[STORE_SWEEP].title.removeprefix('(b) ')}", ""]
    lines += comparison_table(
        STORE_SWEEP_FIGURES,
        results[f"{STORE_SWEEP}/{sqlite}"],
        results[f"{STORE_SWEEP}/{memory}"],
        columns,
    )
    return lines


def machine() -> dict[str, str]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Hypercorn": version("hypercorn"),
        "Trio": version("trio"),
        "wsproto": version("wsproto"),
        "h11": version("h11"),
        "load generator loop": "uvloop " + version("uvloop")
        if version("uvloop") != "not installed"
        else "asyncio",
        "commit": commit or "?",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_results(
    path: Path,
    all_results: dict[str, dict[str, list[Any]]],
    args: argparse.Namespace,
    elapsed: float,
) -> None:
    info = machine()
    lines = [
        "# trio_chat benchmark results",
        "",
        f"`python bench/run.py {' '.join(sys.argv[1:])}`: medians of {args.runs} runs; "
        "each ratio is trio_chat / baseline (in the browser scenario: this row / the default "
        "server with plain clients; in the rooms scenario, as its ratio table says; in the store "
        "scenario, the SQLite store / TRIO_CHAT_STORE=memory), the "
        "median of the ratios measured side by side in the same run. Each figure is a median "
        "of its own, so figures of one server may come from different runs."
        f" Took {elapsed / 60:.1f} minutes.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "The load generator runs on the same machine and shares its cores; its own CPU and "
        "what other processes used meanwhile are shown, because on a shared machine they move "
        "the absolute figures. See bench/README.md for what each figure means.",
    ]
    for name, results in all_results.items():
        scenario = SCENARIOS[name]
        lines += ["", f"## {scenario.title}" + (" [quick]" if args.quick else ""), ""]
        if scenario.kind == "store":
            lines += store_table(results, args.quick)
            lines += ["", "<details><summary>every measurement</summary>", ""]
            lines += per_run_lines(name, {k: v for k, v in results.items() if k != STORE_RATE})
            lines += ["", "</details>"]
            # Last, so that ``store_rate.py --append`` can replace it alone.
            if results.get(STORE_RATE):
                lines += ["", *store_rate.report_lines(results[STORE_RATE][0], heading="###")]
            continue
        if scenario.kind == "rooms":
            lines += rooms_table(results, args.quick)
            lines += ["", "<details><summary>every run</summary>", ""]
            lines += rooms_per_run_lines(results, args.quick)
            lines += ["", "</details>"]
            continue
        browser = scenario.kind == "browser"
        lines += browser_table(results) if browser else table(name, results)
        lines += ["", "<details><summary>every run</summary>", ""]
        lines += browser_per_run_lines(results) if browser else per_run_lines(name, results)
        lines += ["", "</details>"]
    path.write_text("\n".join(lines) + "\n")
    raw = {"machine": info, "args": vars(args), "results": all_results}
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (may be repeated)",
    )
    parser.add_argument("--sweep", action="store_true", help="same as --scenario sweep")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short durations, fewer clients")
    parser.add_argument("--procs", type=int, help="load-generator processes (per scenario default)")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "results.md",
        help="the table; the raw figures go next to it (same name, .json)",
    )
    args = parser.parse_args(argv)
    names = list(args.scenario or [])
    if args.sweep and "sweep" not in names:
        names.append("sweep")
    names = names or list(SCENARIOS)
    started = time.monotonic()
    all_results: dict[str, dict[str, list[Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="trio-chat-bench-") as log_dir:
        for name in names:
            scenario = SCENARIOS[name]
            runner = {
                "browser": run_browser_scenario,
                "rooms": run_rooms_scenario,
                "store": run_store_scenario,
            }.get(scenario.kind, run_scenario)
            all_results[name] = runner(scenario, args.runs, args.quick, args.procs, Path(log_dir))
            write_results(args.output, all_results, args, time.monotonic() - started)
    log(f"\nwrote {args.output} in {(time.monotonic() - started) / 60:.1f} minutes")
    print(args.output.read_text())


if __name__ == "__main__":
    main()
