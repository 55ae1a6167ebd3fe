"""Soak: memory stays flat and nothing leaks while clients misbehave for minutes.

    python bench/soak.py                       # 3 minutes -> soak-results.md
    python bench/soak.py --minutes 1           # shorter
    python bench/soak.py --compression on      # with TRIO_CHAT_WEBSOCKET_COMPRESSION=on
    python bench/soak.py --plain-clients       # clients that offer no extension

Against ``hypercorn -c hypercorn.toml trio_chat:app`` (4 workers, every setting at its default,
or ``--compression on|off``). Every client is browser-like by default: it offers
permessage-deflate word for word as Chromium does, and compresses and inflates if the server
accepts (``--plain-clients``: none offers it). The clients:
- readers stay connected and check that they get every message, in order, once;
- senders chat at a steady rate (within the default per-connection rate limit);
- stallers connect with a small receive buffer and never read: the server must drop them
  (1013) once their buffer is full, without anyone else noticing; some at the start, and
  ``--late-stallers`` more one by one through the first half of the measured window, so that
  evictions happen while memory is being watched;
- churners connect, read their opening frames and leave, in a loop.

It reports the server's memory (RSS of every process: master, workers, hub), file descriptors
and threads after a warm-up and at the end, the workers' RSS every 10 s from the moment the
clients are connected (to see where it levels off), each worker's Trio tasks and open
connections (from ``/healthz``), what every kind of client saw, and how many connections of
each kind negotiated permessage-deflate. It reuses the
test suite's WebSocket client and server fixture (tests/wsclient.py, tests/servers.py), so it
starts and stops the server the same careful way: loopback, a free port, nothing left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import string
import sys
import time
from collections import Counter
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
from wsclient import (  # noqa: E402
    CHROMIUM_EXTENSION_OFFER,
    ConnectionClosed,
    WebSocketClient,
    open_websocket,
)

WARM_UP_SECONDS = 10.0
STALLER_RECEIVE_BUFFER = 16_384
MESSAGE_BYTES = 4000  # Large enough that stallers fill their buffers within the soak.
#: Message text is drawn from these, at random: text that compresses about as little as prose
#: (to 60 % or so), so that stallers fill their buffers with compression on too (a repeated
#: character would compress to a few bytes a message, and they never would).
MESSAGE_ALPHABET = string.ascii_lowercase + " "
COMPRESSION_VARIABLE = "TRIO_CHAT_WEBSOCKET_COMPRESSION"
DEFLATE = "permessage-deflate"
#: The kinds of client, in the order the report lists them.
CLIENT_KINDS = ("readers", "senders", "stallers", "churners")


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
    #: Connections opened, and those that negotiated permessage-deflate, by kind of client.
    opened: Counter[str] = dataclasses.field(default_factory=Counter)
    deflated: Counter[str] = dataclasses.field(default_factory=Counter)

    def count_connection(self, kind: str, client: WebSocketClient) -> WebSocketClient:
        self.opened[kind] += 1
        self.deflated[kind] += DEFLATE in client.extensions
        return client


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
    next_at = trio.current_time()
    while not stop.is_set():
        try:
            await client.send("soak", "".join(random.choices(MESSAGE_ALPHABET, k=MESSAGE_BYTES)))
            tally.sent += 1
        except ConnectionClosed:
            tally.send_errors += 1
            return
        next_at += 1 / rate
        await trio.sleep_until(next_at)


async def churner(
    server: HypercornServer, tally: Tally, stop: trio.Event, options: dict[str, Any]
) -> None:
    while not stop.is_set():
        try:
            async with chat_client(server, **options) as client:
                tally.count_connection("churners", client)
                tally.churn_cycles += 1
        except (ConnectionClosed, OSError, trio.TooSlowError):
            tally.churn_failures += 1


async def sample_worker_rss(
    workers: set[int], every: float, samples: list[tuple[float, float]]
) -> None:
    """(seconds since the start, the workers' RSS in all in MiB), every ``every`` seconds: a
    trend, not two points."""
    processes = [psutil.Process(pid) for pid in workers]
    started = trio.current_time()
    while True:
        rss = sum(process.memory_info().rss for process in processes) / 2**20
        samples.append((trio.current_time() - started, rss))
        await trio.sleep(every)


async def open_staller(
    server: HypercornServer, stack: AsyncExitStack, tally: Tally, options: dict[str, Any]
) -> WebSocketClient:
    """A client that never reads, with a small receive buffer; closed with ``stack``."""
    client = await stack.enter_async_context(
        open_websocket(server.port, receive_buffer=STALLER_RECEIVE_BUFFER, **options)
    )
    return tally.count_connection("stallers", client)


async def late_stallers(
    server: HypercornServer,
    stack: AsyncExitStack,
    stallers: list[WebSocketClient],
    count: int,
    within: float,
    tally: Tally,
    options: dict[str, Any],
) -> None:
    """Open ``count`` more clients that never read, evenly over ``within`` seconds."""
    for _ in range(count):
        await trio.sleep(within / max(count, 1))
        stallers.append(await open_staller(server, stack, tally, options))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    stop = trio.Event()
    # The default rate limit is 5 messages a second per connection: stay under it.
    per_sender = args.rate / args.senders
    env = {"TRIO_CHAT_LOG_LEVEL": "WARNING"}
    if args.compression:
        env[COMPRESSION_VARIABLE] = args.compression
    options = {"deflate": not args.plain_clients}
    async with hypercorn_server(workers=4, env=env) as server, AsyncExitStack() as stack:

        async def open_chat_client(kind: str) -> WebSocketClient:
            client = await stack.enter_async_context(chat_client(server, **options))
            return tally.count_connection(kind, client)

        readers = [await open_chat_client("readers") for _ in range(args.readers)]
        stallers = [await open_staller(server, stack, tally, options) for _ in range(args.stallers)]
        senders = [await open_chat_client("senders") for _ in range(args.senders)]
        workers = {client.welcome["worker"] for client in readers}
        started = time.monotonic()
        measured = args.minutes * 60 - args.warm_up
        rss_samples: list[tuple[float, float]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_worker_rss, workers, args.sample_every, rss_samples)
            for client in readers:
                nursery.start_soon(reader, client, tally, stop)
            for client in senders:
                nursery.start_soon(reader, client, Tally(), stop)  # Senders read their echoes.
                nursery.start_soon(sender, client, per_sender, tally, stop)
            for _ in range(args.churners):
                nursery.start_soon(churner, server, tally, stop, options)
            await trio.sleep(args.warm_up)
            at_start = server_snapshot(server)
            health_start = await worker_health(server, workers)
            nursery.start_soon(
                late_stallers,
                server,
                stack,
                stallers,
                args.late_stallers,
                measured / 2,
                tally,
                options,
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
    setting = (
        f"{COMPRESSION_VARIABLE}={args.compression}"
        if args.compression
        else f"{COMPRESSION_VARIABLE} not set: its default"
    )
    clients = (
        "plain clients (none offers an extension)"
        if args.plain_clients
        else "browser-like clients (each offers "
        f"`Sec-WebSocket-Extensions: {CHROMIUM_EXTENSION_OFFER}`, as Chromium does)"
    )
    lines = [
        "# Soak results",
        "",
        f"`python bench/soak.py {' '.join(sys.argv[1:])}` on {when}, "
        f"{os.cpu_count()} cores: `hypercorn -c hypercorn.toml trio_chat:app` (4 workers, "
        f"{setting}); {clients}: {args.readers} readers, {args.senders} senders at "
        f"{args.rate:g} msg/s in total ({MESSAGE_BYTES}-byte messages of random letters), "
        f"{args.stallers} clients that never read, {args.churners} clients connecting and "
        f"leaving in a loop, {result['duration']:.0f} s (memory is read after a "
        f"{args.warm_up:g} s warm-up and at the end).",
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
    lines += ["", *rss_series(args, result["rss_samples"])]
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
        "- permessage-deflate negotiated: "
        + ", ".join(
            f"{kind} {tally.deflated[kind]:,} of {tally.opened[kind]:,}" for kind in CLIENT_KINDS
        )
        + " connections",
    ]
    return "\n".join(lines) + "\n"


def rss_series(args: argparse.Namespace, samples: list[tuple[float, float]]) -> list[str]:
    """The workers' RSS samples as a table, a row a minute (at the default ``--sample-every``),
    so that one sees where it levels off; samples of the warm-up are in italics."""
    per_row = max(1, round(60 / args.sample_every))
    lines = [
        f"Workers' RSS in all (MiB), every {args.sample_every:g} s from the moment the clients "
        f"were connected (in italics: during the {args.warm_up:g} s warm-up):",
        "",
        "| from | "
        + " | ".join(f"+{i * args.sample_every:g} s" for i in range(per_row))
        + " | row's mean | change from the row before |",
        "| ---: |" + " ---: |" * (per_row + 2),
    ]
    previous = None
    for start in range(0, len(samples), per_row):
        row = samples[start : start + per_row]
        cells = [f"_{rss:.0f}_" if at < args.warm_up else f"{rss:.0f}" for at, rss in row]
        cells += [""] * (per_row - len(row))
        mean = sum(rss for _, rss in row) / len(row)
        change = "" if previous is None else f"{mean - previous:+.1f}"
        lines.append(f"| {row[0][0]:.0f} s | " + " | ".join(cells) + f" | {mean:.1f} | {change} |")
        previous = mean
    measured = [rss for at, rss in samples if at >= args.warm_up]
    if measured:
        third = max(1, len(measured) // 3)
        first, last = measured[:third], measured[-third:]
        lines += [
            "",
            f"After the warm-up: first third's mean {sum(first) / len(first):.1f} MiB, last "
            f"third's {sum(last) / len(last):.1f} MiB.",
        ]
    return lines


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
    parser.add_argument(
        "--compression",
        choices=("on", "off"),
        help=f"set {COMPRESSION_VARIABLE} for the server (by default: not set)",
    )
    parser.add_argument(
        "--plain-clients",
        action="store_true",
        help="clients offer no extension (by default they offer permessage-deflate as Chromium)",
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
