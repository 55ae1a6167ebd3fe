"""Soak: memory stays flat and nothing leaks while clients misbehave for minutes.

    python bench/soak.py              # 4 workers, 300 readers, 3 minutes -> soak-results.md
    python bench/soak.py --minutes 1  # shorter

Against ``hypercorn -c hypercorn.toml trio_chat:app`` (4 workers, every setting at its default):
- readers stay connected and check that they get every message, in order, once;
- senders chat at a steady rate (within the default per-connection rate limit);
- stallers connect with a small receive buffer and never read: the server must drop them
  (1013) once their buffer is full, without anyone else noticing; some at the start, and
  ``--late-stallers`` more one by one through the first half of the measured window, so that
  evictions happen while memory is being watched;
- churners connect, read their opening frames and leave, in a loop.

It reports the server's memory (RSS of every process: master, workers, hub), file descriptors
and threads after a warm-up and at the end, each worker's Trio tasks and open connections (from
``/healthz``), and what every kind of client saw. It reuses the
test suite's WebSocket client and server fixture (tests/wsclient.py, tests/servers.py), so it
starts and stops the server the same careful way: loopback, a free port, nothing left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import psutil
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import (  # noqa: E402
    HypercornServer,
    chat_client,
    healthz_of_every_worker,
    hypercorn_server,
)
from wsclient import ConnectionClosed, WebSocketClient, open_websocket  # noqa: E402

WARM_UP_SECONDS = 10.0
STALLER_RECEIVE_BUFFER = 16_384
MESSAGE_BYTES = 4000  # Large enough that stallers fill their buffers within the soak.


@dataclasses.dataclass
class Tally:
    delivered: int = 0
    gaps: int = 0
    duplicates: int = 0
    readers_closed: int = 0
    sent: int = 0
    send_errors: int = 0
    churn_cycles: int = 0
    churn_failures: int = 0
    stallers_closed_1013: int = 0
    stallers_other: dict[int, int] = dataclasses.field(default_factory=dict)


def server_snapshot(server: HypercornServer) -> dict[int, dict[str, Any]]:
    """RSS, file descriptors and threads of every process of the server (hub included)."""
    master = psutil.Process(server.process.pid)
    processes = [master, *master.children(recursive=True)]
    processes += [psutil.Process(pid) for pid in server.hub_pids if psutil.pid_exists(pid)]
    seen: dict[int, dict[str, Any]] = {}
    for process in processes:
        try:
            with process.oneshot():
                seen[process.pid] = {
                    "rss": process.memory_info().rss,
                    "fds": process.num_fds(),
                    "threads": process.num_threads(),
                    "name": " ".join(process.cmdline()[-2:]),
                }
        except psutil.NoSuchProcess:
            pass
    return seen


async def worker_health(server: HypercornServer, pids: set[int]) -> dict[int, dict[str, Any]]:
    """Each worker's tasks, threads and connections, from its ``/healthz``."""
    answers = await healthz_of_every_worker(server, pids, 200)
    return {
        pid: {key: answer[key] for key in ("tasks", "threads", "connections")}
        for pid, answer in answers.items()
    }


async def reader(client: WebSocketClient, tally: Tally, stop: trio.Event) -> None:
    last_id = None
    try:
        while not stop.is_set():
            for line in str(await client.receive_raw()).split("\n"):
                if not line.startswith('{"type":"message"'):
                    continue
                message_id = int(line.split('"id":', 1)[1].split(",", 1)[0])
                if last_id is not None and message_id <= last_id:
                    tally.duplicates += 1
                    continue
                if last_id is not None and message_id != last_id + 1:
                    tally.gaps += message_id - last_id - 1
                last_id = message_id
                tally.delivered += 1
    except (ConnectionClosed, trio.TooSlowError):
        tally.readers_closed += 1


async def sender(client: WebSocketClient, rate: float, tally: Tally, stop: trio.Event) -> None:
    text = "x" * MESSAGE_BYTES
    next_at = trio.current_time()
    while not stop.is_set():
        try:
            await client.send("soak", text)
            tally.sent += 1
        except ConnectionClosed:
            tally.send_errors += 1
            return
        next_at += 1 / rate
        await trio.sleep_until(next_at)


