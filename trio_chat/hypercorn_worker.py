"""What Hypercorn hands the worker process it starts: the shutdown event and the listening
sockets.

Hypercorn's master (``hypercorn/run.py``) starts each worker as
``ctx.Process(target=trio_worker, kwargs={"config", "shutdown_event", "sockets"})`` with the
spawn context, which pickles that Process object, kwargs included, into the new interpreter:
there ``multiprocessing.current_process()._kwargs`` holds the very objects ``trio_worker`` was
called with. Hypercorn gives the app no other way to reach them, and the worker needs both:

- the **shutdown event**, set by the master on a stop (SIGINT, SIGTERM) and on a reload
  (SIGHUP) alike, and polled by Hypercorn's worker without ever telling the app
  (``supervision.close_sessions_on_shutdown_event`` watches it too);
- the **listening sockets**, bound by the master, with ``SO_REUSEPORT`` when there is more than
  one worker (``port_claim`` keeps two servers from sharing a port through it).

``current()`` is None outside a Hypercorn worker process (a test run, ``-w 0``, another
server). In one, the objects are checked: if Hypercorn changed what it hands its workers,
``HypercornWorkerError`` says what changed, and the worker's startup fails; the watch is never
silently missing.

A worker whose startup fails ends the server with ``fail_startup``, not by telling Hypercorn
(``lifespan.startup.failed``). Told so, Hypercorn prints a traceback in every worker, starts
serving for a moment (its "Running on" line), and its master exits with status 0: its final
``_join_exited`` (hypercorn/run.py) overwrites the failed worker's exit code with that of the
workers still running, none of which has exited yet (pgjones/hypercorn#269; a fix is proposed
in pgjones/hypercorn#372). A supervisor that restarts a failed server never notices. So the
workers of one master agree on one of them to report (an abstract Unix socket named after the
master, which only one can bind); it writes the reason in one line, then ends the master with
SIGKILL, the only way left to give the ``hypercorn`` command a failed status; the others wait
for the master to be gone and end quietly. Every worker ends with
``STARTUP_FAILED_EXIT_CODE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from multiprocessing import resource_tracker
from typing import Any, NoReturn, Protocol

import trio

from . import process_watch
from .hub import port_claim

#: The keyword arguments Hypercorn 0.18's master starts each worker with.
WORKER_KWARGS = frozenset({"config", "shutdown_event", "sockets"})
#: Hypercorn's worker functions live in these modules (``trio_worker``, and the asyncio ones).
WORKER_MODULE_PREFIX = "hypercorn."
#: How a worker whose startup failed ends: gunicorn's ``WORKER_BOOT_ERROR`` and uvicorn's
#: ``STARTUP_FAILURE``, the code process supervisors know for "failed to start".
STARTUP_FAILED_EXIT_CODE = 3
#: How long a worker that is not the one to report its server's failure waits for the master
#: to be ended by the one that is, before it ends anyway.
MASTER_END_TIMEOUT_SECONDS = 10.0


class HypercornWorkerError(Exception):
    """The Hypercorn worker process is not shaped as trio_chat expects."""


class ShutdownEvent(Protocol):
    """What the worker uses of the master's ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class ListeningPort:
    """One TCP socket the master bound for this server."""

    port: int
    #: As Hypercorn's "Running on" line spells it: ``127.0.0.1:8000``, ``[::]:8000``.
    address: str
    #: Whether the socket was bound with ``SO_REUSEPORT``: another server of the same user may
    #: then bind the same port, and the kernel splits new connections between the two.
    shared: bool


