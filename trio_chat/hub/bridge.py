"""The Trio side of a hub backend with a blocking client: the only place trio_chat enters threads.

Both networked backends (the multiprocessing manager hub and Redis Streams) have blocking
clients: each call is a socket round trip, so it runs in a worker thread via
``trio.to_thread.run_sync``. ``BridgedHub`` drives a ``Backend`` with two long-lived loops per
worker:

- the **reader**: one thread (``Fetcher``) blocks in ``Membership.fetch`` for as long as the
  membership lasts, and hands every batch of frames to the reader task, which gives it to the
  listener (the room) the moment it arrives: no polling, one round trip per batch, and no thread
  to wake per batch;
- the **publisher** takes what sessions want published from a bounded outbox, and the presence
  changes of the worker's connections, and sends all that is waiting in one ``update`` call,
  then tells the senders whose bodies could not be published. Sessions do not wait for that
  round trip (``submit``): a client's next message is read meanwhile. Round trips are paced
  (``UPDATES_PER_SECOND``), so under load each carries many bodies, while an occasional one
  goes at once. A backend that needs calls even when nothing happens (Redis: the worker's
  lease, coalesced presence) says when the next one is due.

Presence changes are state, not a queue: the latest name of each changed connection waits in a
dict (bounded by the number of connections) until the next ``update``. If the link breaks, the
worker re-joins with the names of all its connections, so nothing needs replaying.

Cancellation: ``fetch`` blocks while the chat is quiet (up to a heartbeat, after which it
returns empty and is called again), so the reader's thread is abandoned when the reader is
cancelled (``abandon_on_cancel=True``); it stops after the fetch it is in, whose frames are
dropped. That is harmless: the reader is only cancelled or stopped when the worker leaves the
hub or re-joins it, and a re-join tells the clients what may be missing. Publishes are
abandoned too on cancellation, at shutdown, where no sender waits any more.

If the hub goes away (a call fails) or hangs (a call goes unanswered, ``HUB_CALL_TIMEOUT_SECONDS``,
or no fetch returns for ``HUB_SILENCE_SECONDS``), the reader reconnects with backoff, re-joins,
and tells the listener when messages may have been missed meanwhile; while the link is down,
publishing fails at once with ``HubUnavailable``. A worker is never deaf without knowing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import trio

from ..config import Settings
from ..guards import TokenBucket
from ..protocol import message_id
from .core import Snapshot
from .interface import HubLink, HubListener, HubUnavailable

logger = logging.getLogger("trio_chat.hub")

T = TypeVar("T")

#: Frames taken per fetch, and bodies published per round trip. A batch is queued whole for
#: each subscriber, so it is also kept to a quarter of a subscriber's buffer.
MAX_BATCH = 256
#: Threads for hub calls: the reader's fetching thread holds one for as long as it runs, the
#: publisher one per round trip; the rest serve joining clients' snapshots, in parallel, and
#: joining and leaving.
HUB_THREADS = 8
#: Fetched batches that may wait for the reader task.
READ_AHEAD = 2
#: Round trips the publisher makes at most per second on average, and back to back: under load
#: everything that waits goes in the next one, so a round trip carries many bodies.
UPDATES_PER_SECOND = 100
UPDATE_BURST = 4
RECONNECT_FIRST_DELAY_SECONDS = 0.05
RECONNECT_MAX_DELAY_SECONDS = 1.0
LEAVE_TIMEOUT_SECONDS = 2.0
#: A hub that hangs (stopped, swapping, deadlocked) keeps its connections open, so no call
#: fails: it just never answers. Every call but ``fetch`` gives up after this long, its thread
#: abandoned, and counts as a broken link...
HUB_CALL_TIMEOUT_SECONDS = 10.0
#: ... and so does a ``fetch`` that brings nothing for this long: it returns at least once per
#: heartbeat (5 s, with either backend), even when the chat is quiet.
HUB_SILENCE_SECONDS = 15.0
#: A join may have to start the hub first (the manager hub's launcher waits up to 30 s for it).
JOIN_TIMEOUT_SECONDS = 45.0


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Frames in hub order; ``missed``: some that belong before them will never arrive."""

    frames: list[str]
    missed: bool = False


