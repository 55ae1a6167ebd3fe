"""The hub process: a multiprocessing manager server around one ``HubCore``.

It runs until told to stop (SIGTERM, SIGINT) or, for the automatic hub, until the process it
watches (the Hypercorn master) exits, so it never outlives the server it belongs to. The
watch uses a pidfd where the kernel has them: woken by the exit itself, not by polling.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from types import FrameType

from .address import Address, describe_address
from .core import HubCore
from .manager import EXPOSED, HUB_TYPEID

logger = logging.getLogger("trio_chat.hub")

# Without pidfds (not Linux), how often to check that the watched process is still there.
_WATCH_POLL_SECONDS = 1.0
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


def serve(
    address: Address,
    authkey: bytes,
    *,
    mailbox_size: int,
    history_size: int,
    watch_pid: int | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve until stopped; ``on_ready`` runs once the socket accepts connections."""
    core = HubCore(
        mailbox_size=mailbox_size,
        history_size=history_size,
        presence_interval=PRESENCE_INTERVAL_SECONDS,
        presence_deliveries=PRESENCE_DELIVERIES_PER_SECOND,
        fetch_linger=FETCH_LINGER_SECONDS,
    )

    class ServingManager(BaseManager):
        pass

    ServingManager.register(HUB_TYPEID, callable=lambda: core, exposed=EXPOSED)
    server = ServingManager(address=address, authkey=authkey).get_server()
    try:
        if isinstance(address, str):
            os.chmod(address, 0o600)
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
        threading.Thread(target=core.run_housekeeping, name="housekeeping", daemon=True).start()
        if watch_pid is not None:
            threading.Thread(
                target=_stop_when_gone, args=(watch_pid,), name="watch-owner", daemon=True
            ).start()
        logger.info("hub listening on %s (pid %d)", describe_address(address), os.getpid())
        on_ready()
        server.serve_forever()
    finally:
        # The listener unlinks its own Unix socket when the process exits.
        logger.info("hub stopped")


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_when_gone(pid: int) -> None:
    wait_for_exit(pid)
    logger.info("process %d has exited: stopping the hub", pid)
    os.kill(os.getpid(), signal.SIGTERM)


def wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has exited (it need not be our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while _alive(pid):
            time.sleep(_WATCH_POLL_SECONDS)
        return
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