@dataclasses.dataclass(frozen=True)
class HypercornWorker:
    """This process, as the Hypercorn worker it is."""

    #: The Hypercorn master: it bound the sockets, and it ends the worker.
    master_pid: int
    shutdown_event: ShutdownEvent
    #: Every socket the master bound (TLS, plain and QUIC), listening or not.
    sockets: tuple[socket.socket, ...]

    @property
    def tcp_ports(self) -> tuple[ListeningPort, ...]:
        """The TCP sockets among them (not Unix sockets nor QUIC's UDP), by port."""
        ports = [
            listening for sock in self.sockets if (listening := listening_port(sock)) is not None
        ]
        return tuple(sorted(ports, key=lambda listening: listening.port))

    @property
    def shared_ports(self) -> tuple[ListeningPort, ...]:
        """The TCP ports bound with ``SO_REUSEPORT``: those another server could share."""
        return tuple(listening for listening in self.tcp_ports if listening.shared)

    def shut_listening_sockets(self) -> None:
        """Stop the server's sockets from taking connections, for every process that shares
        them: a worker that cannot serve must not have the kernel hand it new clients while
        the server ends. (``shutdown`` acts on the socket itself, which the master and every
        worker share, where ``close`` would only drop this process's descriptor.)"""
        for sock in self.sockets:
            # OSError: not listening yet, or already shut: nothing to stop.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def fail_startup(self, report: Callable[[], None]) -> NoReturn:
        """End this worker, and its server, because its startup failed. ``report`` (which
        writes why) runs in one worker of the server only; see the module's docstring."""
        self.shut_listening_sockets()
        if self._elected_to_report():
            report()
            _flush_output()
            siblings = _workers_of(self.master_pid) - {os.getpid()}
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master_pid, signal.SIGKILL)
            # The shutdown event is named semaphores, which a sibling still starting opens as it
            # unpickles what the master handed it (a traceback if they are gone): they are
            # unlinked once every sibling has ended, which each does once the master is gone.
            deadline = time.monotonic() + MASTER_END_TIMEOUT_SECONDS
            for pid in siblings:
                process_watch.wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
            _forget_event(self.shutdown_event)
        else:
            # Not before the master is gone: it would see this exit first, and exit 0.
            _flush_output()
            process_watch.wait_for_exit(self.master_pid, MASTER_END_TIMEOUT_SECONDS)
        os._exit(STARTUP_FAILED_EXIT_CODE)

    def _elected_to_report(self) -> bool:
        """Whether this worker is its server's one to report a failed startup: the first to
        bind the name, while the master is still there (a worker that fails after the master
        was ended has nothing to add). The name is held until this process ends."""
        if not port_claim.claims_supported():
            return True  # No abstract names: every failing worker reports.
        global _reporter_name_holder
        holder = port_claim.bind_name(port_claim.abstract_name(f"startup-failed-{self.master_pid}"))
        if holder is None:
            return False
        _reporter_name_holder = holder
        return not process_watch.has_exited(self.master_pid)


# The reporting worker's claim to report, kept open until the process ends.
_reporter_name_holder: socket.socket | None = None


#: The function of Hypercorn's task that pings a WebSocket client (``websocket_ping_interval``).
PINGER = "_send_pings"
#: The function of Hypercorn's Trio worker whose nurseries hold the connections.
WORKER_SERVE = "worker_serve"


def end_closed_websockets() -> int:
    """During Hypercorn's graceful wait, end the connections whose WebSocket has closed and
    whose only task left is Hypercorn's pinger; returns how many.

    With ``websocket_ping_interval`` set (hypercorn.toml sets 15 s), each WebSocket connection
    has a task that pings, then sleeps for the interval, and looks whether the WebSocket has
    closed only when it wakes (``WSStream._send_pings``). So a connection whose session has
    ended and whose client has gone stays in Hypercorn's nursery for up to the interval, and a
    stop or a reload waits out ``graceful_timeout`` for pingers with nothing to ping. Ending
    such a connection is what Hypercorn does to it at the graceful deadline, only sooner; a
    connection with any other task (an HTTP request, a session still closing) is left to
    Hypercorn. Does nothing unless the task tree is Hypercorn 0.18's and its graceful wait
    has begun (the deadline of its connections' nursery is set).
    """
    connections = _connections_nursery()
    if connections is None:
        return 0
    ended = 0
    for handler in connections.child_tasks:
        for nursery in handler.child_nurseries:
            tasks = nursery.child_tasks
            if tasks and all(_function_of(task) == PINGER for task in tasks):
                nursery.cancel_scope.cancel()
                ended += 1
    return ended


def _connections_nursery() -> trio.Nursery | None:
    """Hypercorn's nursery of connection handlers, once its graceful wait has begun."""
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None and _function_of(task) != WORKER_SERVE:
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    if task is None:
        return None
    waiting = [n for n in task.child_nurseries if n.cancel_scope.deadline != math.inf]
    return waiting[0] if len(waiting) == 1 else None


def _function_of(task: trio.lowlevel.Task) -> str:
    return getattr(getattr(task.coro, "cr_code", None), "co_name", "")


