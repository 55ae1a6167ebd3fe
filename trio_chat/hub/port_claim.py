"""No silent split: one chat per TCP port on this machine.

With more than one worker, Hypercorn binds with ``SO_REUSEPORT``, so a second server of the
same user on the same port (one forgotten in another terminal) starts without an error, and the
kernel spreads new connections over both: two chats, each with its own hub, each blind to the
other's people. So the automatic hub, one per server, claims every port its server listens on
through ``SO_REUSEPORT`` for as long as it runs, and a hub that finds a port claimed refuses to
start, naming the server that has it; its server's startup then fails with that one line.

A claim is a Unix socket bound to an abstract name (Linux), ``trio_chat-<uid>-port-<port>``:

- **Its scope is the kernel's.** ``SO_REUSEPORT`` lets only sockets of the same user in the
  same network namespace share a port, and abstract names live in the network namespace: the
  claim reaches exactly the servers that could split a port, whatever their environment
  (``XDG_RUNTIME_DIR``, a private ``/tmp``) or working folder. Servers of other users cannot
  share our ports, hence the uid in the name.
- **It cannot go stale.** The name is released by the kernel when the hub ends, however it
  ends (a hub killed with SIGKILL included); a hub started again after a crash claims again.
- **It answers who holds it.** The holder listens on it, and tells whoever connects its
  Hypercorn master's pid and the address it serves (``Claimant``); the kernel tells which
  user's process holds it (``SO_PEERCRED``), so another user's process squatting the name is
  named as such instead of being taken for a server.

Keyed by port, not by address: a server bound to ``0.0.0.0:8000`` and one bound to
``127.0.0.1:8000`` overlap (the kernel gives 127.0.0.1's connections to the more specific one,
and both share ``[::]:8000``'s), and working out which pairs of addresses overlap would mean
redoing the kernel's socket lookup. Two servers on one port with disjoint addresses are refused
too; give them different ports.

Elsewhere than Linux there are no abstract names, and no claims: ``claim_ports`` claims
nothing there.

No trio here: the hub process loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Mapping

#: How long asking a claim's holder who it is may take: it answers from a thread of its own.
ASK_TIMEOUT_SECONDS = 2.0
#: A holder's answer is one short line.
MAX_ANSWER_BYTES = 256
#: Connections waiting for the holder's answer.
ANSWER_BACKLOG = 16
#: ``struct ucred`` (``SO_PEERCRED``): pid, uid, gid.
_UCRED = struct.Struct("3i")


@dataclasses.dataclass(frozen=True)
class Claimant:
    """The server a hub claims a port for."""

    #: Its Hypercorn master: the process an operator stops to stop that server.
    master_pid: int
    #: The address it serves on that port, as Hypercorn's "Running on" line spells it.
    address: str

    def encode(self) -> bytes:
        return f"{self.master_pid} {self.address}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Claimant | None:
        pid, _, address = data.decode(errors="replace").strip().partition(" ")
        if not pid.isdigit() or not address or not address.isprintable():
            return None
        return cls(int(pid), address)


class PortClaimed(Exception):
    """Another server has the port: its message is the one line an operator needs."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


def claims_supported() -> bool:
    return sys.platform == "linux"


def claim_name(port: int) -> str:
    return f"\0trio_chat-{os.getuid()}-port-{port}"


class PortClaims:
    """The ports a hub holds, for as long as its process runs (or until ``close``)."""

    def __init__(self, held: dict[socket.socket, Claimant]) -> None:
        self._held = held
        self._answering: threading.Thread | None = None
        # Written to by ``close``, to wake the answering thread.
        self._wake_reader, self._wake_writer = socket.socketpair()

    @property
    def addresses(self) -> list[str]:
        return sorted(claimant.address for claimant in self._held.values())

    def answer_in_background(self) -> None:
        """Tell whoever asks who holds these ports, from a daemon thread, until ``close``."""
        if self._held and self._answering is None:
            self._answering = threading.Thread(target=self._answer, name="port-claims", daemon=True)
            self._answering.start()

    def close(self) -> None:
        """Give the ports up."""
        self._wake_writer.send(b"x")
        if self._answering is not None:
            self._answering.join()
        for sock in [*self._held, self._wake_reader, self._wake_writer]:
            sock.close()

    def _answer(self) -> None:
        while True:
            readable, _, _ = select.select([self._wake_reader, *self._held], [], [])
            if self._wake_reader in readable:
                return
            for sock in readable:
                with contextlib.suppress(OSError):
                    peer, _ = sock.accept()
                    with peer:
                        peer.settimeout(ASK_TIMEOUT_SECONDS)
                        peer.sendall(self._held[sock].encode())


def claim_ports(master_pid: int, addresses: Mapping[int, str]) -> PortClaims:
    """Claim every port of ``addresses`` (port: the address served on it) for the server of
    Hypercorn master ``master_pid``; ``PortClaimed`` (and nothing claimed) if another server
    holds one."""
    if not claims_supported():
        return PortClaims({})
    held: dict[socket.socket, Claimant] = {}
    try:
        for port, address in sorted(addresses.items()):
            claimant = Claimant(master_pid, address)
            held[_claim(port, claimant)] = claimant
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return PortClaims(held)


def check_port(port: int, address: str) -> None:
    """``PortClaimed`` if a server with a hub of its own holds ``port``: for a server that shares
    a hub (started by hand, or Redis), which claims nothing itself."""
    if not claims_supported():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(claim_name(port))
        except OSError:
            raise PortClaimed(port, _claimed_message(port, address, _ask_holder(port))) from None


def _claim(port: int, claimant: Claimant) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(claim_name(port))
    except OSError:
        sock.close()
        holder = _ask_holder(port)
        raise PortClaimed(port, _claimed_message(port, claimant.address, holder)) from None
    sock.listen(ANSWER_BACKLOG)
    return sock


@dataclasses.dataclass(frozen=True)
class _Holder:
    pid: int
    uid: int
    claimant: Claimant | None


def _ask_holder(port: int) -> _Holder | None:
    """Who holds ``port``'s claim, as far as can be told; None if it cannot be asked (it is
    just starting, or just ending)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as asker:
        asker.settimeout(ASK_TIMEOUT_SECONDS)
        try:
            asker.connect(claim_name(port))
            pid, uid, _ = _UCRED.unpack(
                asker.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            answer = b""
            while b"\n" not in answer and len(answer) < MAX_ANSWER_BYTES:
                chunk = asker.recv(MAX_ANSWER_BYTES)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            return None
    return _Holder(pid, uid, Claimant.decode(answer) if uid == os.getuid() else None)


def _claimed_message(port: int, address: str, holder: _Holder | None) -> str:
    taken = f"port {port} (to serve {address}) is taken by another trio_chat server"
    advice = (
        "two servers on one port would split the chat in two, as the kernel spreads new "
        "connections over both; stop that server, or give this one another port"
    )
    if holder is None:
        return f"{taken}, which did not say which; {advice}"
    if holder.uid != os.getuid():
        return (
            f"port {port} (to serve {address}) is claimed by pid {holder.pid}, a process of "
            f"another user (uid {holder.uid}), not by a server of ours"
        )
    if holder.claimant is None:
        return f"{taken} (its hub is pid {holder.pid}); {advice}"
    return (
        f"{taken} (Hypercorn master pid {holder.claimant.master_pid}, serving "
        f"{holder.claimant.address}); {advice}"
    )
