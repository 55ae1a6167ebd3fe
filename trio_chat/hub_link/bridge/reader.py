"""The reader: what a membership fetches goes to the listener (the room) the moment it arrives.

One thread (``Fetcher``) blocks in ``Membership.fetch`` for as long as the membership lasts,
and hands every batch of frames to the reader task: no polling, one round trip per batch, and
no thread to wake per batch.

A membership is read until it is lost: the hub dropped the worker, the link broke (a fetch
failed), or the hub hangs (no fetch returned for ``HUB_SILENCE_SECONDS``). The caller then
re-joins and tells the clients what may be missing: a worker is never deaf without knowing it.
The reader also keeps the worker's place in the hub's order (``epoch``, ``last_id``), which a
join hands to a hub that lost its state.

Cancellation: ``fetch`` blocks while the chat is quiet (up to a heartbeat), so a cancelled
reader does not wait for it: the thread is abandoned and stops after the fetch it is in, whose
frames are dropped. That is harmless: a thread is only abandoned when the worker leaves the hub
or re-joins it, and a re-join tells the clients what may be missing.
"""

from __future__ import annotations

import logging

import trio

from ...protocol import message_id
from ..interface import HubListener
from .backend import Backend, Membership
from .fetcher import Fetcher
from .threads import HubThreads

logger = logging.getLogger("trio_chat.hub")

#: A hub that hangs answers no fetch; one returns at least once per heartbeat (5 s, with
#: either backend) even when the chat is quiet, so none for this long means a broken link.
HUB_SILENCE_SECONDS = 15.0


class _HubSilent(Exception):
    """The hub has not answered a fetch for ``HUB_SILENCE_SECONDS``."""


class Reader:
    """Reads one membership after another, for one worker."""

    def __init__(self, backend: Backend, threads: HubThreads, *, batch: int) -> None:
        self._backend = backend
        self._threads = threads
        self._batch = batch
        #: The hub's run of ids, and the highest message id delivered in it: a hub that lost
        #: its state goes on from them.
        self.epoch = ""
        self.last_id = 0

    async def read_until_lost(self, membership: Membership, listener: HubListener) -> bool:
        """Deliver what ``membership`` fetches until it is lost; returns whether fetched frames
        were dropped (a bug while delivering them), which the clients must be told."""
        if membership.epoch != self.epoch:
            self.last_id = 0  # Ids of another run mean nothing in this one.
        self.epoch = membership.epoch
        # Where the worker stands even before a frame comes: a hub that replaces this one
        # gives it what follows (a worker that never got a frame is past what it joined after).
        self.last_id = max(self.last_id, membership.starts_after)
        async with trio.open_nursery() as fetching:
            fetcher = Fetcher(membership, self._batch)
            fetching.start_soon(self._threads.run_sync, fetcher.run)
            try:
                # Lost: the thread's last fetch (at most a heartbeat) ends before the next
                # membership reads, so the two never read at once.
                return await self._deliver_fetched(fetcher, listener)
            except _HubSilent:
                # Its thread may never come back from the fetch it is in: abandoned. (Another
                # membership may read meanwhile: only a hub that hangs comes here, and the
                # manager hub's new membership is a mailbox of its own.)
                fetching.cancel_scope.cancel()
                return False
            except BaseException:
                fetching.cancel_scope.cancel()
                raise
            finally:
                fetcher.stop()

    async def _deliver_fetched(self, fetcher: Fetcher, listener: HubListener) -> bool:
        while True:
            try:
                with trio.move_on_after(HUB_SILENCE_SECONDS) as waiting:
                    fetched = await fetcher.next()
                if waiting.cancelled_caught:
                    logger.warning(
                        "event=hub_unresponsive hub=%s silent_for=%g",
                        self._backend.describe(),
                        HUB_SILENCE_SECONDS,
                    )
                    raise _HubSilent
                if fetched is None:
                    # We did not leave, so the hub dropped us: we fell too far behind.
                    logger.warning("event=membership_lost hub=%s", self._backend.describe())
                    return False
                if fetched.missed:
                    listener.messages_missed(self.epoch)
                if fetched.frames:  # Empty: a heartbeat.
                    self._note_last_id(fetched.frames)
                    listener.deliver(fetched.frames)
            except self._backend.link_errors:
                return False
            except _HubSilent:
                raise
            except Exception:
                # A bug must not leave the worker deaf: log it, re-join, tell the clients.
                logger.exception("event=hub_reader_error")
                return True

    def _note_last_id(self, frames: list[str]) -> None:
        for frame in reversed(frames):
            found = message_id(frame)
            if found is not None:
                self.last_id = found
                return
