"""The Trio side of the manager hub: the only place where trio_chat enters threads.

Each hub call blocks on a socket round trip, so it runs in a worker thread via
``trio.to_thread.run_sync``. Per worker there are two long-lived loops:

- the **reader** blocks in ``fetch`` on the worker's mailbox and hands every batch of frames to
  the listener (the room) the moment it arrives: no polling, one round trip per batch;
- the **publisher** takes what sessions want published from a bounded outbox, and the presence
  changes of the worker's connections, and sends all that is waiting in one ``update`` call,
  then wakes each waiting sender.

Presence changes are state, not a queue: the latest name of each changed connection waits in a
dict (bounded by the number of connections) until the next ``update``. If the link breaks, the
worker re-joins with the names of all its connections, so nothing needs replaying.

Cancellation: ``fetch`` blocks while the chat is quiet (for up to the hub's heartbeat, after
which it returns empty and is called again), so the reader's thread is
abandoned when the reader is cancelled (``abandon_on_cancel=True``). An abandoned ``fetch`` can
still take frames that then go nowhere; that is harmless because the reader is only cancelled
when the worker leaves the hub, and ``leave`` (called right after) wakes the thread so that it
ends. Publishes are abandoned too on cancellation, at shutdown, where no sender waits any more.

If the hub goes away (a call fails), the reader reconnects with backoff (starting a new hub if
it is the automatic one), re-joins, and tells the listener that messages were missed; while the
link is down, publishing fails at once with ``HubUnavailable``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TypeVar

import trio

from ..config import Settings
from ..protocol import message_id
from .address import Endpoint, resolve_endpoint
from .core import Snapshot
from .interface import HubLink, HubListener, HubUnavailable
from .launcher import HubStartError, connect_or_start
from .manager import HUB_ERRORS, HubClient

logger = logging.getLogger("trio_chat.hub")

T = TypeVar("T")

#: Frames taken from the mailbox, and bodies published, per round trip. A batch is queued whole
#: for each subscriber, so it is also kept to a quarter of a subscriber's buffer.
MAX_BATCH = 256
#: Threads for hub calls: the reader and the publisher hold one each for as long as they run;
#: the rest serve joining clients' snapshots, in parallel, and joining and leaving.
HUB_THREADS = 8
RECONNECT_FIRST_DELAY_SECONDS = 0.05
RECONNECT_MAX_DELAY_SECONDS = 1.0
LEAVE_TIMEOUT_SECONDS = 2.0

_LINK_ERRORS: tuple[type[BaseException], ...] = (*HUB_ERRORS, HubStartError)


class _Pending:
    """A body waiting to be published, and the sender waiting for the outcome."""

    __slots__ = ("body", "done", "published")

    def __init__(self, body: str) -> None:
        self.body = body
        self.done = trio.Event()
        self.published = False


class ManagerHub:
    """The manager hub's client in one worker: both the ``Hub`` and the worker's ``HubLink``."""

    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._client: HubClient | None = None
        self._mailbox_id = ""
        self._label = f"{socket.gethostname()}:{os.getpid()}"
        # None in the outbox only wakes the publisher for presence changes.
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[_Pending | None](
            settings.outbox_size
        )
        self._presence: dict[int, str] = {}
        self._presence_changes: dict[int, str | None] = {}
        self._threads = trio.CapacityLimiter(HUB_THREADS)
        self._fetch_batch = max(1, min(MAX_BATCH, settings.subscriber_buffer // 4))
        #: The highest message id delivered, and the hub's epoch: a new hub goes on from them
        #: (``HubCore.join``).
        self._last_id = 0
        self._epoch = ""

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            self._endpoint = resolve_endpoint(self._settings)
        return self._endpoint

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            client, mailbox_id = await self._join()
        except _LINK_ERRORS as error:
            raise HubUnavailable(
                f"cannot reach the hub at {self.endpoint.describe()}: {error}"
            ) from error
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            task_status.started(self)
            try:
                while True:
                    self._client, self._mailbox_id = client, mailbox_id
                    await self._read_until_lost(client, mailbox_id, listener)
                    self._client = None
                    # If the hub is still there (only our link failed), free our old mailbox.
                    await self._leave(client, mailbox_id)
                    client, mailbox_id = await self._rejoin()
                    listener.messages_missed()
            finally:
                self._client = None
                with trio.CancelScope(shield=True):
                    await self._leave(client, mailbox_id)
                nursery.cancel_scope.cancel()

    async def publish(self, body: str) -> None:
        if self._client is None:
            raise HubUnavailable("the hub is unreachable right now")
        pending = _Pending(body)
        await self._outbox_send.send(pending)
        await pending.done.wait()
        if not pending.published:
            raise HubUnavailable("the hub is unreachable right now")

    async def snapshot(
        self, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        # Recorded here first: if the call fails, the next join carries it.
        self._presence[connection] = name
        client = self._client
        if client is None:
            raise HubUnavailable("the hub is unreachable right now")
        try:
            snapshot: Snapshot = await self._in_thread(
                client.snapshot, since, epoch, self._mailbox_id, {connection: name}
            )
        except HUB_ERRORS as error:
            raise HubUnavailable("the hub is unreachable right now") from error
        return snapshot

    def present(self, connection: int, name: str) -> None:
        self._presence[connection] = name
        self._change_presence(connection, name)

    def absent(self, connection: int) -> None:
        self._presence.pop(connection, None)
        self._change_presence(connection, None)

    def _change_presence(self, connection: int, name: str | None) -> None:
        self._presence_changes[connection] = name
        # A full outbox means the publisher is busy and will take the change with it anyway.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._outbox_send.send_nowait(None)

    async def _join(self) -> tuple[HubClient, str]:
        endpoint = self.endpoint
        sizes = (self._settings.mailbox_size, self._settings.history_size)
        # Whatever changed before this join is in the snapshot the join sends.
        self._presence_changes.clear()
        presence = dict(self._presence)
        last_id, epoch = self._last_id, self._epoch

        def connect_and_join() -> tuple[HubClient, str, str]:
            client = connect_or_start(endpoint, *sizes)
            mailbox_id = client.join(self._label, presence, last_id, epoch)
            return client, mailbox_id, client.current_epoch()

        # Abandoned if cancelled (e.g. a shutdown while a hub is being started): a mailbox it
        # may still open is dropped by the hub when its lease runs out.
        client, mailbox_id, self._epoch = await self._in_thread(
            connect_and_join, abandon_on_cancel=True
        )
        return client, mailbox_id

    async def _rejoin(self) -> tuple[HubClient, str]:
        logger.warning("event=hub_down hub=%s", self.endpoint.describe())
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                client, mailbox_id = await self._join()
            except _LINK_ERRORS as error:
                logger.debug("hub reconnect failed: %s", error)
            except Exception:
                logger.exception("event=hub_reconnect_error")  # Logged, and tried again.
            else:
                logger.warning("event=hub_up hub=%s", self.endpoint.describe())
                return client, mailbox_id
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _read_until_lost(
        self, client: HubClient, mailbox_id: str, listener: HubListener
    ) -> None:
        while True:
            try:
                frames = await self._in_thread(
                    client.fetch, mailbox_id, self._fetch_batch, abandon_on_cancel=True
                )
                if frames is None:
                    # We did not leave, so the hub dropped our mailbox: we fell too far behind.
                    logger.warning("event=mailbox_evicted hub=%s", self.endpoint.describe())
                    return
                if frames:  # Empty: the hub's heartbeat, which also tells it we are alive.
                    self._note_last_id(frames)
                    listener.deliver(frames)
            except HUB_ERRORS:
                return
            except Exception:
                # A bug must not leave the worker deaf: log it, re-join, tell the clients.
                logger.exception("event=hub_reader_error")
                return

    def _note_last_id(self, frames: list[str]) -> None:
        for frame in reversed(frames):
            found = message_id(frame)
            if found is not None:
                self._last_id = found
                return

    async def _publish_loop(self) -> None:
        async for first in self._outbox_receive:
            batch = [first] if first is not None else []
            while len(batch) < MAX_BATCH:
                try:
                    item = self._outbox_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if item is not None:
                    batch.append(item)
            changes, self._presence_changes = self._presence_changes, {}
            try:
                await self._send_update(batch, changes)
            finally:
                for pending in batch:
                    pending.done.set()

    async def _send_update(self, batch: list[_Pending], changes: dict[int, str | None]) -> None:
        client = self._client
        if client is None or not (batch or changes):
            return
        bodies = [pending.body for pending in batch]
        try:
            await self._in_thread(
                client.update, self._mailbox_id, bodies, changes, abandon_on_cancel=True
            )
        except HUB_ERRORS:
            return  # The reader notices the broken link, reconnects and re-joins.
        except Exception:
            # A bug: these senders are told their messages were not sent; the next batch goes on.
            logger.exception("event=hub_publish_error")
            return
        for pending in batch:
            pending.published = True

    async def _leave(self, client: HubClient, mailbox_id: str) -> None:
        with trio.move_on_after(LEAVE_TIMEOUT_SECONDS):
            # If the hub is gone already, so is our mailbox.
            with contextlib.suppress(*HUB_ERRORS):
                await self._in_thread(client.leave, mailbox_id, abandon_on_cancel=True)

    async def _in_thread(
        self, fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False
    ) -> T:
        return await trio.to_thread.run_sync(
            fn, *args, abandon_on_cancel=abandon_on_cancel, limiter=self._threads
        )
