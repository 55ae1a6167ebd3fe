"""What a worker pays for a room it has no member in (issue "Rooms", part 6).

Against a running trio_chat (several workers; the kernel spreads connections over them, so
which worker a client lands on cannot be chosen):

1. open ``probes`` connections, half to the busy room (``room-0``), half to a quiet one
   (``room-1``), and read each one's worker from its welcome frame;
2. keep ``members`` busy-room connections, all on one worker (the one the most landed on), and
   one quiet-room connection on every other worker; close the rest. Every other worker then
   serves clients, but none in the busy room;
3. wait for the server to go quiet, and read every server process's CPU time over ``duration``
   seconds with nothing sent (idle);
4. publish ``rate`` messages per second in the busy room for ``duration`` seconds (from its
   members, in turn), and read the CPU time again, from the first message until every member has
   every message (or ``drain`` seconds more).

The figure is each worker's CPU in the loaded window minus what it used idle over as long: for
the workers without a member in the busy room, that is what the room costs them. The quiet
clients must receive nothing of the busy room (a frame of it is a leak, counted), and every
member must get every message.

CPU time is read two ways. ``/proc/PID/stat`` (psutil's ``cpu_times``) covers every thread the
process ever had, but counts in 10 ms ticks: over 10 s, 1 ms/s, which at 200 messages/s is
5 µs per message. ``/proc/PID/task/*/schedstat`` counts nanoseconds, but only for the threads
alive at both readings (a thread that ended in between is lost). A worker without a member
doing nothing for the room keeps the same threads, so its nanosecond figure is exact; both are
reported, with whether its threads stayed the same.

Usage: ``python bench/room_cost.py --port 8000 --server-pid PID``; ``run.py --scenario rooms``
runs it against a fresh server of each hub backend.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import loadgen

BUSY_ROOM = "room-0"
QUIET_ROOM = "room-1"


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    port: int
    server_pid: int
    host: str = "127.0.0.1"
    #: Busy-room connections kept, all on one worker.
    members: int = 10
    #: Connections opened to find them (half to each room).
    probes: int = 160
    #: Messages per second in the busy room, and for how long (the idle window is as long).
    rate: float = 200.0
    duration: float = 10.0
    #: Longest wait, after the last message, for the members to get everything.
    drain: float = 5.0
    #: Other processes whose CPU to read alongside the server's (e.g. ``{"redis": pid}``).
    extra_pids: tuple[tuple[str, int], ...] = ()


def measure(config: ProbeConfig) -> dict[str, Any]:
    """One probe (see the module docstring); the figures as a dict (see ``summarize``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_measure(config))
    return uvloop.run(_measure(config))


async def _measure(config: ProbeConfig) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load = loadgen.LoadConfig(
        port=config.port,
        host=config.host,
        clients=config.probes,
        senders=config.probes,
        rate=config.rate,
        duration=config.duration,
        rooms=2,
        procs=1,
    )
    process = loadgen.Process(load, 0, secrets.token_hex(4))
    await process.connect_all()
    try:
        members, quiet = _keep(process.clients, config.members)
        await asyncio.sleep(0.5)  # the closes reach the server
        await loop.run_in_executor(None, loadgen.wait_quiet, config.server_pid)
        idle, idle_seconds = await _cpu_over(config, asyncio.sleep(config.duration))
        sent = 0

        async def publish_and_drain() -> None:
            nonlocal sent
            sent = await _publish(members, config.rate, config.duration)
            await _drain(members, sent, time.monotonic() + config.drain)

        loaded, load_seconds = await _cpu_over(config, publish_and_drain())
    finally:
        for client in process.clients:
            client.close()
        await asyncio.sleep(0.05)  # let the close frames go out
    return _figures(config, members, quiet, sent, (idle, idle_seconds), (loaded, load_seconds))


