"""The app's own settings, read from ``TRIO_CHAT_*`` environment variables.

Server settings (bind address, workers, frame size limit, timeouts) belong to Hypercorn and live
in ``hypercorn.toml``; everything here is about the chat itself. Settings are read once per
worker at lifespan startup, so a bad value fails the startup with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from .metrics.access import ANYONE, MetricsAccess, parse_metrics_access
from .protocol import ROOM_NAME_RULE, is_room_name

KIB = 1024

T = TypeVar("T")


class ConfigError(Exception):
    """A ``TRIO_CHAT_*`` variable has a value we cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    #: Where the hub is: empty for the automatic per-server hub, ``unix:PATH`` or
    #: ``tcp://HOST:PORT`` of a hub started by hand (``python -m trio_chat.hub``), or
    #: ``redis://HOST:PORT/DB`` (``rediss://`` with TLS) for the Redis hub.
    hub: str = ""
    #: File holding the shared secret of a hub started by hand (the automatic hub needs none),
    #: or the password of the Redis hub.
    hub_secret_file: Path | None = None
    #: What the Redis hub's keys start with: servers sharing one chat use the same prefix.
    redis_prefix: str = "trio_chat"
    #: Longest chat message, in bytes of UTF-8.
    max_message_bytes: int = 4 * KIB
    #: Longest display name, in characters.
    max_sender_chars: int = 64
    #: Frames a subscriber may have waiting before it counts as too slow and is disconnected.
    subscriber_buffer: int = 1024
    #: Messages a worker may have waiting to be published before senders are held back.
    outbox_size: int = 1024
    #: Messages the hub keeps per room for joining clients and resumes; a resume replays at
    #: most these.
    history_size: int = 100
    #: The room a connection starts in unless its URL says ``?room=``.
    default_room: str = "general"
    #: Rooms the hub keeps at most; a new room past this is refused unless an empty one can
    #: be forgotten to make way.
    max_rooms: int = 1000
    #: Rooms one connection may be in at once.
    max_rooms_per_connection: int = 32
    #: Where the hub keeps messages: ``sqlite`` (a file in ``data_dir``, so that history
    #: survives restarts) or ``memory`` (the last ``history_size`` per room, lost when the hub
    #: process ends). The Redis hub keeps them in Redis, and the local hub in memory.
    store: str = "sqlite"
    #: The folder of the SQLite store (made with mode 700); relative to the working directory.
    data_dir: Path = Path("data")
    #: Messages older than this many days are deleted (SQLite store, and the Redis hub).
    retention_days: float = 30.0
    #: The newest messages kept per room at most (SQLite store, and the Redis hub).
    retention_messages: int = 10_000
    #: Messages the hub keeps for a worker that has not fetched them yet; past this, the
    #: worker's mailbox is dropped and the worker told so.
    mailbox_size: int = 65536
    #: Chat messages a connection may send per second (a token bucket), 0 for no limit, and how
    #: many it may send at once after a pause.
    rate: float = 5.0
    burst: int = 10
    #: Origins besides the page's own that may open a WebSocket (``https://host[:port]``).
    allowed_origins: frozenset[str] = frozenset()
    #: Refuse handshakes with no Origin header (non-browser clients) too.
    require_origin: bool = False
    #: Connections one client address may hold on one worker, 0 for no cap (the default: proxies
    #: and NAT put many people behind one address).
    max_connections_per_address: int = 0
    log_level: str = "INFO"
    #: Accept the permessage-deflate WebSocket extension that browsers offer (``on``), with
    #: bounded inflation, or answer the offer with plain frames (``off``, the default): chat
    #: frames are small, and compression costs memory per connection and CPU per delivery.
    websocket_compression: bool = False
    #: Folder the page is served from; by default the ``static/`` folder shipped with the app.
    static_dir: Path | None = None
    #: Who may read ``/metrics`` (the whole server's figures, for Prometheus) and ``/status``
    #: (a page plotting them): ``on`` (the default: anyone who can reach the chat, like
    #: ``/healthz``; no names or messages are in them), ``off`` (both answer 404), or a
    #: comma-separated allowlist of client addresses and networks (``127.0.0.1,10.0.0.0/8,::1``),
    #: outside which a client gets 403. See ``metrics/access.py``.
    metrics: MetricsAccess = ANYONE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def read(name: str, parse: Callable[[str], T], default: T) -> T:
            raw = env.get(f"TRIO_CHAT_{name}")
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except ValueError as error:
                raise ConfigError(f"TRIO_CHAT_{name}={raw!r}: {error}") from None

        return cls(
            hub=read("HUB", str, defaults.hub),
            hub_secret_file=read("HUB_SECRET_FILE", Path, defaults.hub_secret_file),
            redis_prefix=read("REDIS_PREFIX", _key_prefix, defaults.redis_prefix),
            max_message_bytes=read("MAX_MESSAGE_BYTES", _positive_int, defaults.max_message_bytes),
            max_sender_chars=read("MAX_SENDER_CHARS", _positive_int, defaults.max_sender_chars),
            subscriber_buffer=read("SUBSCRIBER_BUFFER", _positive_int, defaults.subscriber_buffer),
            outbox_size=read("OUTBOX_SIZE", _positive_int, defaults.outbox_size),
            mailbox_size=read("MAILBOX_SIZE", _positive_int, defaults.mailbox_size),
            history_size=read("HISTORY_SIZE", _positive_int, defaults.history_size),
            default_room=read("DEFAULT_ROOM", _room_name, defaults.default_room),
            max_rooms=read("MAX_ROOMS", _positive_int, defaults.max_rooms),
            store=read("STORE", _store_kind, defaults.store),
            data_dir=read("DATA_DIR", Path, defaults.data_dir),
            retention_days=read("RETENTION_DAYS", _positive_float, defaults.retention_days),
            retention_messages=read(
                "RETENTION_MESSAGES", _positive_int, defaults.retention_messages
            ),
            max_rooms_per_connection=read(
                "MAX_ROOMS_PER_CONNECTION", _positive_int, defaults.max_rooms_per_connection
            ),
            rate=read("RATE", _non_negative_float, defaults.rate),
            burst=read("BURST", _positive_int, defaults.burst),
            allowed_origins=read("ALLOWED_ORIGINS", _origins, defaults.allowed_origins),
            require_origin=read("REQUIRE_ORIGIN", _flag, defaults.require_origin),
            max_connections_per_address=read(
                "MAX_CONNECTIONS_PER_ADDRESS",
                _non_negative_int,
                defaults.max_connections_per_address,
            ),
            log_level=read("LOG_LEVEL", _log_level, defaults.log_level),
            websocket_compression=read(
                "WEBSOCKET_COMPRESSION", _on_off, defaults.websocket_compression
            ),
            static_dir=read("STATIC_DIR", Path, defaults.static_dir),
            metrics=read("METRICS", parse_metrics_access, defaults.metrics),
        )


def _room_name(raw: str) -> str:
    if not is_room_name(raw):
        raise ValueError(f"a room name is {ROOM_NAME_RULE}")
    return raw


def _key_prefix(raw: str) -> str:
    if len(raw) > 64 or not all(c.isascii() and (c.isalnum() or c in "_-:.") for c in raw):
        raise ValueError("must be at most 64 letters, digits and _-:.")
    return raw


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number above 0")
    return value


#: ``TRIO_CHAT_STORE`` values.
STORE_KINDS = ("sqlite", "memory")


def _store_kind(raw: str) -> str:
    if raw.lower() not in STORE_KINDS:
        raise ValueError(f"must be one of {', '.join(STORE_KINDS)}")
    return raw.lower()


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0")


def _on_off(raw: str) -> bool:
    if raw.lower() not in ("on", "off"):
        raise ValueError("must be on or off")
    return raw.lower() == "on"


def _origins(raw: str) -> frozenset[str]:
    origins = frozenset(part.strip().lower().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ValueError(f"{origin!r}: expected a comma-separated list of https://host[:port]")
    return origins


def _log_level(raw: str) -> str:
    level = raw.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level
