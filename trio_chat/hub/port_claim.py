"""No silent split: one chat per TCP port on this machine.

With more than one worker, Hypercorn binds with ``SO_REUSEPORT``, so a second server of the
same user on the same port (one forgotten in another terminal) starts without an error, and the
kernel spreads new connections over both: two chats, each blind to the other's people. So every
server claims each port it listens on through ``SO_REUSEPORT``, for the chat it serves, and a
server that finds a port claimed for another chat refuses to start, naming the server that has
it; its startup then fails with that one line.

A claim carries the identity of a chat (``hub_address.chat_identity``): the automatic hub's is
unique to its server (``automatic_chat``), while servers that share a hub (Redis, or a hub
started by hand) are one chat, and a newcomer whose port is claimed for its own chat shares it.
Who holds a claim:

- the **automatic hub**, one per server, for the whole life of its server (``claim_ports``, from
  the hub process);
- for a server with a **shared hub**, which has no hub process of its own, one of the workers of
  the servers of that chat on that port (``supervision.hold_ports``). A claim ends with its
  holder (a reload replaces every worker; one of the servers stops), so each of those workers
  tries again every second to claim the ports it does not hold.

A claim is a Unix socket bound to an abstract name (Linux), ``trio_chat-<uid>-port-<port>``:

- **Its scope is the kernel's.** ``SO_REUSEPORT`` lets only sockets of the same user in the
  same network namespace share a port, and abstract names live in the network namespace: the
  claim reaches exactly the servers that could split a port, whatever their environment
  (``XDG_RUNTIME_DIR``, a private ``/tmp``) or working folder. Servers of other users cannot
  share our ports, hence the uid in the name.
- **It cannot go stale.** The name is released by the kernel when its holder ends, however it
  ends (SIGKILL included); a holder started again claims again.
- **It answers who holds it.** The holder listens on it, and tells whoever connects its
  Hypercorn master's pid, the address it serves and its chat (``Claimant``); the kernel tells
  which user's process holds it (``SO_PEERCRED``), so another user's process squatting the
  name is named as such instead of being taken for a server.

Keyed by port, not by address: a server bound to ``0.0.0.0:8000`` and one bound to
``127.0.0.1:8000`` overlap (the kernel gives 127.0.0.1's connections to the more specific one,
and both share ``[::]:8000``'s), and working out which pairs of addresses overlap would mean
redoing the kernel's socket lookup. Two servers of different chats on one port with disjoint
addresses are refused too; give them different ports.

Elsewhere than Linux there are no abstract names, and no claims: ``claim_ports`` claims
nothing there.

No trio here: the hub process loads it (the workers' side is ``supervision.hold_ports``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ..process_watch import has_exited

#: How long asking a claim's holder who it is may take: it answers at once (the hub from a
#: thread of its own, a worker from its event loop).
ASK_TIMEOUT_SECONDS = 2.0
#: How long a claim that cannot be taken for sure yet is tried again before the port counts as
#: another chat's: its holder does not answer (a worker between binding the name and listening
#: on it), or it answers for a server whose master has exited (a quick restart: the old hub
#: ends a moment after its master).
UNSURE_CLAIM_WAIT_SECONDS = 2.0
#: How often such a claim is tried again meanwhile.
CLAIM_RETRY_SECONDS = 0.05
#: A holder's answer is one line: a pid, an address and a chat identity (at most a Redis URL
#: and a key prefix, or a Unix socket path).
MAX_ANSWER_BYTES = 1024
#: Connections waiting for the holder's answer.
ANSWER_BACKLOG = 16
#: ``struct ucred`` (``SO_PEERCRED``): pid, uid, gid.
UCRED = struct.Struct("3i")


def automatic_chat(master_pid: int) -> str:
    """The chat of a server with an automatic hub: its own, unique to that server."""
    return f"automatic, master {master_pid}"


@dataclasses.dataclass(frozen=True)
class Claimant:
    """The server a port is claimed for."""

    #: Its Hypercorn master: the process an operator stops to stop that server.
    master_pid: int
    #: The address it serves on that port, as Hypercorn's "Running on" line spells it.
    address: str
    #: The chat it serves (``hub_address.chat_identity``): servers of one chat may share a port.
    chat: str

    def encode(self) -> bytes:
        return f"{self.master_pid} {self.address} {self.chat}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Claimant | None:
        """The claimant ``data`` names; None if it is unreadable. A holder that names no chat
        (a trio_chat from before chats were named) has chat ``""``: another chat."""
        pid, _, rest = data.decode(errors="replace").strip().partition(" ")
        address, _, chat = rest.partition(" ")
        if not pid.isdigit() or not address or not rest.isprintable():
            return None
        return cls(int(pid), address, chat)


class PortClaimed(Exception):
    """Another chat has the port: its message is the one line an operator needs."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


