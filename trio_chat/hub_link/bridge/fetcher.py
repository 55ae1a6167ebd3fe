"""The fetching thread: it fetches for as long as a membership is read, and hands each batch
to the reader task as it comes.

No thread is woken per fetch, and at most ``READ_AHEAD`` batches wait for the reader, so a busy
worker slows the fetching down instead of piling batches up.

Stopping: ``stop`` is seen by the thread before its next fetch; the fetch it is in (up to a
heartbeat) is not interrupted, and its batch is dropped. A reader that cannot wait that long
(it is cancelled, or the hub went silent) also abandons the thread (``threads``).
"""

from __future__ import annotations

import contextlib
import threading

import trio

from .backend import Fetched, Membership

#: Fetched batches that may wait for the reader task.
READ_AHEAD = 2


class Fetcher:
    """One membership's fetching thread (``run``), and the reader's side of it (``next``)."""

    def __init__(self, membership: Membership, max_frames: int) -> None:
        self._membership = membership
        self._max_frames = max_frames
        self._token = trio.lowlevel.current_trio_token()
        self._send, self._receive = trio.open_memory_channel[Fetched | BaseException | None](
            READ_AHEAD
        )
        # Taken by the thread before each fetch, given back once the reader has the batch: the
        # channel can never be full when a batch is handed over.
        self._slots = threading.Semaphore(READ_AHEAD)
        self._stopped = False

    def run(self) -> None:
        """The thread: fetch until the membership ends or fails, or the reader stops."""
        while True:
            self._slots.acquire()
            if self._stopped:
                return
            result: Fetched | BaseException | None
            try:
                result = self._membership.fetch(self._max_frames)
            except Exception as error:
                result = error
            try:
                self._token.run_sync_soon(self._hand_over, result)
            except trio.RunFinishedError:
                return
            if not isinstance(result, Fetched):
                return  # The membership is over.

    def _hand_over(self, result: Fetched | BaseException | None) -> None:
        # If the reader has stopped, the batch is dropped; the thread stops after this fetch.
        with contextlib.suppress(trio.BrokenResourceError):
            self._send.send_nowait(result)

    async def next(self) -> Fetched | None:
        """The next batch; raises what the fetch raised."""
        result = await self._receive.receive()
        self._slots.release()
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        self._stopped = True
        self._receive.close()
        self._slots.release()  # A thread waiting for a slot sees the stop.