def _flush_output() -> None:
    for handler in logging.getLogger().handlers + logging.getLogger("trio_chat").handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _forget_event(event: object) -> None:
    """Unlink the master's shutdown event's semaphores and tell the master's resource tracker
    they are gone, as the master itself would have at its exit: a master ended by SIGKILL
    cannot, and its tracker would print a warning about them once the workers are gone."""
    locks = [getattr(event, "_flag", None)]
    condition = getattr(event, "_cond", None)
    locks += [getattr(condition, name, None) for name in _CONDITION_LOCKS]
    for lock in locks:
        name = getattr(getattr(lock, "_semlock", None), "name", None)
        if not isinstance(name, str):
            continue
        with contextlib.suppress(Exception):
            resource_tracker.unregister(name, "semaphore")
        with contextlib.suppress(Exception):
            import _multiprocessing  # type: ignore[import-not-found]

            _multiprocessing.sem_unlink(name)


_CONDITION_LOCKS = ("_lock", "_sleeping_count", "_woken_count", "_wait_semaphore")


def _workers_of(master_pid: int) -> set[int]:
    """The worker processes of the master (none if it is gone): its children, but for
    multiprocessing's resource tracker, which lasts as long as the workers do."""
    children: set[int] = set()
    tasks = f"/proc/{master_pid}/task"
    with contextlib.suppress(OSError):
        for task in os.listdir(tasks):
            with contextlib.suppress(OSError), open(f"{tasks}/{task}/children") as file:
                children.update(int(child) for child in file.read().split())
    return {pid for pid in children if not _is_resource_tracker(pid)}


def _is_resource_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"multiprocessing.resource_tracker" in cmdline.read()
    except OSError:
        return False  # Gone already: nothing to wait for either way.


def current() -> HypercornWorker | None:
    """This process as a Hypercorn worker; None if it is not one. ``HypercornWorkerError`` if
    it is one, started otherwise than trio_chat expects."""
    master = multiprocessing.parent_process()
    if master is None or master.pid is None:
        return None  # No master: a test run, ``hypercorn -w 0``, another server.
    process: Any = multiprocessing.current_process()
    target: Any = getattr(process, "_target", None)
    if not getattr(target, "__module__", "").startswith(WORKER_MODULE_PREFIX):
        return None  # A child process of something else than Hypercorn.
    kwargs = getattr(process, "_kwargs", None)
    return _checked(master.pid, kwargs, f"{target.__module__}.{target.__qualname__}")


def _checked(master_pid: int, kwargs: object, target: str) -> HypercornWorker:
    if not isinstance(kwargs, Mapping) or set(kwargs) != WORKER_KWARGS:
        shape = sorted(kwargs) if isinstance(kwargs, Mapping) else type(kwargs).__name__
        raise HypercornWorkerError(
            f"Hypercorn started this worker ({target}) with {shape}, not with keyword "
            f"arguments {sorted(WORKER_KWARGS)}, so trio_chat can watch neither its shutdown "
            "event nor its sockets"
        )
    event = kwargs["shutdown_event"]
    if not callable(getattr(event, "is_set", None)):
        raise HypercornWorkerError(
            f"Hypercorn's shutdown_event is {type(event).__name__}, not a multiprocessing "
            "Event, so trio_chat cannot see a stop or a reload begin"
        )
    sockets = kwargs["sockets"]
    groups: list[Any] = [getattr(sockets, name, None) for name in _SOCKET_GROUPS]
    if not all(isinstance(group, list) for group in groups):
        raise HypercornWorkerError(
            f"Hypercorn's sockets are {type(sockets).__name__}, without the lists "
            f"{', '.join(_SOCKET_GROUPS)}, so trio_chat cannot see what the server listens on"
        )
    found = tuple(sock for group in groups for sock in group)
    if not all(isinstance(sock, socket.socket) for sock in found):
        raise HypercornWorkerError("Hypercorn's sockets are not all sockets")
    return HypercornWorker(master_pid, event, found)


_SOCKET_GROUPS = ("secure_sockets", "insecure_sockets", "quic_sockets")


def listening_port(sock: socket.socket) -> ListeningPort | None:
    """``sock`` as a ``ListeningPort`` if it is a TCP socket bound to a port, else None."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None
    try:
        host, port = sock.getsockname()[:2]
        shared = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
    except (OSError, AttributeError):  # Closed, or no SO_REUSEPORT on this system.
        return None
    address = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
    return ListeningPort(port, address, shared)
