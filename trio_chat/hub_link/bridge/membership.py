"""The worker's membership of the hub: joining, re-joining after a break, and leaving.

``BridgedHub`` joins through the backend, then runs a ``Publisher`` for as long as the worker
is joined and a ``Reader`` on one membership after another: when the reader loses one (the
hub dropped the worker, the link broke, the hub hangs), the worker re-joins with backoff, with
the names of all its connections, and tells the listener when messages may have been missed
meanwhile. While the link is down, publishing and snapshots fail at once with
``HubUnavailable``. While joined, it sends the hub the worker's figures every
``REPORT_INTERVAL_SECONDS``, and counts its re-joins. Its first report goes as soon as it has
joined, before ``run`` starts (so before the worker serves anyone: the hub's baseline of a new
worker is all zeros), and again at once after every re-join (a new hub's baseline of it).

Cancellation: a join is abandoned if cancelled or unanswered (``JOIN_TIMEOUT_SECONDS``; e.g. a
shutdown while a hub is being started): a membership it may still make is dropped by the hub
when its lease runs out. Leaving (``run`` cancelled) closes the publisher, whose round trip
under way and flush get ``LEAVE_TIMEOUT_SECONDS``, then hands in the worker's final figures
and leaves, each within as long again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

import trio

from ...config import Settings
from ...metrics.figures import ServerFigures, WorkerFigures, WorkerReport
from ..interface import (
    REPORT_INTERVAL_SECONDS,
    HubLink,
    HubListener,
    HubUnavailable,
    Member,
    Older,
    RoomCount,
    Snapshot,
)
from .backend import MAX_BATCH, Backend, Membership
from .publisher import Publisher
from .reader import Reader
from .threads import HubThreads

logger = logging.getLogger("trio_chat.hub")

T = TypeVar("T")

RECONNECT_FIRST_DELAY_SECONDS = 0.05
RECONNECT_MAX_DELAY_SECONDS = 1.0
LEAVE_TIMEOUT_SECONDS = 2.0
#: A join may have to start the hub first (the manager hub's launcher waits up to 30 s for it).
JOIN_TIMEOUT_SECONDS = 45.0


class BridgedHub:
    """A backend's client in one worker: both the ``Hub`` and the worker's ``HubLink``."""

    def __init__(self, backend: Backend, settings: Settings, *, label: str):
        self.backend = backend
        self._label = label
        self._threads = HubThreads(backend)
        self._publisher = Publisher(backend, self._threads, outbox_size=settings.outbox_size)
        fetch_batch = max(1, min(MAX_BATCH, settings.subscriber_buffer // 4))
        self._reader = Reader(backend, self._threads, batch=fetch_batch)
        #: The membership in use; None while the link is down.
        self._membership: Membership | None = None
        #: Every member's name: what a join sends.
        self._presence: dict[Member, str] = {}
        #: Where re-joins are counted: the listener's, once running.
        self._figures = WorkerFigures()

    @property
    def connected(self) -> bool:
        return self._membership is not None

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._figures = self._publisher.figures = listener.figures
        try:
            membership = await self._join()
        except self.backend.link_errors as error:
            raise HubUnavailable(
                f"cannot reach the hub at {self.backend.describe()}: {error}"
            ) from error
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher.run)
            nursery.start_soon(self._report_figures, listener)
            await self._report_joined(membership, listener)
            task_status.started(self)
            try:
                rejoined = dropped = False
                while True:
                    self._link_up(membership)
                    if rejoined:
                        nursery.start_soon(self._report_joined, membership, listener)
                        if dropped or not membership.continuous:
                            listener.messages_missed(membership.epoch)
                    dropped = await self._reader.read_until_lost(membership, listener)
                    self._link_down()
                    if not self.backend.rejoin_replaces:
                        # If the hub is still there (only our link failed), leave it properly.
                        await self._leave(membership)
                    membership, rejoined = await self._rejoin(), True
                    self._figures.hub_reconnects += 1
            finally:
                self._link_down()  # No more submits: they are told the hub is down.
                with trio.CancelScope(shield=True):
                    # What sessions submitted before they ended goes out before we leave.
                    deadline = trio.current_time() + LEAVE_TIMEOUT_SECONDS
                    await self._publisher.close(membership, deadline=deadline)
                    # Counted to the end (the publisher's flush included), so that the
                    # server's counts lose nothing of this worker.
                    await self._hand_in_figures(membership, listener)
                    await self._leave(membership)

    async def publish(self, body: str) -> None:
        await self._publisher.publish(body)

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        await self._publisher.submit(body, on_failure)

    async def snapshot(
        self, room: str, since: int | None, epoch: str | None, connection: int, name: str
    ) -> Snapshot:
        membership = self._membership
        if membership is None:
            raise HubUnavailable("the hub is unreachable right now")
        # Recorded first: if the call fails after the hub took it in, the next join carries it
        # (and the session, told that it failed, takes it out with ``absent``).
        self._presence[connection, room] = name
        try:
            snapshot = await self._threads.call(
                membership.snapshot, room, since, epoch, connection, name
            )
        except self.backend.link_errors as error:
            raise HubUnavailable("the hub is unreachable right now") from error
        if snapshot.refused:
            del self._presence[connection, room]
        else:
            # A leave of this room just before may still be on its way (queued, or in a round
            # trip under way) and would take the member out after this join: the name follows
            # it. Where nothing is pending, the hub sees an unchanged name and does nothing.
            self._publisher.change_presence((connection, room), name)
        self._publisher.reschedule(membership)
        return snapshot

    def present(self, connection: int, room: str, name: str) -> None:
        self._presence[connection, room] = name
        self._publisher.change_presence((connection, room), name)

    def absent(self, connection: int, room: str) -> None:
        self._presence.pop((connection, room), None)
        self._publisher.change_presence((connection, room), None)

    async def rooms(self) -> list[RoomCount]:
        return await self._read(lambda membership: membership.rooms())

    async def older(self, room: str, before: int, limit: int) -> Older:
        return await self._read(lambda membership: membership.older(room, before, limit))

    async def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        return await self._read(lambda membership: membership.exchange_figures(report))

    async def _report_figures(self, listener: HubListener) -> None:
        """The worker's report goes to the hub every ``REPORT_INTERVAL_SECONDS`` while the
        link is up."""
        while True:
            await trio.sleep(REPORT_INTERVAL_SECONDS)
            if self._membership is not None:
                await self._report(self._membership, listener.report())

    async def _report_joined(self, membership: Membership, listener: HubListener) -> None:
        """The worker's report as it has (re-)joined: the first a new hub gets of it, which is
        its baseline there (``metrics.board``). The link is up, whatever the worker's link
        attribute says yet."""
        await self._report(membership, dataclasses.replace(listener.report(), hub_up=True))

    async def _report(self, membership: Membership, report: WorkerReport) -> None:
        """One report to the hub; one the hub does not get is as good as the next."""
        try:
            await self._threads.call(membership.exchange_figures, report)
        except self.backend.link_errors:
            pass  # The link broke: the reader notices, and re-joins.
        except HubUnavailable:
            pass  # The hub did not answer: nor will the reader's fetches.
        except Exception:
            logger.exception("event=figures_report_error")  # A bug: logged, and we go on.

    async def _hand_in_figures(self, membership: Membership, listener: HubListener) -> None:
        """The worker's final report, within ``LEAVE_TIMEOUT_SECONDS``: should it not arrive,
        the hub retires the worker with its last report once its lease runs out."""
        with trio.move_on_after(LEAVE_TIMEOUT_SECONDS):
            try:
                await self._threads.run_sync(membership.final_figures, listener.report())
            except self.backend.link_errors:
                pass  # The hub is gone: so are its figures.
            except Exception:
                logger.exception("event=figures_report_error")

    async def _read(self, call: Callable[[Membership], T]) -> T:
        """A hub call that only reads, or only replaces what this worker reported before
        (``call`` of the membership in use, in a hub thread): abandoned on cancel or timeout
        (``threads``), it changes nothing the next one would not."""
        membership = self._membership
        if membership is None:
            raise HubUnavailable("the hub is unreachable right now")
        try:
            return await self._threads.call(call, membership)
        except self.backend.link_errors as error:
            raise HubUnavailable("the hub is unreachable right now") from error

    def _link_up(self, membership: Membership) -> None:
        self._membership = membership
        self._publisher.link_up(membership)

    def _link_down(self) -> None:
        self._membership = None
        self._publisher.link_down()

    async def _join(self) -> Membership:
        # Whatever changed before this join is in the presence the join sends.
        self._publisher.forget_presence_changes()
        return await self._threads.call(
            self.backend.join,
            self._label,
            dict(self._presence),
            self._reader.last_id,
            self._reader.epoch,
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

    async def _leave(self, membership: Membership) -> None:
        with trio.move_on_after(LEAVE_TIMEOUT_SECONDS):
            # If the hub is gone already, so is our membership.
            with contextlib.suppress(*self.backend.link_errors):
                await self._threads.run_sync(membership.leave)
