"""A worker process's own supervision: ending promptly, and never outliving its server.

Run by the lifespan for the worker's whole life, beside the hub link:

- **The master's shutdown event.** Hypercorn's master tells its workers that a stop (SIGINT or
  SIGTERM to the master) or a reload (SIGHUP) has begun only by setting a shared
  ``multiprocessing.Event``; its worker then stops accepting and waits up to
  ``graceful_timeout`` for open connections to finish, which a chat's never do, without telling
  the app. So the worker polls the event too (``hypercorn_worker``) and, once it is set,
  closes every session at once with 1001 (going away): Hypercorn then finds nothing to wait
  for, a stop takes a fraction of a second, and a reload's outage is the new workers' start.
- **SIGTERM.** Hypercorn's master stops the remaining workers with SIGTERM as soon as the first
  one exits (and again from its exit handler), which would cut every open WebSocket without a
  close frame. So the worker handles SIGTERM itself: the first one closes every session with
  1001 (going away), which lets Hypercorn's own graceful shutdown finish at once; later ones
  are ignored.
- **An orphaned worker.** Hypercorn's workers outlive a master that was killed (SIGKILL): they
  would serve on with no hub (it ends with the master, and no new one may start for a server
  that is gone) and nobody to stop them. So a worker whose master has gone says goodbye to its
  clients (1001) and ends. The master's exit is awaited on a pidfd in the worker's own event
  loop: no thread.
- **A watchdog.** A send to a client that stopped reading cannot be cancelled in Hypercorn, so
  once shutdown has begun, if the worker is still there ``EXIT_GRACE_SECONDS`` later, it ends
  the process itself.
- **Tuning** the interpreter of a long-running worker with many connections
  (``tune_worker_process``).

And, started by the lifespan before the worker joins its hub, **its server's port claims**
(``hold_ports``) when the server's hub is shared (Redis, or a hub started by hand): no hub
process of its own holds them, so its workers do (``hub.port_claim``). Everything there runs in
the event loop, on non-blocking sockets: binding a name is one system call, and the holder of a
claim is asked with Trio's sockets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Protocol

import trio

from . import hypercorn_worker, process_watch
from .hub.port_claim import (
    ASK_TIMEOUT_SECONDS,
    CLAIM_RETRY_SECONDS,
    MAX_ANSWER_BYTES,
    UNSURE_CLAIM_WAIT_SECONDS,
    Claimant,
    Holder,
    HolderAnswer,
    PortClaimed,
    Verdict,
    claim_name,
    claims_supported,
    judge,
    peer_credentials,
    settle,
    try_claim,
)
from .hypercorn_worker import ListeningPort, ShutdownEvent
from .logs import log_event
from .protocol import CloseCode

#: After closing every session on SIGTERM, how long Hypercorn has to shut the worker down (the
#: ``graceful_timeout`` of hypercorn.toml).
EXIT_GRACE_SECONDS = 5.0
#: How often the master's shutdown event is looked at: a stop or a reload closes the sessions
#: this long after it began, at most. (Hypercorn's own worker looks every 0.1 s.) Each look
#: takes the event's lock, a semaphore the master holds only while it sets or clears the flag.
SHUTDOWN_EVENT_POLL_SECONDS = 0.05
#: Cyclic garbage collector thresholds of a serving worker (Python's defaults: 700, 10, 10). See
#: ``tune_worker_process``.
GC_THRESHOLDS = (50_000, 20, 100)
#: How long a thread waiting for the GIL lets the worker's Trio thread keep it (Python's
#: default: 5 ms). See ``tune_worker_process``.
SWITCH_INTERVAL_SECONDS = 0.0005
#: How often a worker of a server with a shared hub tries again to claim the ports it does not
#: hold: a claim ends with its holder (a reload replaces every worker, one of the servers that
#: share a port stops), and until one of the others takes it, nothing keeps another chat off.
RECLAIM_INTERVAL_SECONDS = 1.0


class Supervised(Protocol):
    """What supervision needs of a worker."""

    pid: int
    #: Set when the worker's shutdown has begun.
    shutting_down: trio.Event

    @property
    def closing(self) -> bool: ...

    @property
    def connections(self) -> int:
        """Sessions in the room."""

    @property
    def open_sessions(self) -> int:
        """Sessions running, evicted ones still closing included."""

    def close_all_sessions(self, code: CloseCode = CloseCode.GOING_AWAY) -> None: ...


async def supervise(
    worker: Supervised,
    shutdown_event: ShutdownEvent | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch over ``worker`` until cancelled (at the end of the lifespan); started once every
    watch is in place. ``shutdown_event``: the Hypercorn master's, in a Hypercorn worker."""
    async with trio.open_nursery() as nursery:
        # Each watch is started once it is in place (the signal handler installed, the
        # master's pidfd open): a SIGTERM right after startup must not find the default action.
        await nursery.start(close_sessions_on_sigterm, worker)
        nursery.start_soon(exit_if_stuck, worker)
        if shutdown_event is not None:
            nursery.start_soon(close_sessions_on_shutdown_event, worker, shutdown_event)
        master = multiprocessing.parent_process()
        if master is not None and master.pid is not None:
            await nursery.start(shut_down_when_orphaned, worker, master.pid)
        task_status.started()


