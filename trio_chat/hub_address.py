"""Where the hub listens and how peers prove they belong: addresses, secrets, private paths.

Two ways to find a hub:
- automatic (``TRIO_CHAT_HUB`` unset): one hub per Hypercorn server, on a Unix socket in a
  private folder (mode 0700) named after the server's master process, authenticated with the
  ``authkey`` that all workers of one master share. Two servers on one machine never meet.
- configured (``unix:PATH`` or ``tcp://HOST:PORT``): a hub started by hand, with a secret read
  from ``TRIO_CHAT_HUB_SECRET_FILE``; on TCP, a loopback address unless the hub is told that
  other hosts may reach it (``is_loopback``).

The secret travels by file or by pipe, never on a command line or in a log.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import multiprocessing
import os
import socket
import stat
import tempfile
import urllib.parse
from pathlib import Path

from .config import Settings
from .hub.port_claim import automatic_chat
from .hub_link import is_redis_url

#: A shorter secret is refused: the HMAC challenge is only as strong as the key.
MIN_SECRET_BYTES = 16

# A multiprocessing address: a Unix socket path or a (host, port) pair.
Address = str | tuple[str, int]


class HubConfigError(Exception):
    """The hub's address or secret is unusable; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    address: Address
    authkey: bytes = dataclasses.field(repr=False)
    #: For the automatic hub: the process whose exit ends the hub (the Hypercorn master), and
    #: the lock file under which exactly one worker starts it.
    owner_pid: int | None = None
    lock_path: Path | None = None
    #: For the automatic hub: the ports it claims for its server (``hub.port_claim``), each
    #: with the address served on it: those its master bound with ``SO_REUSEPORT``.
    claimed_ports: tuple[tuple[int, str], ...] = ()

    @property
    def autostart(self) -> bool:
        return self.owner_pid is not None

    def describe(self) -> str:
        return describe_address(self.address)


def describe_address(address: Address) -> str:
    """The address as ``TRIO_CHAT_HUB`` spells it (``parse_address`` reads it back)."""
    if isinstance(address, tuple):
        return f"tcp://{address[0]}:{address[1]}"
    return f"unix:{address}"


def parse_address(text: str) -> Address:
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise HubConfigError(f"{text!r}: give the socket path after 'unix:'")
        return path
    if text.startswith("tcp://"):
        host, sep, port = text.removeprefix("tcp://").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise HubConfigError(f"{text!r}: expected tcp://HOST:PORT")
        return (host.strip("[]"), int(port))
    raise HubConfigError(
        f"{text!r}: expected unix:PATH or tcp://HOST:PORT (a manager hub), or "
        "redis://HOST:PORT/DB (the Redis hub)"
    )


def is_loopback(address: Address) -> bool:
    """Whether only this machine can reach ``address``: a Unix socket, or TCP on loopback.

    A host name counts only if every address it resolves to is a loopback one.
    """
    if isinstance(address, str):
        return True
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    # ``sockaddr[0]`` of an IPv6 address may carry a scope ("fe80::1%eth0").
    hosts = {str(info[4][0]).partition("%")[0] for info in infos}
    return bool(hosts) and all(ipaddress.ip_address(ip).is_loopback for ip in hosts)


def read_secret_file(path: Path) -> bytes:
    """Read a hub secret, refusing a file that other users could read."""
    try:
        info = path.stat()
        secret = path.read_bytes().strip()
    except OSError as error:
        raise HubConfigError(f"cannot read the hub secret file {path}: {error.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HubConfigError(f"the hub secret file {path} is readable by others: chmod 600 it")
    if len(secret) < MIN_SECRET_BYTES:
        raise HubConfigError(
            f"the hub secret in {path} is too short ({MIN_SECRET_BYTES} bytes at least)"
        )
    return secret


def resolve_endpoint(settings: Settings) -> Endpoint:
    if settings.hub in AUTOMATIC_HUB:
        return automatic_endpoint()
    if settings.hub_secret_file is None:
        raise HubConfigError(
            f"TRIO_CHAT_HUB={settings.hub} needs TRIO_CHAT_HUB_SECRET_FILE, the file holding "
            "the secret the hub was started with"
        )
    return Endpoint(parse_address(settings.hub), read_secret_file(settings.hub_secret_file))


#: ``TRIO_CHAT_HUB`` values for the automatic hub, one per server.
AUTOMATIC_HUB = ("", "auto")
#: The Redis hub's defaults.
REDIS_DEFAULT_PORT = 6379
REDIS_DEFAULT_DB = "0"


def chat_identity(settings: Settings, master_pid: int) -> str:
    """Which chat a server (of Hypercorn master ``master_pid``) serves, as its port claims say
    (``hub.port_claim``): servers that share a hub are one chat, and may share a port.

    The automatic hub's chat is its server's own; the in-process hub's too. A Redis hub's is
    its server (scheme, host, port and database: never the password) and key prefix; a hub
    started by hand, its address. Written as ``TRIO_CHAT_HUB`` spells it: servers of one chat
    spell their hub alike (``localhost`` and ``127.0.0.1`` are two chats here).
    """
    if settings.hub in AUTOMATIC_HUB:
        return automatic_chat(master_pid)
    if settings.hub == "local":
        return f"local, master {master_pid}"
    if is_redis_url(settings.hub):
        return f"{_redis_server(settings.hub)}, prefix {settings.redis_prefix}"
    address = parse_address(settings.hub)
    if isinstance(address, str):
        address = os.path.abspath(address)  # Servers may start in different folders.
    return describe_address(address)


def _redis_server(url: str) -> str:
    """A Redis URL without its user name and password."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or REDIS_DEFAULT_PORT
    except ValueError as error:
        raise HubConfigError(f"TRIO_CHAT_HUB={url!r}: {error}") from None
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    database = parts.path.strip("/") or REDIS_DEFAULT_DB
    return f"{parts.scheme}://{host}:{port}/{database}"


def automatic_endpoint() -> Endpoint:
    """The hub of this Hypercorn server: the master's, shared by all its workers."""
    parent = multiprocessing.parent_process()
    # Workers are children of the Hypercorn master; with ``--workers 0`` we are the master.
    owner_pid = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    folder = private_runtime_dir()
    return Endpoint(
        address=str(folder / f"hub-{owner_pid}.sock"),
        authkey=bytes(multiprocessing.current_process().authkey),
        owner_pid=owner_pid,
        lock_path=folder / f"hub-{owner_pid}.lock",
        claimed_ports=shared_ports(),
    )


def shared_ports() -> tuple[tuple[int, str], ...]:
    """The ports this Hypercorn worker's server listens on through ``SO_REUSEPORT``, each with
    its address; none outside a Hypercorn worker."""
    from . import hypercorn_worker  # Hypercorn itself is no business of the hub process.

    worker = hypercorn_worker.current()
    if worker is None:
        return ()
    return tuple((port.port, port.address) for port in worker.shared_ports)


def private_runtime_dir() -> Path:
    """A folder only this user can enter, for the hub's socket and lock file."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = base / f"trio-chat-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError as error:
        raise HubConfigError(f"cannot create {folder}: {error.strerror}") from None
    # Refuse a folder someone else made or loosened (or a symlink to one): whoever controls it
    # could stand in for our hub.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HubConfigError(
            f"{folder} is not a private folder of this user (mode 0700); remove it and retry"
        )
    return folder
