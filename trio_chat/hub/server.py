"""The hub process: a multiprocessing manager server around one ``HubCore``.

It runs until told to stop (SIGTERM, SIGINT) or, for the automatic hub, until the process it
watches (the Hypercorn master) exits, so it never outlives the server it belongs to. The
watch uses a pidfd where the kernel has them: woken by the exit itself, not by polling.

Peers that have not authenticated are held to a deadline. The standard manager server gives
each connection a thread that waits for the peer's answer to its challenge with no time limit,
so peers that connect and say nothing would each hold a thread and a descriptor for good, and
enough of them would exhaust the hub. Here one thread ends every handshake that outlasts
``HANDSHAKE_TIMEOUT_SECONDS``, and the accept loop survives running out of descriptors.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from multiprocessing.managers import Server
from types import FrameType
from typing import Any

from ..hub_address import Address, HubConfigError, describe_address
from ..hub_link.manager.client import EXPOSED, HUB_TYPEID
from ..process_watch import wait_for_exit
from .core import HubCore
from .state import DEFAULT_MAX_ROOMS
from .store import MessageStore, Retention

logger = logging.getLogger("trio_chat.hub")

#: At most this many presence frames a second: joins and leaves in between are coalesced.
PRESENCE_INTERVAL_SECONDS = 0.25
#: Presence frames sent to clients per second, all clients together, in a large room: one frame
#: goes to everyone, so 10,000 clients connecting at once would otherwise get 40,000 frames a
#: second, more than the server can send. From 500 clients online on, the interval grows with
#: them (5 s at 10,000; ``MAX_PRESENCE_INTERVAL_SECONDS`` at most).
PRESENCE_DELIVERIES_PER_SECOND = 2_000
#: A worker's fetch waits this long after the first frame for more to join it: one round trip
#: (and thread hop) for many frames under load, for at most this much latency.
FETCH_LINGER_SECONDS = 0.005
#: A peer must pass the challenge-response handshake within this time of being accepted, or it
#: is disconnected. Workers on this machine need milliseconds; the rest is for a loaded machine.
HANDSHAKE_TIMEOUT_SECONDS = 5.0
#: After ``accept`` fails for want of descriptors or memory, wait this long before the next try
#: (trio's ``serve_listeners`` does the same): retrying at once would spin a core until one
#: frees up.
ACCEPT_RETRY_SECONDS = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def serve(
    address: Address,
    authkey: bytes,
    *,
    mailbox_size: int,
    history_size: int,
    max_rooms: int = DEFAULT_MAX_ROOMS,
    store: MessageStore | None = None,
    retention: Retention | None = None,
    watch_pid: int | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve until stopped; ``on_ready`` runs once the socket accepts connections. ``store``
    (closed when the hub stops): where messages are kept, if not in memory alone."""
    core = HubCore(
        mailbox_size=mailbox_size,
        history_size=history_size,
        max_rooms=max_rooms,
        presence_interval=PRESENCE_INTERVAL_SECONDS,
        presence_deliveries=PRESENCE_DELIVERIES_PER_SECOND,
        fetch_linger=FETCH_LINGER_SECONDS,
        store=store,
        retention=retention,
    )
    try:
        _serve_core(core, address, authkey, watch_pid, handshake_timeout, on_ready)
    finally:
        core.close()


def _serve_core(
    core: HubCore,
    address: Address,
    authkey: bytes,
    watch_pid: int | None,
    handshake_timeout: float,
    on_ready: Callable[[], None],
) -> None:

    # The manager's registry entry: (callable, exposed, method_to_typeid, proxy type); the
    # proxy type only matters to clients.
    registry: dict[str, Any] = {HUB_TYPEID: (lambda: core, EXPOSED, {}, None)}
    if isinstance(address, str):
        claim_socket_path(address)
    server = GuardedServer(registry, address, authkey, handshake_timeout=handshake_timeout)
    try:
        if isinstance(address, str):
            os.chmod(address, 0o600)
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
        threading.Thread(target=core.run_housekeeping, name="housekeeping", daemon=True).start()
        threading.Thread(target=core.run_pruning, name="retention", daemon=True).start()
        threading.Thread(target=core.run_checkpoints, name="checkpoints", daemon=True).start()
        if watch_pid is not None:
            threading.Thread(
                target=_stop_when_gone, args=(watch_pid,), name="watch-owner", daemon=True
            ).start()
        logger.info(
            "hub listening on %s (pid %d); %s",
            describe_address(address),
            os.getpid(),
            core.describe_store(),
        )
        on_ready()
        server.serve_forever()
    finally:
        # The listener unlinks its own Unix socket when the process exits.
        logger.info("hub stopped")


