"""Bring up the automatic hub: exactly one per Hypercorn server, however many workers race.

Workers call ``connect_or_start`` at startup and after losing the hub. Under an exclusive lock
on the server's lock file, the first one finds no hub answering, starts one and waits until it
listens; the others then find it answering. Everything here blocks: it runs in a thread of the
Trio bridge.

The hub claims its server's ports (``hub.port_claim``) and opens its store before it listens;
if it cannot (another chat's server has the port, or another server the data folder), it says
why in one line, and ``HubRefused`` carries that line up to the worker's startup, which fails
with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

from ...config import Settings
from ...hub_address import Endpoint
from ...process_watch import has_exited
from .client import HubClient

logger = logging.getLogger("trio_chat.hub")

#: How long a new hub process may take to listen (a Python start-up and two imports).
HUB_START_TIMEOUT_SECONDS = 30.0
#: After a hub this worker started failed to start (its store cannot be opened, say), it
#: starts no other for this long: its re-joins keep trying to connect, every second at most,
#: but do not spawn a process and check the store each time.
HUB_RESTART_BACKOFF_SECONDS = 15.0

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])

# Hubs this process started. The hub outlives us as a rule (it ends with the Hypercorn master),
# but one that dies first is reaped here rather than left a zombie.
_started: list[subprocess.Popen[bytes]] = []
# When a hub this process started last failed to start (``time.monotonic``), and why.
_last_failure: tuple[float, HubStartError] | None = None


class HubStartError(Exception):
    pass


class HubRefused(HubStartError):
    """The hub would not start, and said why: its server must not start either (another
    server has its port or its data folder, or a setting is wrong)."""


def connect_or_start(endpoint: Endpoint, settings: Settings) -> HubClient:
    """Connect to the endpoint's hub, starting it first (with the hub's ``settings``: sizes,
    limits, store) if it is automatic and not running."""
    if not endpoint.autostart:
        return HubClient(endpoint.address, endpoint.authkey)
    assert endpoint.lock_path is not None and endpoint.owner_pid is not None
    if has_exited(endpoint.owner_pid):
        # Checked before the lock too, which would create its file again for nobody.
        _refuse_for_a_server_gone(endpoint)
    with _exclusive_lock(endpoint.lock_path):
        try:
            return HubClient(endpoint.address, endpoint.authkey)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # No hub yet, or a dead one's socket: ours to start. Other errors (too many
            # open files, say) say nothing about the hub: they go up, and the caller retries.
        if has_exited(endpoint.owner_pid):
            _refuse_for_a_server_gone(endpoint)
        _start_hub_unless_it_just_failed(endpoint, settings)
    return HubClient(endpoint.address, endpoint.authkey)


def _refuse_for_a_server_gone(endpoint: Endpoint) -> NoReturn:
    """The server the hub would belong to is gone (its master was killed, or it is ending and
    its hub went first): such a hub would end at once, and this worker is on its way out too
    (``supervision``). Nobody will start a hub under the lock again: its file goes."""
    assert endpoint.lock_path is not None
    endpoint.lock_path.unlink(missing_ok=True)
    raise HubStartError(f"the server's master process {endpoint.owner_pid} has exited")


@contextlib.contextmanager
def _exclusive_lock(path: Path):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # Also releases the lock.


def _start_hub_unless_it_just_failed(endpoint: Endpoint, settings: Settings) -> None:
    global _last_failure
    if _last_failure is not None:
        failed_at, failure = _last_failure
        if time.monotonic() - failed_at < HUB_RESTART_BACKOFF_SECONDS:
            raise type(failure)(f"{failure} (not tried again yet)")
    try:
        _start_hub(endpoint, settings)
    except HubStartError as error:
        _last_failure = (time.monotonic(), error)
        raise
    _last_failure = None


def _start_hub(endpoint: Endpoint, settings: Settings) -> None:
    assert isinstance(endpoint.address, str)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(endpoint.address)  # A dead hub's socket; we hold the lock, so no one uses it.
    command = [
        sys.executable,
        "-m",
        "trio_chat.hub",
        "--listen",
        endpoint.describe(),
        "--watch-pid",
        str(endpoint.owner_pid),
        "--lock-file",
        str(endpoint.lock_path),
        "--mailbox-size",
        str(settings.mailbox_size),
        "--history-size",
        str(settings.history_size),
        "--max-rooms",
        str(settings.max_rooms),
        "--store",
        settings.store,
        # The worker's own view of a relative folder: the hub must open the same one.
        "--data-dir",
        str(settings.data_dir.absolute()),
        "--secret-stdin",
        "--refusal-on-stdout",
    ]
    for port, address in endpoint.claimed_ports:
        command += ["--claim-port", f"{port}={address}"]
    if logger.isEnabledFor(logging.DEBUG):
        # The hub logs to our stderr; it is as talkative as we are asked to be about it.
        command += ["--log-level", "DEBUG"]
    environment = dict(os.environ)
    # The hub imports this very package, even when it is run from a source tree.
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [_PACKAGE_PARENT, environment.get("PYTHONPATH")])
    )
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
        # Its own session: a Ctrl+C in the terminal goes to Hypercorn, which shuts the workers
        # down gracefully; the hub must stay up for them meanwhile and ends after the master.
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    with process.stdin:
        process.stdin.write(endpoint.authkey.hex().encode() + b"\n")
    with process.stdout:
        readable, _, _ = select.select([process.stdout], [], [], HUB_START_TIMEOUT_SECONDS)
        line = process.stdout.readline() if readable else b""
    answer = line.decode(errors="replace").strip()
    if answer != "ready":
        process.kill()
        process.wait()
        if answer.startswith("error "):
            raise HubRefused(answer.removeprefix("error "))
        raise HubStartError(
            f"the hub process did not start (exit code {process.returncode}); see its log above"
        )
    _started[:] = [hub for hub in _started if hub.poll() is None]
    _started.append(process)
    logger.info("started the hub (pid %d) on %s", process.pid, endpoint.describe())