def in_worker_process() -> bool:
    """Whether this is a worker process of its own (Hypercorn's), whose interpreter and whose
    exit are ours; in any other process (a test run, an embedding server) they are not."""
    return multiprocessing.parent_process() is not None


async def close_sessions_on_sigterm(
    worker: Supervised, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with contextlib.ExitStack() as stack:
        try:
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGTERM))
        except RuntimeError:
            # Not in the main thread (an embedding server): termination is its business.
            task_status.started()
            return
        task_status.started()
        async for _ in signals:
            if worker.closing:
                continue  # The master's second SIGTERM: already on our way out.
            log_event("terminating", pid=worker.pid, connections=worker.connections)
            _begin_shutdown(worker)


async def close_sessions_on_shutdown_event(worker: Supervised, event: ShutdownEvent) -> None:
    """Once the master has set its shutdown event, close every session at once.

    Which close code: a stop and a reload look the same from here. The master sets the one
    event for both (``shutdown()`` on SIGINT/SIGTERM, ``reload()`` on SIGHUP, in
    hypercorn/run.py), no signal reaches the workers, and what differs comes later (on a stop
    the master SIGTERMs the other workers once the first has exited; on a reload it waits for
    every worker and starts new ones), after the sessions had to be closed. So both get 1001
    (going away), which is true of both: this worker is going away either way. 1012 (service
    restart) would be false on a stop, and its registration asks clients to wait 5 to 30 s
    before reconnecting, which a reload does not need (the master keeps the sockets listening,
    and new connections wait in the backlog for the new workers).
    """
    # ``is_set`` takes the event's lock: briefly, as the master only holds it to set or clear
    # the flag; Hypercorn's own worker calls it from its Trio thread the same way. Polled: the
    # event has nothing to wait on from an event loop but a thread, and one look every 50 ms is
    # cheaper than a thread blocked for the worker's whole life.
    while not event.is_set():  # noqa: ASYNC110
        await trio.sleep(SHUTDOWN_EVENT_POLL_SECONDS)
    if not worker.closing:  # Else SIGTERM or an orphaned worker got there first.
        log_event("shutdown_begun", pid=worker.pid, connections=worker.connections)
        _begin_shutdown(worker)
    # Hypercorn then waits for the connections to end, its WebSocket pingers included, which
    # sleep for the ping interval before they see that their WebSocket has closed: they are
    # ended as soon as they are all that is left of a connection (until the lifespan ends).
    while True:
        hypercorn_worker.end_closed_websockets()
        await trio.sleep(SHUTDOWN_EVENT_POLL_SECONDS)