class GuardedServer(Server):
    """The manager server, with a deadline on authentication and a sturdier accept loop."""

    listener: Listener  # Set by ``Server.__init__``; typeshed leaves it out.

    def __init__(
        self,
        registry: dict[str, Any],
        address: Address,
        authkey: bytes,
        *,
        handshake_timeout: float,
    ) -> None:
        super().__init__(registry, address, authkey, "pickle")
        self._deadlines = HandshakeDeadlines(handshake_timeout)
        self._accept_failing = False

    def accepter(self) -> None:
        # Replaces the standard loop, which retries a failed accept at once (spinning while
        # descriptors are exhausted) and dies for good if a thread cannot be started.
        while True:
            try:
                conn = self.listener.accept()
            except OSError as error:
                self._accept_failed(error)
                continue
            if self._accept_failing:
                self._accept_failing = False
                logger.warning("accepting connections again")
            logger.debug("connection from %s", describe_peer(self.listener.last_accepted))
            self._start_handler(UnauthenticatedConnection(conn, self._deadlines))

    def _accept_failed(self, error: OSError) -> None:
        if error.errno not in _OUT_OF_RESOURCES:
            return  # The peer went before we took it (ECONNABORTED and the like).
        if not self._accept_failing:
            self._accept_failing = True
            logger.warning("cannot accept connections: %s; retrying", error.strerror)
        time.sleep(ACCEPT_RETRY_SECONDS)

    def _start_handler(self, conn: UnauthenticatedConnection) -> None:
        try:
            threading.Thread(target=self.handle_request, args=(conn,), daemon=True).start()
        except RuntimeError as error:  # No thread to be had: drop this peer, keep accepting.
            logger.warning("dropped a connection: %s", error)
            conn.close()


class UnauthenticatedConnection:
    """An accepted connection whose peer has not yet proven that it holds the secret.

    The manager's handshake uses ``send_bytes`` and ``recv_bytes`` only, and its first pickled
    ``recv`` comes after both challenges passed: that call marks the peer authenticated, lifts
    the deadline and hands every later call straight to the connection (an authenticated
    worker's ``fetch`` blocks for as long as the room is quiet). Before it, nothing pickled is
    sent either: the only thing the manager would send is the traceback of a failed handshake,
    which is not for strangers.
    """

    def __init__(self, conn: Connection[Any, Any], deadlines: HandshakeDeadlines) -> None:
        self._conn = conn
        self._deadlines = deadlines
        self._token = deadlines.arm(conn.fileno())
        self.send_bytes = conn.send_bytes
        self.recv_bytes = conn.recv_bytes

    def recv(self) -> Any:
        self._deadlines.disarm(self._token)
        self.recv = self._conn.recv  # type: ignore[method-assign]
        self.send = self._conn.send  # type: ignore[method-assign]
        return self._conn.recv()

    def send(self, obj: Any) -> None:
        pass

    def close(self) -> None:
        # Disarmed first: once closed, the descriptor's number may go to another connection.
        self._deadlines.disarm(self._token)
        self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class HandshakeDeadlines:
    """Shuts down connections still unauthenticated ``timeout`` seconds after they were armed.

    One thread serves every connection (a timer each would double the threads a crowd of
    silent peers holds). Shutting a socket down wakes the handler thread blocked reading it,
    which then fails the handshake and closes the connection. A connection is disarmed and
    shut down under one lock, so a descriptor is never shut down after its owner let it go.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # token -> (deadline, descriptor); every deadline is ``timeout`` after arming, so the
        # order of arming is the order of deadlines and the first entry is the next due.
        self._pending: OrderedDict[int, tuple[float, int]] = OrderedDict()
        self._changed = threading.Condition()
        self._tokens = itertools.count()
        threading.Thread(target=self._enforce, name="handshake-deadlines", daemon=True).start()

    def arm(self, fd: int) -> int:
        with self._changed:
            token = next(self._tokens)
            self._pending[token] = (time.monotonic() + self._timeout, fd)
            if len(self._pending) == 1:
                self._changed.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._changed:
            self._pending.pop(token, None)

    def _enforce(self) -> None:
        with self._changed:
            while True:
                if not self._pending:
                    self._changed.wait()
                    continue
                token, (deadline, fd) = next(iter(self._pending.items()))
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._changed.wait(remaining)
                    continue
                del self._pending[token]
                logger.debug("a peer did not authenticate within %.1f s", self._timeout)
                _shut_down(fd)


def _shut_down(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return  # Not a socket any more: nothing to wake (and this thread must not die).
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # The peer already went: the handler is about to find out.
    finally:
        sock.detach()  # The handler thread owns the descriptor and closes it.


def describe_peer(peer: Any) -> str:
    """A peer's address as accepted: (host, port) on TCP, nothing useful on a Unix socket."""
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return "a local process"


def claim_socket_path(path: str) -> None:
    """Make way for our Unix socket at ``path``.

    A hub that was killed (SIGKILL, a crash) leaves its socket file behind, and binding it
    again fails: a supervisor restarting a hand-started hub could never bring it back. So a
    socket nobody listens on any more is removed. A live hub's is not (two hubs on one
    address would split the workers), nor is anything that is not a socket.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise HubConfigError(f"{path} exists and is not a socket: remove it, or listen elsewhere")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # Left by a hub that died.
            return
    raise HubConfigError(f"a hub is already listening on {path}")


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_when_gone(pid: int) -> None:
    wait_for_exit(pid)
    logger.info("process %d has exited: stopping the hub", pid)
    os.kill(os.getpid(), signal.SIGTERM)