def _keep(
    clients: list[loadgen.Client], wanted: int
) -> tuple[list[loadgen.Client], list[loadgen.Client]]:
    """Keep ``wanted`` busy-room clients of one worker, one quiet-room client on every other
    worker; close the rest."""
    busy: dict[int, list[loadgen.Client]] = collections.defaultdict(list)
    quiet: dict[int, list[loadgen.Client]] = collections.defaultdict(list)
    for client in clients:
        (busy if client.room == BUSY_ROOM else quiet)[client.worker_pid].append(client)
    chosen = max(busy, key=lambda pid: len(busy[pid]))
    members = busy[chosen][:wanted]
    others = [group[0] for pid, group in quiet.items() if pid != chosen]
    kept = {id(client) for client in members + others}
    for client in clients:
        if id(client) not in kept:
            client.close()
    return members, others


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """What one process used over a window."""

    role: str
    #: From ``/proc/PID/stat``: every thread, in 10 ms ticks.
    seconds: float
    #: From the threads' ``schedstat``: nanoseconds, threads alive at both readings only.
    thread_seconds: float
    #: The process had the same threads at both readings (``thread_seconds`` is then exact
    #: unless a thread started and ended in between).
    same_threads: bool


async def _cpu_over(config: ProbeConfig, work: Any) -> tuple[dict[int, CpuUse], float]:
    """Every server process's CPU (by pid) used while ``work`` runs, and how long it ran."""
    before = _cpu(config)
    started = time.monotonic()
    await work
    seconds = time.monotonic() - started
    after = _cpu(config)
    used = {}
    for pid, (role, cpu, threads) in after.items():
        if pid not in before:
            continue
        _, cpu_before, threads_before = before[pid]
        common = threads.keys() & threads_before.keys()
        used[pid] = CpuUse(
            role,
            cpu - cpu_before,
            sum(threads[tid] - threads_before[tid] for tid in common) / 1e9,
            threads.keys() == threads_before.keys(),
        )
    return used, seconds


def _cpu(config: ProbeConfig) -> dict[int, tuple[str, float, dict[int, int]]]:
    """Per pid: role, CPU seconds (ticks), and each thread's run time in ns (schedstat)."""
    import psutil

    roles = {pid: role for pid, (role, _) in loadgen._tree_cpu(config.server_pid).items()}
    roles.update((pid, role) for role, pid in config.extra_pids)
    times = {}
    for pid, role in roles.items():
        try:
            cpu = psutil.Process(pid).cpu_times()
            times[pid] = (role, cpu.user + cpu.system, _thread_ns(pid))
        except (psutil.Error, OSError):
            continue
    return times


