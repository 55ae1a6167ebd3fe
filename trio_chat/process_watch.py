"""Watching a process that is not our child: has it exited, and waiting until it does.

Both the hub process (it ends with the server it belongs to) and each worker (it ends with its
master) watch another process. On Linux a pidfd is readable once the process has exited,
zombie included, so waiting is woken by the exit itself rather than by polling; elsewhere the
process is polled for with ``kill(pid, 0)``. No trio here: the hub process does not load it
(a worker awaits the pidfd itself, ``supervision.wait_for_exit``).
"""

from __future__ import annotations

import math
import os
import select
import time

#: Without pidfds (not Linux), how often to check that the watched process is still there.
POLL_SECONDS = 1.0


class NoPidfd(Exception):
    """This system has no pidfds: poll with ``is_alive`` instead."""


def open_pidfd(pid: int) -> int | None:
    """A pidfd for process ``pid`` (the caller closes it), or None if it is gone already;
    ``NoPidfd`` where the system has none."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError) as error:
        raise NoPidfd from error


def wait_for_exit(pid: int, timeout: float | None = None) -> None:
    """Block until process ``pid`` has exited, or ``timeout`` seconds have passed."""
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    try:
        pidfd = open_pidfd(pid)
    except NoPidfd:
        while is_alive(pid) and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_SECONDS, left))
        return
    if pidfd is None:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def has_exited(pid: int) -> bool:
    """Whether process ``pid`` has exited, a zombie its parent has not reaped yet included."""
    try:
        pidfd = open_pidfd(pid)
    except NoPidfd:
        return not is_alive(pid)
    if pidfd is None:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], 0)  # Readable once it has exited.
        return bool(readable)
    finally:
        os.close(pidfd)


def is_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
