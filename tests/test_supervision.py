"""supervision.py: a worker's watches are in place once started, and it waits for its master's
exit on a pidfd, in its own event loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import trio
import trio.testing

from trio_chat.supervision import supervise, wait_for_exit

EXIT_TIMEOUT_SECONDS = 10.0


class IdleWorker:
    """A worker with no sessions, as supervision sees it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.shutting_down = trio.Event()
        self.closing = False
        self.connections = 0
        self.open_sessions = 0

    def close_all_sessions(self) -> None:
        self.closing = True


async def test_once_supervision_has_started_sigterm_is_handled() -> None:
    """Startup completes right after: a SIGTERM then must not find the default action, which
    would end the worker without a goodbye to its clients."""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, IdleWorker())

        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        nursery.cancel_scope.cancel()


@pytest.mark.process
async def test_waiting_for_a_process_wakes_at_its_exit_and_takes_no_thread() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    assert process.stdin is not None
    threads = threading.active_count()
    exited = trio.Event()

    async def wait() -> None:
        await wait_for_exit(process.pid)
        exited.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not exited.is_set()
        assert threading.active_count() == threads

        await process.stdin.aclose()  # The child reads to the end of its input, then exits.
        with trio.fail_after(EXIT_TIMEOUT_SECONDS):
            await exited.wait()
    await process.wait()


@pytest.mark.process
async def test_waiting_for_a_process_that_is_gone_returns_at_once() -> None:
    process = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await process.wait()  # Exited and reaped: its pid is free.

    with trio.fail_after(EXIT_TIMEOUT_SECONDS):
        await wait_for_exit(process.pid)
