"""``python -m trio_chat.hub`` (or ``trio-chat-hub``): run a hub by hand.

    trio-chat-hub --new-secret-file /etc/trio-chat/hub.secret
    TRIO_CHAT_HUB=unix:/run/trio-chat/hub.sock \\
    TRIO_CHAT_HUB_SECRET_FILE=/etc/trio-chat/hub.secret trio-chat-hub

then start Hypercorn with the same two variables. Workers also use this entry point to start
the automatic hub, handing it the secret on standard input; such a hub answers on standard
output with one line, ``ready`` once it listens or ``error <why>`` if it cannot start
(``--refusal-on-stdout``), and its starter reports the reason (a hub started by hand writes it
to standard error).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing.util
import os
import secrets
import sys
from pathlib import Path

from ..config import STORE_KINDS, ConfigError, Settings
from ..hub_address import (
    MIN_SECRET_BYTES,
    Address,
    HubConfigError,
    describe_address,
    is_loopback,
    parse_address,
    read_secret_file,
)
from .port_claim import PortClaimed, PortClaims, automatic_chat, claim_ports
from .server import HANDSHAKE_TIMEOUT_SECONDS, serve
from .store import MS_PER_DAY, MessageStore, Retention, StoreError

SECRET_BYTES = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    if args.new_secret_file is not None:
        return _write_new_secret(args.new_secret_file)
    try:
        settings = Settings.from_env()
        listen = args.listen or settings.hub
        if not listen:
            raise HubConfigError("say where to listen: --listen unix:PATH or tcp://HOST:PORT")
        address = parse_address(listen)
        if not args.allow_remote:
            _refuse_remote(address)
        authkey = _read_secret(args, settings)
        # Before the store: a second server on the same port and in the same folder is told
        # about the port, the root of the clash. Answered at once (from a daemon thread): the
        # store may take a while to check, and a server asking meanwhile must be told.
        claims = _claim_ports(args)
        claims.answer_in_background()
        store = _open_store(args, settings)
    except (ConfigError, HubConfigError, StoreError, PortClaimed) as error:
        return _refuse(args, str(error))
    try:
        serve(
            address,
            authkey,
            mailbox_size=args.mailbox_size or settings.mailbox_size,
            history_size=args.history_size or settings.history_size,
            max_rooms=args.max_rooms or settings.max_rooms,
            store=store,
            retention=Retention(
                max_age_ms=round(settings.retention_days * MS_PER_DAY),
                per_room=settings.retention_messages,
            ),
            watch_pid=args.watch_pid,
            handshake_timeout=args.handshake_timeout,
            on_ready=_announce_ready if args.secret_stdin else lambda: None,
        )
    except HubConfigError as error:
        return _refuse(args, str(error))
    finally:
        if args.lock_file is not None:
            # The automatic hub ends after its server: nobody can be waiting on the lock.
            args.lock_file.unlink(missing_ok=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-chat-hub", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", help="unix:PATH or tcp://HOST:PORT (default: $TRIO_CHAT_HUB)")
    parser.add_argument(
        "--secret-file", type=Path, help="default: $TRIO_CHAT_HUB_SECRET_FILE (mode 600)"
    )
    parser.add_argument("--mailbox-size", type=int, help="default: $TRIO_CHAT_MAILBOX_SIZE")
    parser.add_argument("--history-size", type=int, help="default: $TRIO_CHAT_HISTORY_SIZE")
    parser.add_argument("--max-rooms", type=int, help="default: $TRIO_CHAT_MAX_ROOMS")
    parser.add_argument(
        "--store", choices=STORE_KINDS, help="where messages are kept (default: $TRIO_CHAT_STORE)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the SQLite store's folder (default: $TRIO_CHAT_DATA_DIR)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a TCP address other hosts can reach (anyone with the secret can run "
        "code in the hub: only on a network where every host is trusted)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=_positive_seconds,
        default=HANDSHAKE_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="disconnect peers that have not authenticated after this long (default: %(default)s)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    parser.add_argument(
        "--new-secret-file", type=Path, metavar="PATH", help="write a new random secret and exit"
    )
    # Used when a worker starts the automatic hub.
    parser.add_argument("--secret-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--watch-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lock-file", type=Path, help=argparse.SUPPRESS)
    # Say why the hub cannot start on standard output (``error <why>``), for its starter.
    parser.add_argument("--refusal-on-stdout", action="store_true", help=argparse.SUPPRESS)
    # PORT=ADDRESS, once per port the server listens on through SO_REUSEPORT (``port_claim``);
    # the server is the one whose master is --watch-pid, and its chat the automatic hub's own.
    parser.add_argument(
        "--claim-port", action="append", default=[], type=_port_and_address, help=argparse.SUPPRESS
    )
    return parser


def _port_and_address(text: str) -> tuple[int, str]:
    port, sep, address = text.partition("=")
    if not sep or not port.isdigit() or not address:
        raise argparse.ArgumentTypeError(f"{text}: expected PORT=ADDRESS")
    return int(port), address


def _claim_ports(args: argparse.Namespace) -> PortClaims:
    if args.claim_port and args.watch_pid is None:
        raise HubConfigError("--claim-port needs --watch-pid, the server's master")
    master = args.watch_pid or 0
    return claim_ports(master, dict(args.claim_port), automatic_chat(master))


def _refuse(args: argparse.Namespace, reason: str) -> int:
    """Say why the hub cannot start: to its starter on standard output (a worker, which
    reports it as its server's reason not to start), or on standard error."""
    if args.refusal_on_stdout:
        print(f"error {' '.join(reason.split())}", flush=True)
    else:
        print(f"trio-chat-hub: {reason}", file=sys.stderr)
    return 2


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0")
    return seconds


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s [hub %(process)d] %(levelname)s %(message)s"
    )
    if level == "DEBUG":
        # The manager server's own messages too (connections, objects, errors), which
        # multiprocessing keeps to itself unless asked.
        multiprocessing.util.log_to_stderr(logging.DEBUG)


def _refuse_remote(address: Address) -> None:
    if not is_loopback(address):
        raise HubConfigError(
            f"{describe_address(address)} is not a loopback address: other hosts could reach "
            "the hub, and any peer with the secret can run code in it (it unpickles what "
            "peers send); listen on unix:PATH or a loopback address, or pass --allow-remote "
            "if every host on that network is trusted"
        )


def _read_secret(args: argparse.Namespace, settings: Settings) -> bytes:
    if args.secret_stdin:
        try:
            secret = bytes.fromhex(sys.stdin.readline().strip())
        except ValueError:
            secret = b""
        if len(secret) < MIN_SECRET_BYTES:
            # Its starter died before handing it over, say: never serve with a weak key.
            raise HubConfigError("no secret (or too short a one) came on standard input")
        return secret
    path = args.secret_file or settings.hub_secret_file
    if path is None:
        raise HubConfigError("give the secret: --secret-file PATH or TRIO_CHAT_HUB_SECRET_FILE")
    return read_secret_file(path)


def _open_store(args: argparse.Namespace, settings: Settings) -> MessageStore | None:
    if (args.store or settings.store) == "memory":
        return None
    return MessageStore.open(args.data_dir or settings.data_dir)


def _announce_ready() -> None:
    # The worker that started us waits for this line; after it, stdout is not ours any more.
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_new_secret(path: Path) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        print(f"trio-chat-hub: cannot create {path}: {error.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(SECRET_BYTES) + "\n")
    print(f"wrote a new hub secret to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
