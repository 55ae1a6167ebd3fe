"""supervision.py: a worker waits for its master's exit on a pidfd, in its own event loop."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import trio
import trio.testing

from trio_chat.supervision import wait_for_exit

pytestmark = pytest.mark.process

EXIT_TIMEOUT_SECONDS = 10.0


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


async def test_waiting_for_a_process_that_is_gone_returns_at_once() -> None:
    process = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await process.wait()  # Exited and reaped: its pid is free.

    with trio.fail_after(EXIT_TIMEOUT_SECONDS):
        await wait_for_exit(process.pid)