def claims_supported() -> bool:
    return sys.platform == "linux"


def claim_name(port: int) -> str:
    return abstract_name(f"port-{port}")


def abstract_name(what: str) -> str:
    """This user's abstract Unix socket name for ``what`` (Linux: ``claims_supported``)."""
    return f"\0trio_chat-{os.getuid()}-{what}"


def bind_name(name: str) -> socket.socket | None:
    """A Unix socket bound to ``name``; None if another holds it. Never blocks: binding an
    abstract name is one system call, and the kernel frees it when its holder ends."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        return None
    return sock


def try_claim(port: int) -> socket.socket | None:
    """The claim of ``port``, listening for whoever asks who holds it; None if someone holds it
    already."""
    sock = bind_name(claim_name(port))
    if sock is not None:
        sock.listen(ANSWER_BACKLOG)
    return sock


@dataclasses.dataclass(frozen=True)
class Holder:
    """The process holding a claim, as far as it can be told."""

    pid: int
    uid: int
    #: What it says of itself; None if it said nothing readable, or is another user's.
    claimant: Claimant | None

    @classmethod
    def from_answer(cls, credentials: bytes, answer: bytes) -> Holder:
        """From its ``SO_PEERCRED`` credentials and its answer."""
        pid, uid, _ = UCRED.unpack(credentials)
        return cls(pid, uid, Claimant.decode(answer) if uid == os.getuid() else None)


class Verdict(enum.Enum):
    """What a claim held by someone else means for a server of a given chat."""

    #: Held for this server's chat: the port is shared, as it may be.
    SAME_CHAT = "same chat"
    #: Held for another chat, or by another user's process: the port is taken.
    ANOTHER_CHAT = "another chat"
    #: Cannot tell yet (no readable answer), or held for a server that has exited and whose
    #: claim is about to go: ask again shortly, for ``UNSURE_CLAIM_WAIT_SECONDS`` at most.
    UNSURE = "unsure"


def judge(holder: Holder | None, chat: str) -> Verdict:
    """What ``holder``'s claim means for a server serving ``chat``."""
    if holder is None:
        return Verdict.UNSURE
    if holder.uid != os.getuid():
        return Verdict.ANOTHER_CHAT
    claimant = holder.claimant
    if claimant is None:
        return Verdict.UNSURE
    if claimant.chat == chat:
        return Verdict.SAME_CHAT
    if has_exited(claimant.master_pid):
        return Verdict.UNSURE
    return Verdict.ANOTHER_CHAT


class PortClaims:
    """The ports a process holds, for as long as it runs (or until ``close``)."""

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