class Membership(Protocol):
    """One worker joined to the hub, through blocking calls (made from threads)."""

    #: Which run of ids the hub's are (``Snapshot.epoch``).
    epoch: str
    #: Whether the frames published since the worker's previous membership all follow (only
    #: a backend with a durable log can know; the others never do).
    continuous: bool

    @property
    def update_due_in(self) -> float | None:
        """Seconds until ``update`` must be called even with nothing to send; None: never.

        ``update`` and ``snapshot`` may change it (e.g. a presence frame falls due)."""

    def fetch(self, max_frames: int) -> Fetched | None:
        """Wait (up to a heartbeat) for frames; None once the hub has dropped this member."""

    def update(self, bodies: Sequence[str], presence: Mapping[int, str | None]) -> None:
        """Publish ``bodies`` in order and apply presence changes (None: gone)."""

    def snapshot(
        self, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot: ...

    def leave(self) -> None: ...


class Backend(Protocol):
    #: What a broken or absent hub raises from its client.
    link_errors: tuple[type[BaseException], ...]
    #: Whether a join replaces what the hub still has of the worker's previous membership (then
    #: there is no leaving before re-joining, which would show its users leaving and coming back).
    rejoin_replaces: bool

    def describe(self) -> str:
        """Where the hub is, for logs and errors."""

    def join(self, label: str, presence: Mapping[int, str], last_id: int, epoch: str) -> Membership:
        """Connect and join with the worker's connections; ``last_id`` and ``epoch``: the
        highest id the worker has seen, and the run of ids it was part of."""


class _HubSilent(Exception):
    """The hub has not answered a fetch for ``HUB_SILENCE_SECONDS``."""


class _Pending:
    """A body waiting to be published, and who to tell if it is not: a pipelining sender's
    ``on_failure``, or a waiting one's ``done`` event."""

    __slots__ = ("body", "done", "on_failure", "published")

    def __init__(
        self,
        body: str,
        on_failure: Callable[[], None] | None = None,
        done: trio.Event | None = None,
    ) -> None:
        self.body = body
        self.on_failure = on_failure
        self.done = done
        self.published = False

    def settle(self) -> None:
        if self.done is not None:
            self.done.set()
        if not self.published and self.on_failure is not None:
            try:
                self.on_failure()
            except Exception:
                # A bug in the sender's callback must not stop the publisher.
                logger.exception("event=publish_failure_report_error")


class Fetcher:
    """One thread that fetches for as long as a membership is read, handing each batch to the
    reader task as it comes: no thread is woken per fetch, and at most ``READ_AHEAD`` batches
    wait for the reader, so a busy worker slows the fetching down instead of piling batches up.
    """

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


class BridgedHub:
    """A backend's client in one worker: both the ``Hub`` and the worker's ``HubLink``."""

    def __init__(self, backend: Backend, settings: Settings, *, label: str):
        self.backend = backend
        self._label = label
        self._membership: Membership | None = None
        # None in the outbox only wakes the publisher for presence changes.
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[_Pending | None](
            settings.outbox_size
        )
        #: Taken from the outbox by the publisher, not yet sent.
        self._taken: list[_Pending] = []
        self._publisher_scope = trio.CancelScope()
        #: Shields the round trip under way (a cancelled publisher finishes it first), until
        #: ``_leave_deadline``, set when the worker leaves.
        self._update_scope = trio.CancelScope()
        self._leave_deadline = math.inf
        self._presence: dict[int, str] = {}
        self._presence_changes: dict[int, str | None] = {}
        self._threads = trio.CapacityLimiter(HUB_THREADS)
        self._fetch_batch = max(1, min(MAX_BATCH, settings.subscriber_buffer // 4))
        #: When the backend wants its next ``update`` (``trio.current_time``), even an empty one,
        #: and the publisher's wait for the outbox, which ends then.
        self._update_due = math.inf
        self._outbox_wait = trio.CancelScope()
        #: The highest message id delivered, and the hub's epoch: a hub that lost its state
        #: goes on from them.
        self._last_id = 0
        self._epoch = ""

    @property
    def connected(self) -> bool:
        return self._membership is not None

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            membership = await self._join()
        except self.backend.link_errors as error:
            raise HubUnavailable(
                f"cannot reach the hub at {self.backend.describe()}: {error}"
            ) from error
        async with trio.open_nursery() as nursery:
            publisher_done = trio.Event()
            nursery.start_soon(self._publish_loop, publisher_done)
            task_status.started(self)
            try:
                rejoined = dropped = False
                while True:
                    self._set_membership(membership)
                    if rejoined and (dropped or not membership.continuous):
                        listener.messages_missed(membership.epoch)
                    dropped = await self._read_until_lost(membership, listener)
                    self._membership = None
                    if not self.backend.rejoin_replaces:
                        # If the hub is still there (only our link failed), leave it properly.
                        await self._leave(membership)
                    membership, rejoined = await self._rejoin(), True
            finally:
                self._membership = None  # No more submits: they are told the hub is down.
                with trio.CancelScope(shield=True):
                    # What sessions submitted before they ended goes out before we leave,
                    # after the round trip under way (so a sender's order holds).
                    self._leave_deadline = trio.current_time() + LEAVE_TIMEOUT_SECONDS
                    self._update_scope.deadline = min(
                        self._update_scope.deadline, self._leave_deadline
                    )
                    self._publisher_scope.cancel()
                    await publisher_done.wait()
                    await self._send_taken(membership, limit=math.inf)
                    await self._leave(membership)
                nursery.cancel_scope.cancel()

    async def publish(self, body: str) -> None:
        pending = _Pending(body, done=trio.Event())
        await self._enqueue(pending)
        assert pending.done is not None
        await pending.done.wait()
        if not pending.published:
            raise HubUnavailable("the hub is unreachable right now")

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        await self._enqueue(_Pending(body, on_failure=on_failure))

    async def _enqueue(self, pending: _Pending) -> None:
        if self._membership is None:
            raise HubUnavailable("the hub is unreachable right now")
        await self._outbox_send.send(pending)

    async def snapshot(
        self, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        # Recorded here first: if the call fails, the next join carries it.
        self._presence[connection] = name
        membership = self._membership
        if membership is None:
            raise HubUnavailable("the hub is unreachable right now")
        try:
            snapshot = await self._call(membership.snapshot, since, epoch, connection, name)
        except self.backend.link_errors as error:
            raise HubUnavailable("the hub is unreachable right now") from error
        self._schedule_update(membership)
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

    def _set_membership(self, membership: Membership) -> None:
        self._membership = membership
        if membership.epoch != self._epoch:
            self._last_id = 0  # Ids of another run mean nothing in this one.
        self._epoch = membership.epoch
        self._schedule_update(membership)

    def _schedule_update(self, membership: Membership | None) -> None:
        due_in = None if membership is None else membership.update_due_in
        self._update_due = math.inf if due_in is None else trio.current_time() + due_in
        self._outbox_wait.deadline = self._update_due

    async def _join(self) -> Membership:
        # Whatever changed before this join is in the presence the join sends.
        self._presence_changes.clear()
        # Abandoned if cancelled or unanswered (e.g. a shutdown while a hub is being started):
        # a membership it may still make is dropped by the hub when its lease runs out.
        return await self._call(
            self.backend.join,
            self._label,
            dict(self._presence),
            self._last_id,
            self._epoch,
            give_up_after=JOIN_TIMEOUT_SECONDS,
        )

    async def _rejoin(self) -> Membership:
        logger.warning("event=hub_down hub=%s", self.backend.describe())
        delay = RECONNECT_FIRST_DELAY_SECONDS
        # Even the first attempt waits: a link that breaks right after every join must not
        # spin.
        await trio.sleep(delay)
        while True:
            try:
                membership = await self._join()
            except self.backend.link_errors as error:
                logger.debug("hub reconnect failed: %s", error)
            except HubUnavailable as error:  # Our own deadline: the hub did not answer.
                logger.debug("hub reconnect failed: %s", error)
            except Exception:
                logger.exception("event=hub_reconnect_error")  # Logged, and tried again.
            else:
                logger.warning("event=hub_up hub=%s", self.backend.describe())
                return membership
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _read_until_lost(self, membership: Membership, listener: HubListener) -> bool:
        """Deliver what the membership fetches until it ends; returns whether fetched frames
        were dropped (a bug while delivering them), which the clients must be told."""
        async with trio.open_nursery() as nursery:
            fetcher = Fetcher(membership, self._fetch_batch)
            # Abandoned when cancelled: it ends after the fetch it is in (``Fetcher.stop``).
            nursery.start_soon(
                functools.partial(self._in_thread, fetcher.run, abandon_on_cancel=True)
            )
            try:
                dropped = await self._deliver_fetched(fetcher, listener)
            except _HubSilent:
                # Its thread may never come back from the fetch it is in: abandoned. (Another
                # membership may read meanwhile: only a hub that hangs comes here, and the
                # manager hub's new membership is a mailbox of its own.)
                fetcher.stop()
                nursery.cancel_scope.cancel()
                return False
            except BaseException:
                fetcher.stop()
                nursery.cancel_scope.cancel()
                raise
            # Not shutting down: the thread's last fetch (at most a heartbeat) ends before the
            # next membership reads, so the two never read at once.
            fetcher.stop()
            return dropped

    async def _deliver_fetched(self, fetcher: Fetcher, listener: HubListener) -> bool:
        while True:
            try:
                with trio.move_on_after(HUB_SILENCE_SECONDS) as waiting:
                    fetched = await fetcher.next()
                if waiting.cancelled_caught:
                    logger.warning(
                        "event=hub_unresponsive hub=%s silent_for=%g",
                        self.backend.describe(),
                        HUB_SILENCE_SECONDS,
                    )
                    raise _HubSilent
                if fetched is None:
                    # We did not leave, so the hub dropped us: we fell too far behind.
                    logger.warning("event=membership_lost hub=%s", self.backend.describe())
                    return False
                if fetched.missed:
                    listener.messages_missed(self._epoch)
                if fetched.frames:  # Empty: a heartbeat.
                    self._note_last_id(fetched.frames)
                    listener.deliver(fetched.frames)
            except self.backend.link_errors:
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
                self._last_id = found
                return

    async def _publish_loop(self, done: trio.Event) -> None:
        try:
            with self._publisher_scope:
                await self._publish_until_cancelled()
        finally:
            done.set()

    async def _publish_until_cancelled(self) -> None:
        pacer = TokenBucket(UPDATES_PER_SECOND, UPDATE_BURST, clock=trio.current_time)
        while True:
            with trio.move_on_at(self._update_due) as self._outbox_wait:
                first = await self._outbox_receive.receive()
                if first is not None:
                    self._taken.append(first)
            # Under load, what arrives meanwhile goes in the same round trip. (If cancelled
            # here, what was taken goes out when the worker leaves.)
            await trio.sleep_until(pacer.next_token_at())
            pacer.spend()
            await self._send_taken(self._membership, limit=MAX_BATCH)

    async def _send_taken(self, membership: Membership | None, *, limit: float) -> None:
        """One round trip with what was taken and what waits in the outbox (up to ``limit``
        bodies); then the senders whose bodies could not be published are told."""
        self._take_waiting(limit)
        batch, self._taken = self._taken, []
        try:
            await self._send_update(batch, membership)
        finally:
            for pending in batch:
                pending.settle()

    def _take_waiting(self, limit: float) -> None:
        while len(self._taken) < limit:
            try:
                item = self._outbox_receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                return
            if item is not None:
                self._taken.append(item)

    async def _send_update(self, batch: list[_Pending], membership: Membership | None) -> None:
        if membership is None:
            # Presence changes stay where they are: the next join sends every connection's
            # presence, and changes made while it runs go in the first update after it.
            self._schedule_update(None)  # The next membership says when it wants one.
            return
        changes, self._presence_changes = self._presence_changes, {}
        if not (batch or changes or trio.current_time() >= self._update_due):
            return
        bodies = [pending.body for pending in batch]
        try:
            # A round trip under way when the worker leaves ends first (``run`` gives it a
            # deadline), so that what is flushed after it cannot overtake it.
            deadline = min(self._leave_deadline, trio.current_time() + HUB_CALL_TIMEOUT_SECONDS)
            with trio.CancelScope(shield=True, deadline=deadline) as self._update_scope:
                await self._in_thread(membership.update, bodies, changes, abandon_on_cancel=True)
            if self._update_scope.cancelled_caught:
                raise HubUnavailable("the hub did not answer")
        except Exception as error:
            # The changes go again with the next update (newer ones for the same connection
            # win), whether the reader re-joins meanwhile or only this call failed (a hub
            # that refused a write, say). The senders are told their messages were not sent.
            self._presence_changes = {**changes, **self._presence_changes}
            if not isinstance(error, (*self.backend.link_errors, HubUnavailable)):
                logger.exception("event=hub_publish_error")  # A bug: logged, and we go on.
            return
        finally:
            self._schedule_update(membership)
        for pending in batch:
            pending.published = True

    async def _leave(self, membership: Membership) -> None:
        with trio.move_on_after(LEAVE_TIMEOUT_SECONDS):
            # If the hub is gone already, so is our membership.
            with contextlib.suppress(*self.backend.link_errors):
                await self._in_thread(membership.leave, abandon_on_cancel=True)

    async def _call(
        self, fn: Callable[..., T], *args: object, give_up_after: float = HUB_CALL_TIMEOUT_SECONDS
    ) -> T:
        """A hub call that gives up, abandoning its thread, when the hub does not answer."""
        with trio.move_on_after(give_up_after):
            return await self._in_thread(fn, *args, abandon_on_cancel=True)
        raise HubUnavailable(
            f"the hub at {self.backend.describe()} did not answer within {give_up_after:g} s"
        )

    async def _in_thread(
        self, fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False
    ) -> T:
        return await trio.to_thread.run_sync(
            fn, *args, abandon_on_cancel=abandon_on_cancel, limiter=self._threads
        )
