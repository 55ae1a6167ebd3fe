"""supervision.py: a worker's watches are in place once started, it closes its sessions as soon
as its master begins a stop or a reload, and it waits for its master's exit on a pidfd, in its
own event loop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
import trio
import trio.testing

from trio_chat.protocol import CloseCode
from trio_chat.supervision import SHUTDOWN_EVENT_POLL_SECONDS, supervise, wait_for_exit

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


class RecordingWorker(IdleWorker):
    """An idle worker that records the close codes its sessions were closed with."""

    def __init__(self) -> None:
        super().__init__()
        self.close_codes: list[CloseCode] = []

    def close_all_sessions(self, code: CloseCode = CloseCode.GOING_AWAY) -> None:
        super().close_all_sessions()
        self.close_codes.append(code)


class FakeShutdownEvent:
    """The master's ``multiprocessing.Event`` as the worker sees it: a flag it can look at."""

    def __init__(self) -> None:
        self.set_at: float | None = None
        self.looks = 0

    def set(self) -> None:
        self.set_at = trio.current_time()

    def is_set(self) -> bool:
        self.looks += 1
        return self.set_at is not None


async def test_sessions_are_closed_with_1001_as_soon_as_the_master_sets_its_event(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    worker = RecordingWorker()
    event = FakeShutdownEvent()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, worker, event)
        await trio.sleep(3600)  # An hour of serving: nothing happens while the event is clear.
        assert worker.close_codes == []
        assert event.looks >= 3600 / SHUTDOWN_EVENT_POLL_SECONDS

        event.set()
        await worker.shutting_down.wait()

        assert worker.close_codes == [CloseCode.GOING_AWAY]
        assert event.set_at is not None
        assert trio.current_time() - event.set_at <= SHUTDOWN_EVENT_POLL_SECONDS
        nursery.cancel_scope.cancel()
    assert [record.message for record in caplog.records if "shutdown_begun" in record.message] == [
        f"event=shutdown_begun pid={worker.pid} connections=0"
    ]


async def test_the_event_adds_nothing_once_shutdown_has_begun_otherwise(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """SIGTERM (or the master's exit) closed the sessions first: the event, set just after,
    closes nothing twice and logs nothing."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    worker = RecordingWorker()
    event = FakeShutdownEvent()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, worker, event)
        worker.close_all_sessions()
        event.set()
        await trio.sleep(10 * SHUTDOWN_EVENT_POLL_SECONDS)

        assert worker.close_codes == [CloseCode.GOING_AWAY]
        nursery.cancel_scope.cancel()
    assert not [record for record in caplog.records if "shutdown_begun" in record.message]


async def test_without_a_hypercorn_master_there_is_no_event_to_watch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = RecordingWorker()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, worker)
        await trio.sleep(60)

        assert worker.close_codes == []
        nursery.cancel_scope.cancel()