def claim_ports(
    master_pid: int,
    addresses: Mapping[int, str],
    chat: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PortClaims:
    """Claim every port of ``addresses`` (port: the address served on it) for the server of
    Hypercorn master ``master_pid``, serving ``chat``. A port claimed for ``chat`` already is
    left to its holder; ``PortClaimed`` (and nothing claimed) if another chat holds one. Blocks
    (``UNSURE_CLAIM_WAIT_SECONDS`` at most per port, plus the holder's answer): for the hub
    process, before it serves."""
    if not claims_supported():
        return PortClaims({})
    held: dict[socket.socket, Claimant] = {}
    try:
        for port, address in sorted(addresses.items()):
            claimant = Claimant(master_pid, address, chat)
            sock = _claim(port, claimant, clock, sleep)
            if sock is not None:
                held[sock] = claimant
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return PortClaims(held)


def _claim(
    port: int, claimant: Claimant, clock: Callable[[], float], sleep: Callable[[float], None]
) -> socket.socket | None:
    """``port``'s claim, or None if it is held for the same chat."""
    deadline = clock() + UNSURE_CLAIM_WAIT_SECONDS
    while (sock := try_claim(port)) is None:
        if settle(port, claimant, ask_holder(port), out_of_time=clock() >= deadline):
            return None
        sleep(CLAIM_RETRY_SECONDS)
    return sock


def settle(port: int, claimant: Claimant, holder: Holder | None, *, out_of_time: bool) -> bool:
    """What a server that could not take ``port``'s claim makes of its ``holder``: True if it
    holds the port for ``claimant``'s chat (which may share it); False to try again after
    ``CLAIM_RETRY_SECONDS`` (unsure, see ``judge``); ``PortClaimed`` if it is another chat's,
    or still unsure once ``out_of_time``."""
    verdict = judge(holder, claimant.chat)
    if verdict is Verdict.SAME_CHAT:
        return True
    if verdict is Verdict.ANOTHER_CHAT or out_of_time:
        raise PortClaimed(port, claimed_message(port, claimant, holder))
    return False


def ask_holder(port: int) -> Holder | None:
    """Who holds ``port``'s claim, as far as can be told; None if it cannot be asked (it is
    just starting, or just ending). Blocks, ``ASK_TIMEOUT_SECONDS`` at most."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as asker:
        asker.settimeout(ASK_TIMEOUT_SECONDS)
        try:
            asker.connect(claim_name(port))
            answer = HolderAnswer(peer_credentials(asker))
            while (holder := answer.received(asker.recv(MAX_ANSWER_BYTES))) is None:
                pass
        except OSError:
            return None
    return holder


class Connected(Protocol):
    """A connected Unix socket, blocking or Trio's."""

    def getsockopt(self, level: int, option: int, size: int, /) -> bytes: ...


def peer_credentials(asker: Connected) -> bytes:
    """Who the process at the other end of a connection to a claim is (``SO_PEERCRED``)."""
    return asker.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)


class HolderAnswer:
    """A claim holder's answer, taken a chunk at a time as it comes (no I/O here: the hub
    reads it blocking, a worker in its event loop)."""

    def __init__(self, credentials: bytes) -> None:
        """``credentials``: the holder's, as the connection to it says (``peer_credentials``)."""
        self._credentials = credentials
        self._answer = b""

    def received(self, chunk: bytes) -> Holder | None:
        """The holder, once its answer is whole (a line, the most it may say, or its end:
        an empty ``chunk``); None: read on."""
        self._answer += chunk
        if chunk and b"\n" not in self._answer and len(self._answer) < MAX_ANSWER_BYTES:
            return None
        return Holder.from_answer(self._credentials, self._answer)


def claimed_message(port: int, claimant: Claimant, holder: Holder | None) -> str:
    """Why ``claimant`` cannot have ``port``, which ``holder`` has: one line."""
    taken = f"port {port} (to serve {claimant.address}) is taken by another trio_chat server"
    advice = (
        "the kernel would spread new connections over both, splitting people between two "
        "chats; stop that server, or give this one another port"
    )
    if holder is None:
        return f"{taken}, which did not say which; {advice}"
    if holder.uid != os.getuid():
        return (
            f"port {port} (to serve {claimant.address}) is claimed by pid {holder.pid}, a "
            f"process of another user (uid {holder.uid}), not by a server of ours"
        )
    other = holder.claimant
    if other is None:
        return f"{taken} (pid {holder.pid} holds its claim); {advice}"
    return (
        f"{taken} (Hypercorn master pid {other.master_pid}, serving {other.address}) of "
        f"another chat (its hub: {other.chat or 'unnamed'}; this one's: {claimant.chat}); "
        f"{advice}"
    )