async def shut_down_when_orphaned(
    worker: Supervised,
    master_pid: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    await wait_for_exit(master_pid, task_status=task_status)
    log_event("master_gone", logging.WARNING, pid=worker.pid, master=master_pid)
    _begin_shutdown(worker)


async def exit_if_stuck(worker: Supervised) -> None:
    """Once shutdown has begun (SIGTERM, the master gone, or Hypercorn cancelling sessions at
    the end of its graceful period), make sure the worker process does end."""
    await worker.shutting_down.wait()
    await trio.sleep(EXIT_GRACE_SECONDS)
    # Still here: sessions are stuck sending to clients that stopped reading, or nobody is
    # left to end the process (an orphaned worker).
    log_event("forced_exit", logging.WARNING, pid=worker.pid, open_sessions=worker.open_sessions)
    if in_worker_process():
        logging.shutdown()
        os._exit(0)


async def wait_for_exit(
    pid: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Until process ``pid`` has exited: its pidfd becomes readable (polled where the system
    has no pidfds). Started once the pidfd is open."""
    try:
        pidfd = process_watch.open_pidfd(pid)
    except process_watch.NoPidfd:
        task_status.started()
        # Nothing to wait on where the system has no pidfds: polling is all there is.
        while process_watch.is_alive(pid):  # noqa: ASYNC110
            await trio.sleep(process_watch.POLL_SECONDS)
        return
    task_status.started()
    if pidfd is None:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def hold_ports(
    ports: Sequence[ListeningPort],
    master_pid: int,
    chat: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Claim ``ports`` for ``chat``, on behalf of a server (of master ``master_pid``) whose hub
    is shared; started once each port is claimed, or found claimed for the same chat;
    ``PortClaimed`` instead if one is another chat's. Then, until cancelled, answer who holds
    the claims this worker holds, and try every ``RECLAIM_INTERVAL_SECONDS`` to claim the
    others: if one turns out to be held for another chat (its server started while nobody held
    the claim), warn, once per such server, since a running server cannot be refused."""
    if not claims_supported():
        task_status.started()
        return
    refused: PortClaimed | None = None
    async with trio.open_nursery() as nursery:
        claims = _WorkerClaims(master_pid, chat, nursery)
        try:
            for listening in ports:
                await claims.claim(listening)
        except PortClaimed as error:
            refused = error
            nursery.cancel_scope.cancel()  # Gives up the ports claimed so far.
        else:
            task_status.started()
            while True:
                await trio.sleep(RECLAIM_INTERVAL_SECONDS)
                for listening in ports:
                    await claims.claim_again(listening)
    if refused is not None:
        raise refused  # Outside the nursery, which would wrap it in a group.


class _WorkerClaims:
    """A worker's share of its server's port claims."""

    def __init__(self, master_pid: int, chat: str, nursery: trio.Nursery) -> None:
        self._master_pid = master_pid
        self._chat = chat
        self._nursery = nursery
        self._held: set[int] = set()
        #: The other chats' servers found on our ports, by master (or holder) pid: warned of.
        self._warned: set[int] = set()

    async def claim(self, listening: ListeningPort) -> None:
        """At startup: claim ``listening``'s port, or find it claimed for this chat."""
        port = listening.port
        deadline = trio.current_time() + UNSURE_CLAIM_WAIT_SECONDS
        while not self._take(listening):
            holder = await ask_holder(port)
            out_of_time = trio.current_time() >= deadline
            if settle(port, self._claimant(listening), holder, out_of_time=out_of_time):
                return
            await trio.sleep(CLAIM_RETRY_SECONDS)

    async def claim_again(self, listening: ListeningPort) -> None:
        """While serving: take ``listening``'s claim if its holder has gone, or see who has
        it. (Seeing who has it takes a connection, which the holder answers at once: the
        answer is read each time rather than remembered by holder pid, which would save no
        round trip.)"""
        port = listening.port
        if port in self._held:
            return
        if self._take(listening):
            log_event("port_claim_taken", logging.DEBUG, pid=os.getpid(), port=port)
            return
        holder = await ask_holder(port)
        if holder is not None and judge(holder, self._chat) is Verdict.ANOTHER_CHAT:
            self._warn(listening, holder)

    def _take(self, listening: ListeningPort) -> bool:
        sock = try_claim(listening.port)
        if sock is None:
            return False
        self._held.add(listening.port)
        answer = self._claimant(listening).encode()
        self._nursery.start_soon(_answer, trio.socket.from_stdlib_socket(sock), answer)
        return True

    def _claimant(self, listening: ListeningPort) -> Claimant:
        return Claimant(self._master_pid, listening.address, self._chat)

    def _warn(self, listening: ListeningPort, holder: Holder) -> None:
        other = holder.claimant
        server = other.master_pid if other is not None else holder.pid
        if server in self._warned:
            return
        self._warned.add(server)
        log_event(
            "port_shared_with_another_chat",
            logging.WARNING,
            pid=os.getpid(),
            port=listening.port,
            other_master=other.master_pid if other is not None else "unknown",
            other_address=other.address if other is not None else "unknown",
            other_chat=other.chat if other is not None else f"pid {holder.pid}, uid {holder.uid}",
            problem="another chat's server started on this port while nobody held its claim: "
            "the kernel spreads new connections over both servers, splitting people between "
            "two chats; stop one of them",
        )


async def _answer(sock: trio.socket.SocketType, answer: bytes) -> None:
    """Tell whoever connects to a claim this worker holds who holds it, until cancelled (the
    claim ends with the socket)."""
    with sock:
        while True:
            peer, _ = await sock.accept()
            with peer, trio.move_on_after(ASK_TIMEOUT_SECONDS), contextlib.suppress(OSError):
                await peer.send(answer)


async def ask_holder(port: int) -> Holder | None:
    """``port_claim.ask_holder`` in the event loop: who holds ``port``'s claim; None if it
    cannot be asked (it is just starting, or just ending)."""
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as asker:
        with trio.move_on_after(ASK_TIMEOUT_SECONDS):
            try:
                await asker.connect(claim_name(port))
                answer = HolderAnswer(peer_credentials(asker))
                while (holder := answer.received(await asker.recv(MAX_ANSWER_BYTES))) is None:
                    pass
            except OSError:
                return None
            return holder
    return None


def _begin_shutdown(worker: Supervised) -> None:
    worker.close_all_sessions()
    worker.shutting_down.set()


def tune_worker_process() -> None:
    """Tune the interpreter for a long-running worker with many connections.

    The hub bridge's threads get the GIL back quickly: a hub thread whose round trip has
    returned (a fetched batch for every client of this worker, or the outcome of a publish)
    needs the GIL to hand it over, and with Python's default switch interval it may wait up to
    5 ms per step while the Trio thread is busy sending. Under load that is added to every
    delivery; at 0.5 ms it is not. (Measured side by side, 200 clients at 100 msg/s over 4
    workers, nine runs each: median p99 13 ms instead of 20 ms, at the same CPU per delivery.)

    The cyclic garbage collector is made cheap. Almost everything a worker frees goes by
    reference counting; the collector is for cycles (tracebacks of cancelled tasks, mostly).
    With its defaults it runs every 700 allocations and keeps scanning every object the worker
    holds: the modules and classes loaded at startup, and every connection's objects. Measured
    on the baseline server with 10,000 connections, it took 42-55 % of the CPU. So the objects
    alive after startup, which live as long as the process, are frozen out of every collection
    (``gc.freeze``), and collections run far less often; the garbage cycles that wait longer for
    one are small and few.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
