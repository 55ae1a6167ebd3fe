"""The publisher: what a worker's sessions publish, and its presence changes, go to the hub.

Sessions put bodies in a bounded outbox (``submit`` does not wait for the round trip: a
client's next message is read meanwhile). The publisher sends all that waits in one ``update``
call, then tells the senders whose bodies could not be published. Round trips are paced
(``UPDATES_PER_SECOND``), so under load each carries many bodies, while an occasional one goes
at once. A backend that needs calls even when nothing happens (Redis: the worker's lease,
coalesced presence) says when the next one is due (``Membership.update_due_in``).

Presence changes are state, not a queue: the latest name of each changed connection waits in
a dict (bounded by the number of connections) until the next ``update``. If the link breaks,
the worker re-joins with the names of all its connections, so nothing needs replaying.

While the link is down (no membership), publishing fails at once with ``HubUnavailable``, and
what was taken from the outbox is reported unpublished.

Stopping: ``close`` stops the publisher, lets the round trip under way end and sends what
waits, within the worker's leave deadline. A round trip is shielded until then, because the
flush after it must not overtake it; its thread is abandoned if the hub does not answer in
time (``threads``), and the senders are told.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import trio

from ...guards import TokenBucket
from ...metrics.figures import WorkerFigures
from ..interface import HubUnavailable, Member
from .backend import MAX_BATCH, Backend, Membership
from .outbox import Outbox, Pending, Wake
from .threads import HUB_CALL_TIMEOUT_SECONDS, HubThreads

logger = logging.getLogger("trio_chat.hub")

#: Round trips the publisher makes at most per second on average, and back to back: under load
#: everything that waits goes in the next one, so a round trip carries many bodies.
UPDATES_PER_SECOND = 100
UPDATE_BURST = 4


class Publisher:
    """One worker's publishing: ``run`` it, then ``close`` it."""

    def __init__(self, backend: Backend, threads: HubThreads, *, outbox_size: int) -> None:
        self._link_errors = backend.link_errors
        self._threads = threads
        self._outbox = Outbox(outbox_size)
        self._presence_changes: dict[Member, str | None] = {}
        #: What the bodies go through; None while the link is down.
        self._membership: Membership | None = None
        #: When the backend wants its next ``update`` (``trio.current_time``), even an empty one.
        self._update_due = math.inf
        #: The round trip under way; ``close`` gives it the leave deadline.
        self._round_trip = trio.CancelScope()
        self._leave_deadline = math.inf
        self._closing = trio.Event()
        self._stopped = trio.Event()
        #: Where messages published and round trips are counted (the worker's, once joined).
        self.figures = WorkerFigures()

    async def run(self) -> None:
        """Publish until ``close``."""
        try:
            async with trio.open_nursery() as publishing:
                publishing.start_soon(self._publish_until_cancelled)
                await self._closing.wait()
                # Its round trip under way, if any, is shielded: it ends first.
                publishing.cancel_scope.cancel()
        finally:
            self._stopped.set()

    async def close(self, membership: Membership, *, deadline: float) -> None:
        """Stop publishing; what waits goes out through ``membership``, after the round trip
        under way (so a sender's order holds), all by ``deadline``; the senders of what does
        not are told. The worker's way out: call it shielded from cancellation."""
        self._leave_deadline = deadline
        self._round_trip.deadline = min(self._round_trip.deadline, deadline)
        self._closing.set()
        await self._stopped.wait()
        await self._send_taken(membership, limit=math.inf)

    def link_up(self, membership: Membership) -> None:
        self._membership = membership
        self.reschedule(membership)

    def link_down(self) -> None:
        """Publishing fails from now on; presence changes wait for the next membership."""
        self._membership = None

    async def publish(self, body: str) -> None:
        pending = Pending(body, done=trio.Event())
        await self._enqueue(pending)
        assert pending.done is not None
        await pending.done.wait()
        if not pending.published:
            raise HubUnavailable("the hub is unreachable right now")

    async def submit(self, body: str, on_failure: Callable[[], None]) -> None:
        await self._enqueue(Pending(body, on_failure=on_failure))

    async def _enqueue(self, pending: Pending) -> None:
        if self._membership is None:
            raise HubUnavailable("the hub is unreachable right now")
        await self._outbox.put(pending)

    def change_presence(self, member: Member, name: str | None) -> None:
        """``name`` None: the connection has left the room."""
        self._presence_changes[member] = name
        self._outbox.wake(Wake.PRESENCE)

    def forget_presence_changes(self) -> None:
        """A join is about to send every connection's presence: the changes are in it."""
        self._presence_changes.clear()

    def reschedule(self, membership: Membership) -> None:
        """``membership`` may want its next update at another time (a snapshot changed it).
        The publisher is woken only for an earlier one (a later one is noticed when the earlier
        comes): a wake takes a slot of the bounded outbox, which senders wait for, and every
        join reschedules."""
        due_before = self._update_due
        self._set_due(membership)
        if self._update_due < due_before:
            self._outbox.wake(Wake.DUE_TIME)

    def _set_due(self, membership: Membership | None) -> None:
        due_in = None if membership is None else membership.update_due_in
        self._update_due = math.inf if due_in is None else trio.current_time() + due_in

    async def _publish_until_cancelled(self) -> None:
        pacer = TokenBucket(UPDATES_PER_SECOND, UPDATE_BURST, clock=trio.current_time)
        while True:
            # Until a body or a presence change comes, or an update falls due.
            await self._outbox.wait(due=lambda: self._update_due)
            # Under load, what arrives meanwhile goes in the same round trip. (If cancelled
            # here, what was taken goes out when the worker leaves.)
            await trio.sleep_until(pacer.next_token_at())
            pacer.spend()
            await self._send_taken(self._membership, limit=MAX_BATCH)

    async def _send_taken(self, membership: Membership | None, *, limit: float) -> None:
        """One round trip with what was taken and what waits in the outbox (up to ``limit``
        bodies); then the senders whose bodies could not be published are told."""
        batch = self._outbox.take(limit)
        try:
            await self._send_update(batch, membership)
        finally:
            for pending in batch:
                pending.settle()

    async def _send_update(self, batch: list[Pending], membership: Membership | None) -> None:
        if membership is None:
            # Presence changes stay where they are: the next join sends every connection's
            # presence, and changes made while it runs go in the first update after it.
            self._set_due(None)  # The next membership says when it wants one.
            return
        changes, self._presence_changes = self._presence_changes, {}
        if not (batch or changes or trio.current_time() >= self._update_due):
            return
        bodies = [pending.body for pending in batch]
        try:
            deadline = min(self._leave_deadline, trio.current_time() + HUB_CALL_TIMEOUT_SECONDS)
            started = time.perf_counter()  # Real time, whatever clock Trio runs on.
            accepted: int | None = None
            with trio.CancelScope(shield=True, deadline=deadline) as self._round_trip:
                accepted = await self._threads.run_sync(membership.update, bodies, changes)
            if self._round_trip.cancelled_caught:
                raise HubUnavailable("the hub did not answer")
            # One observation per round trip, whatever it carried (thread hops included: the
            # time a batch's senders wait).
            self.figures.hub_round_trip.observe(time.perf_counter() - started)
            # What the hub took in its order: bodies it dropped as bad are not published.
            self.figures.messages_published += len(batch) if accepted is None else accepted
        except Exception as error:
            # The changes go again with the next update (newer ones for the same connection
            # win), whether the reader re-joins meanwhile or only this call failed (a hub
            # that refused a write, say). The senders are told their messages were not sent.
            self._presence_changes = {**changes, **self._presence_changes}
            if not isinstance(error, (*self._link_errors, HubUnavailable)):
                logger.exception("event=hub_publish_error")  # A bug: logged, and we go on.
            return
        finally:
            self._set_due(membership)
        for pending in batch:
            pending.published = True