async def churner(server: HypercornServer, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            async with chat_client(server):
                tally.churn_cycles += 1
        except (ConnectionClosed, OSError, trio.TooSlowError):
            tally.churn_failures += 1


async def sample_worker_rss(
    server: HypercornServer, workers: set[int], every: float, samples: list[float]
) -> None:
    """The workers' RSS in all (MiB), every ``every`` seconds: a trend, not two points."""
    processes = [psutil.Process(pid) for pid in workers]
    while True:
        samples.append(sum(process.memory_info().rss for process in processes) / 2**20)
        await trio.sleep(every)


async def late_stallers(
    server: HypercornServer,
    stack: AsyncExitStack,
    stallers: list[WebSocketClient],
    count: int,
    within: float,
) -> None:
    """Open ``count`` more clients that never read, evenly over ``within`` seconds."""
    for _ in range(count):
        await trio.sleep(within / max(count, 1))
        stallers.append(
            await stack.enter_async_context(
                open_websocket(server.port, receive_buffer=STALLER_RECEIVE_BUFFER)
            )
        )


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    stop = trio.Event()
    # The default rate limit is 5 messages a second per connection: stay under it.
    per_sender = args.rate / args.senders
    env = {"TRIO_CHAT_LOG_LEVEL": "WARNING"}
    async with hypercorn_server(workers=4, env=env) as server, AsyncExitStack() as stack:
        readers = [
            await stack.enter_async_context(chat_client(server)) for _ in range(args.readers)
        ]
        stallers = [
            await stack.enter_async_context(
                open_websocket(server.port, receive_buffer=STALLER_RECEIVE_BUFFER)
            )
            for _ in range(args.stallers)
        ]
        senders = [
            await stack.enter_async_context(chat_client(server)) for _ in range(args.senders)
        ]
        workers = {client.welcome["worker"] for client in readers}
        started = time.monotonic()
        measured = args.minutes * 60 - args.warm_up
        async with trio.open_nursery() as nursery:
            for client in readers:
                nursery.start_soon(reader, client, tally, stop)
            for client in senders:
                nursery.start_soon(reader, client, Tally(), stop)  # Senders read their echoes.
                nursery.start_soon(sender, client, per_sender, tally, stop)
            for _ in range(args.churners):
                nursery.start_soon(churner, server, tally, stop)
            await trio.sleep(args.warm_up)
            at_start = server_snapshot(server)
            health_start = await worker_health(server, workers)
            rss_samples: list[float] = []
            nursery.start_soon(sample_worker_rss, server, workers, args.sample_every, rss_samples)
            nursery.start_soon(
                late_stallers, server, stack, stallers, args.late_stallers, measured / 2
            )
            await trio.sleep(measured)
            at_end = server_snapshot(server)
            health_end = await worker_health(server, workers)
            stop.set()
            nursery.cancel_scope.cancel()
        duration = time.monotonic() - started

        async def read_at_last(staller: WebSocketClient) -> None:
            # Now it reads, and finds what the server did to it. (Having answered no ping, it
            # may also have been closed as a dead peer, with no close frame: -1.)
            code = -1
            with suppress(trio.TooSlowError):
                code = await staller.wait_closed()
            if code == 1013:
                tally.stallers_closed_1013 += 1
            else:
                tally.stallers_other[code] = tally.stallers_other.get(code, 0) + 1

        async with trio.open_nursery() as nursery:
            for staller in stallers:
                nursery.start_soon(read_at_last, staller)
        evicted = sum("event=evicted" in line for line in server.output)
    return {
        "tally": tally,
        "start": at_start,
        "end": at_end,
        "health_start": health_start,
        "rss_samples": rss_samples,
        "health_end": health_end,
        "duration": duration,
        "evicted": evicted,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    tally: Tally = result["tally"]
    start, end = result["start"], result["end"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Soak results",
        "",
        f"`python bench/soak.py --minutes {args.minutes:g}` on {when}, "
        f"{os.cpu_count()} cores: `hypercorn -c hypercorn.toml trio_chat:app` (4 workers), "
        f"{args.readers} readers, {args.senders} senders at {args.rate:g} msg/s in total "
        f"({MESSAGE_BYTES}-byte messages), {args.stallers} clients that never read, "
        f"{args.churners} clients connecting and leaving in a loop, {result['duration']:.0f} s "
        f"(memory is read after a {args.warm_up:g} s warm-up and at the end).",
        "",
        "| process | RSS after warm-up (MiB) | RSS at the end (MiB) | fds start → end "
        "| threads start → end |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for pid, first in start.items():
        last = end.get(pid)
        if last is None:
            continue
        lines.append(
            f"| {pid} {first['name']} | {first['rss'] / 2**20:.1f} | {last['rss'] / 2**20:.1f} "
            f"| {first['fds']} → {last['fds']} | {first['threads']} → {last['threads']} |"
        )
    total_start = sum(p["rss"] for p in start.values()) / 2**20
    total_end = sum(p["rss"] for p in end.values() if p) / 2**20
    lines += [
        f"| **all** | **{total_start:.1f}** | **{total_end:.1f}** | | |",
        "",
        "| worker (`/healthz`) | connections start → end | Trio tasks start → end "
        "| threads start → end |",
        "| --- | --- | --- | --- |",
    ]
    for pid, first in sorted(result["health_start"].items()):
        last = result["health_end"][pid]
        lines.append(
            f"| {pid} | {first['connections']} → {last['connections']} "
            f"| {first['tasks']} → {last['tasks']} | {first['threads']} → {last['threads']} |"
        )
    samples = result["rss_samples"]
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    lines += [
        "",
        f"Workers' RSS in all, every {args.sample_every:g} s after the warm-up (MiB): "
        + ", ".join(f"{sample:.0f}" for sample in samples),
        f"(first third's mean {sum(first) / len(first):.1f}, last third's "
        f"{sum(last) / len(last):.1f}).",
    ]
    stallers = args.stallers + args.late_stallers
    lines += [
        "",
        "(Trio tasks follow the connections and the churn: besides each open connection's, "
        "Hypercorn keeps a closed WebSocket connection's handler task until its ping loop "
        "next wakes, up to `websocket_ping_interval` (15 s) later; they end then.)",
        "",
        f"- messages sent: {tally.sent:,}; deliveries to readers: {tally.delivered:,}; "
        f"gaps: {tally.gaps}; duplicates: {tally.duplicates}; readers disconnected: "
        f"{tally.readers_closed}; send errors: {tally.send_errors}",
        f"- clients that never read ({args.stallers} at the start, {args.late_stallers} during "
        f"the measured window), closed with 1013: {tally.stallers_closed_1013} of {stallers}"
        + (f" (others: {tally.stallers_other})" if tally.stallers_other else ""),
        f"- connect/leave cycles: {tally.churn_cycles:,} ({tally.churn_failures} failed)",
        f"- evictions logged by the server (too slow, 1013): {result['evicted']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument(
        "--warm-up",
        type=float,
        default=WARM_UP_SECONDS,
        help="seconds before the first memory reading (the clients that never read are dropped "
        "after a minute or two at the default load: a warm-up past that shows the plateau)",
    )
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="messages a second, in total")
    parser.add_argument("--stallers", type=int, default=20)
    parser.add_argument(
        "--late-stallers",
        type=int,
        default=10,
        help="clients that never read, opened one by one in the first half after the warm-up",
    )
    parser.add_argument("--churners", type=int, default=10)
    parser.add_argument(
        "--sample-every", type=float, default=10.0, help="seconds between RSS samples"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "soak-results.md")
    args = parser.parse_args(argv)
    if args.rate / args.senders > 5:
        parser.error("keep each sender under the default rate limit of 5 messages a second")
    result = trio.run(soak, args)
    text = report(args, result)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
