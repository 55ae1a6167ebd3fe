"""The two hub backends side by side: trio_chat with the manager hub, and with the Redis hub.

    python bench/hubs.py               # 3 runs of the fan-out load on each, about 3 minutes
    python bench/hubs.py --runs 5

Both servers are ``hypercorn -c hypercorn.toml trio_chat:app`` (4 workers, ``TRIO_CHAT_RATE=0``);
the second one has ``TRIO_CHAT_HUB`` pointing at a ``redis-server`` this script starts on a
free loopback port (no persistence) and stops. Each run measures one server, then the other
(alternating which goes first), under the load of ``run.py``'s fan-out scenario. The server's
CPU covers its whole process tree (workers, and the manager hub when it has one); the Redis
server's own CPU is added for the Redis hub, measured over the same window. Results go to
bench/hubs-results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen  # type: ignore[import-not-found]
from redis_server import RedisProcess  # type: ignore[import-not-found]
from run import (  # type: ignore[import-not-found]
    BENCH,
    SCENARIOS,
    TRIO_CHAT,
    Server,
    ServerSpec,
    free_port,
    log,
    machine,
)


def measure(server: Server, redis_process: RedisProcess | None) -> dict[str, Any]:
    server.settle()
    config = loadgen.LoadConfig(port=server.port, server_pid=server.pid, **_load())
    redis_before = redis_process.cpu_seconds() if redis_process else 0.0
    result: dict[str, Any] = loadgen.run(config)
    redis_cpu = redis_process.cpu_seconds() - redis_before if redis_process else 0.0
    received = result["received"] or 1
    result["redis_cpu_us_per_delivery"] = redis_cpu / received * 1e6
    result["total_cpu_us_per_delivery"] = (
        result["server_cpu_us_per_delivery"] + result["redis_cpu_us_per_delivery"]
    )
    return result


def _load() -> dict[str, Any]:
    return dict(SCENARIOS["fanout"].load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCH / "hubs-results.md")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        redis_process = RedisProcess(Path(folder), free_port())
        redis_spec = ServerSpec("trio_chat-redis", TRIO_CHAT.workers, TRIO_CHAT.args)
        servers: dict[str, Server] = {}
        try:
            servers["manager"] = Server(TRIO_CHAT, Path(folder))
            with _env("TRIO_CHAT_HUB", redis_process.url):
                servers["redis"] = Server(redis_spec, Path(folder))
            for server in servers.values():
                server.wait_ready()
            results: dict[str, list[dict[str, Any]]] = {"manager": [], "redis": []}
            for run in range(args.runs):
                order = ["manager", "redis"] if run % 2 == 0 else ["redis", "manager"]
                for name in order:
                    result = measure(servers[name], redis_process if name == "redis" else None)
                    log(f"run {run + 1} {name:8}: " + loadgen.one_line(result))
                    results[name].append(result)
        finally:
            for server in servers.values():
                server.stop()
            redis_process.stop()
    minutes = (time.monotonic() - started) / 60
    args.output.write_text(report(results, args.runs, minutes))
    log(f"wrote {args.output}")


@contextlib.contextmanager
def _env(name: str, value: str) -> Any:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def report(results: dict[str, list[dict[str, Any]]], runs: int, minutes: float) -> str:
    def median(name: str, pick: Any) -> float:
        return statistics.median(pick(r) for r in results[name])

    def ratio(pick: Any) -> str:
        pairs = list(zip(results["redis"], results["manager"], strict=True))
        if any(not pick(m) for _, m in pairs):
            return ""
        return f"{statistics.median(pick(r) / pick(m) for r, m in pairs):.2f}"

    rows = [
        ("server CPU per delivery, workers + hub (µs)", lambda r: r["total_cpu_us_per_delivery"]),
        ("of which redis-server (µs)", lambda r: r["redis_cpu_us_per_delivery"]),
        ("latency p50 (ms)", lambda r: r["latency_ms"]["p50"]),
        ("latency p99 (ms)", lambda r: r["latency_ms"]["p99"]),
        ("deliveries/s", lambda r: r["deliveries_per_second"]),
        ("loss (deliveries)", lambda r: r["loss"]),
        ("duplicates", lambda r: r["duplicates"]),
    ]
    load = _load()
    lines = [
        "# trio_chat: manager hub and Redis hub side by side",
        "",
        f"`python bench/hubs.py --runs {runs}`: {load['clients']} clients, {load['senders']} "
        f"senders, {load['rate']:g} msg/s in total, {load['duration']:g} s; both servers "
        "`hypercorn -c hypercorn.toml trio_chat:app` (4 workers), `TRIO_CHAT_RATE=0`; medians "
        f"of {runs} runs, ratio = Redis / manager measured in the same run. Took "
        f"{minutes:.1f} minutes.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine().items()) + ".",
        "",
        "| figure | manager hub | Redis hub | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, pick in rows:
        ours, theirs = median("manager", pick), median("redis", pick)
        lines.append(f"| {label} | {ours:,.2f} | {theirs:,.2f} | {ratio(pick)} |")
    orders = {name: all(r["order_ok"] for r in results[name]) for name in ("manager", "redis")}
    lines.append(
        f"| one identical order, every run | {'yes' if orders['manager'] else 'no'} | "
        f"{'yes' if orders['redis'] else 'no'} | |"
    )
    lines += ["", "Every run:", ""]
    for name in ("manager", "redis"):
        lines += [
            f"- {name} run {i + 1}: {loadgen.one_line(r)}" for i, r in enumerate(results[name])
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