def _thread_ns(pid: int) -> dict[int, int]:
    """Each thread's time on a CPU so far, in ns (``/proc/PID/task/TID/schedstat``)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            threads[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return threads


async def _publish(members: list[loadgen.Client], rate: float, duration: float) -> int:
    """Message j goes at t0 + j / rate, from the members in turn; returns how many went."""
    count = int(duration * rate)
    t0 = time.monotonic_ns()
    for j in range(count):
        due = t0 + int(j * 1e9 / rate)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
        members[j % len(members)].send_message(time.monotonic_ns() // loadgen.LATENCY_UNIT_NS)
    return count


async def _drain(members: list[loadgen.Client], sent: int, deadline: float) -> None:
    """Until every member has all ``sent`` messages, or the deadline."""
    while time.monotonic() < deadline:
        if all(len(member.ids) >= sent for member in members):
            return
        await asyncio.sleep(0.01)


def _figures(
    config: ProbeConfig,
    members: list[loadgen.Client],
    quiet: list[loadgen.Client],
    sent: int,
    idle: tuple[dict[int, CpuUse], float],
    loaded: tuple[dict[int, CpuUse], float],
) -> dict[str, Any]:
    (idle_cpu, idle_seconds), (load_cpu, load_seconds) = idle, loaded
    member_worker = members[0].worker_pid if members else 0
    processes = []
    for pid, use in sorted(load_cpu.items()):
        if pid not in idle_cpu:
            continue
        kind = use.role
        if kind == "worker":
            kind = "member worker" if pid == member_worker else "worker without a member"
        entry: dict[str, Any] = {"pid": pid, "role": kind}
        for name, get in (("", _seconds), ("threads_", _thread_seconds)):
            idle_rate = get(idle_cpu[pid]) / idle_seconds
            extra = get(use) - idle_rate * load_seconds  # what the load added over idling
            entry[name + "idle_cores"] = idle_rate
            entry[name + "load_cores"] = get(use) / load_seconds
            entry[name + "extra_cpu_seconds"] = extra
            entry[name + "us_per_message"] = extra / sent * 1e6 if sent else None
        entry["same_threads"] = use.same_threads and idle_cpu[pid].same_threads
        processes.append(entry)
    without = [p for p in processes if p["role"] == "worker without a member"]
    return {
        "config": dataclasses.asdict(config),
        "member_worker": member_worker,
        "members": len(members),
        "members_on_one_worker": len({m.worker_pid for m in members}) == 1,
        "workers_without_member": sorted(q.worker_pid for q in quiet),
        "messages": sent,
        "expected": sent * len(members),
        "delivered": sum(min(len(m.ids), sent) for m in members),
        "leaks": sum(client.leaks for client in members + quiet),
        "closed": sum(1 for client in members + quiet if client.close_code is not None),
        "idle_seconds": idle_seconds,
        "load_seconds": load_seconds,
        "processes": processes,
        "nonmember_idle_cores": _mean(p["idle_cores"] for p in without),
        "nonmember_load_cores": _mean(p["load_cores"] for p in without),
        "nonmember_extra_cores": _mean(p["extra_cpu_seconds"] / load_seconds for p in without),
        "nonmember_us_per_message": _mean(p["us_per_message"] for p in without),
        # The same from the threads' nanosecond counts (exact if their threads stayed).
        "nonmember_threads_idle_cores": _mean(p["threads_idle_cores"] for p in without),
        "nonmember_threads_load_cores": _mean(p["threads_load_cores"] for p in without),
        "nonmember_threads_us_per_message": _mean(p["threads_us_per_message"] for p in without),
        "nonmember_same_threads": all(p["same_threads"] for p in without),
        "member_us_per_message": _mean(
            p["us_per_message"] for p in processes if p["role"] == "member worker"
        ),
        "hub_us_per_message": _mean(
            p["us_per_message"] for p in processes if p["role"] in ("hub", "redis")
        ),
    }


def _seconds(use: CpuUse) -> float:
    return use.seconds


def _thread_seconds(use: CpuUse) -> float:
    return use.thread_seconds


def _mean(values: Any) -> float:
    clean = [v for v in values if v is not None]
    return statistics.fmean(clean) if clean else float("nan")


def one_line(r: dict[str, Any]) -> str:
    return (
        f"{len(r['workers_without_member'])} workers without a member: idle "
        f"{r['nonmember_threads_idle_cores'] * 1e3:.2f} ms/s, loaded "
        f"{r['nonmember_threads_load_cores'] * 1e3:.2f} ms/s: "
        f"{r['nonmember_threads_us_per_message']:+.2f} µs per busy-room message (threads' ns; "
        f"ticks {r['nonmember_us_per_message']:+.2f} µs); "
        f"member worker {r['member_us_per_message']:.1f} µs/message "
        f"({r['members']} members), hub {r['hub_us_per_message']:.1f} µs/message; "
        f"{r['delivered']}/{r['expected']} delivered, {r['leaks']} frames of another room"
    )


def summarize(r: dict[str, Any]) -> str:
    lines = [one_line(r), ""]
    for p in r["processes"]:
        lines.append(
            f"  {p['pid']:>7} {p['role']:24} idle {p['idle_cores'] * 1e3:7.2f} ms/s, loaded "
            f"{p['load_cores'] * 1e3:7.2f} ms/s, "
            + (f"{p['us_per_message']:8.2f} µs per message" if p["us_per_message"] else "-")
            + f"; threads' ns: idle {p['threads_idle_cores'] * 1e3:.3f} ms/s, loaded "
            f"{p['threads_load_cores'] * 1e3:.3f} ms/s, "
            + (
                f"{p['threads_us_per_message']:.3f} µs per message"
                if p["threads_us_per_message"] is not None
                else "-"
            )
            + ("" if p["same_threads"] else " (threads changed)")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True, help="the server's master")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--probes", type=int, default=160)
    parser.add_argument("-r", "--rate", type=float, default=200.0, help="busy-room messages/s")
    parser.add_argument("-t", "--duration", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    result = measure(
        ProbeConfig(
            port=args.port, server_pid=args.server_pid, host=args.host, members=args.members,
            probes=args.probes, rate=args.rate, duration=args.duration,
        )
    )  # fmt: skip
    print(summarize(result))
    if args.json:
        json.dump(result, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
