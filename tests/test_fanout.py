"""In-process fan-out: order, bounds, the slow-consumer policy and cleanup, and rooms.

A frame of no room (``frame_room`` is None: a ``messages_missed`` notice, or any text that is no
frame of a room, like the short strings of the policy tests) goes to every subscriber. The room
tests use real frames, and show what each subscriber got as short descriptions (``described``).
The delivery lag tests move a wall clock of their own by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.fanout import Fanout, FanoutStatistics, PendingJoin, Queued, Subscriber
from trio_chat.hub_link import Snapshot
from trio_chat.protocol import (
    ChatMessage,
    CloseCode,
    NoticeCode,
    encode_chat_body,
    notice_frame,
    presence_frame,
    stamp_chat_frame,
)


def drain(subscriber: Subscriber) -> list[str]:
    """Every frame queued, in order, taken as a writer takes them; a join shows as
    ``join <room>``."""
    frames: list[str] = []
    while True:
        try:
            item = subscriber.receive_channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return frames
        subscriber.taken(item)
        if isinstance(item, PendingJoin):
            frames.append(f"join {item.room}")
        else:
            frames.extend(item)


def frames_of(item: Queued) -> Sequence[str]:
    """A queued batch of frames (not a join)."""
    assert not isinstance(item, PendingJoin)
    return item


def never(code: CloseCode) -> None:
    raise AssertionError("no subscriber should overflow here")


def test_broadcast_reaches_every_subscriber_in_order() -> None:
    fanout = Fanout(buffer_size=100)
    with fanout.subscribe(never) as first, fanout.subscribe(never) as second:
        fanout.broadcast(["a", "b"])
        fanout.broadcast(["c"])
        assert drain(first) == ["a", "b", "c"]
        assert drain(second) == ["a", "b", "c"]


def test_fan_out_to_many_subscribers() -> None:
    fanout = Fanout(buffer_size=10)
    subscriptions = [fanout.subscribe(never) for _ in range(500)]
    subscribers = [subscription.__enter__() for subscription in subscriptions]
    fanout.broadcast([str(n) for n in range(10)])
    assert all(drain(s) == [str(n) for n in range(10)] for s in subscribers)
    for subscription in subscriptions:
        subscription.__exit__(None, None, None)
    assert len(fanout) == 0


def test_leaving_removes_the_subscriber_and_closes_its_channel() -> None:
    fanout = Fanout(buffer_size=4)
    with fanout.subscribe(never) as subscriber:
        assert len(fanout) == 1
    assert len(fanout) == 0
    fanout.broadcast(["after"])  # Nothing to deliver to, nothing raised.
    try:
        subscriber.receive_channel.receive_nowait()
    except trio.ClosedResourceError:
        pass
    else:
        raise AssertionError("the channel should be closed")


def test_full_subscriber_is_dropped_and_others_get_everything() -> None:
    fanout = Fanout(buffer_size=3)
    overflowed: list[CloseCode] = []
    with (
        fanout.subscribe(lambda code: overflowed.append(code)) as slow,
        fanout.subscribe(never) as fast,
    ):
        for n in range(3):
            fanout.broadcast([f"m{n}"])
            assert drain(fast) == [f"m{n}"]
        assert overflowed == []
        fanout.broadcast(["m3"])  # The slow one's buffer (3) is full now.
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]
        assert slow.close_code == CloseCode.TRY_AGAIN_LATER
        assert fast.close_code is None
        assert drain(fast) == ["m3"]
        assert len(fanout) == 1
        assert fanout.statistics().dropped_slow == 1
        # What was queued for the dropped subscriber is freed at once, and nothing more ever
        # arrives.
        fanout.broadcast(["m4"])
        assert drain(slow) == []
        assert slow.waiting == 0
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]


def test_a_batch_larger_than_the_buffer_drops_the_subscriber() -> None:
    fanout = Fanout(buffer_size=2)
    overflowed: list[CloseCode] = []
    with fanout.subscribe(lambda code: overflowed.append(code)) as subscriber:
        fanout.broadcast(["a", "b", "c"])
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]
        assert subscriber.close_code == CloseCode.TRY_AGAIN_LATER


def test_evict_all_closes_everyone_with_the_code_given() -> None:
    fanout = Fanout(buffer_size=2)
    evicted: list[tuple[int, CloseCode]] = []
    with (
        fanout.subscribe(lambda code: evicted.append((1, code))) as a,
        fanout.subscribe(lambda code: evicted.append((2, code))) as b,
    ):
        fanout.evict_all(CloseCode.GOING_AWAY)
        assert evicted == [(1, CloseCode.GOING_AWAY), (2, CloseCode.GOING_AWAY)]
        assert a.close_code == b.close_code == CloseCode.GOING_AWAY
        assert len(fanout) == 0
        assert fanout.statistics().dropped_slow == 0


def test_send_to_one_subscriber_only() -> None:
    fanout = Fanout(buffer_size=2)
    with fanout.subscribe(never) as target, fanout.subscribe(never) as other:
        fanout.send_to(target, "error")
        assert drain(target) == ["error"]
        assert drain(other) == []


async def test_writer_tasks_receive_as_soon_as_frames_arrive() -> None:
    fanout = Fanout(buffer_size=8)
    received: dict[int, list[str]] = {0: [], 1: []}

    async def writer(index: int, subscriber_ready: trio.Event) -> None:
        with fanout.subscribe(never) as subscriber:
            subscriber_ready.set()
            async for batch in subscriber.receive_channel:
                received[index].extend(frames_of(batch))
                subscriber.taken(batch)

    async with trio.open_nursery() as nursery:
        for index in received:
            ready = trio.Event()
            nursery.start_soon(writer, index, ready)
            await ready.wait()
        fanout.broadcast(["x"])
        await trio.testing.wait_all_tasks_blocked()
        assert received == {0: ["x"], 1: ["x"]}
        nursery.cancel_scope.cancel()
    # Cancelled writers have left the fanout: no subscriber, no task left behind.
    assert len(fanout) == 0


def test_a_batch_is_shared_by_every_subscriber_not_copied() -> None:
    fanout = Fanout(buffer_size=8)
    with fanout.subscribe(never) as first, fanout.subscribe(never) as second:
        batch = ("a", "b")
        fanout.broadcast(batch)
        assert first.receive_channel.receive_nowait() is second.receive_channel.receive_nowait()


def test_frames_taken_by_the_writer_make_room_again() -> None:
    fanout = Fanout(buffer_size=4)
    with fanout.subscribe(never) as subscriber:
        for _ in range(10):
            fanout.broadcast(("a", "b", "c"))
            batch = subscriber.receive_channel.receive_nowait()
            subscriber.taken(batch)
        assert subscriber.close_code is None
        assert subscriber.waiting == 0


async def test_linger_waits_until_its_deadline_while_little_is_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fanout = Fanout(buffer_size=8)
    with fanout.subscribe(never) as subscriber:
        fanout.broadcast(["a", "b", "c"])  # Under half of the buffer.
        await subscriber.linger(1.5)
        assert trio.current_time() == 1.5
        assert drain(subscriber) == ["a", "b", "c"]


async def test_linger_ends_as_soon_as_half_the_buffer_is_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fanout = Fanout(buffer_size=8)
    with fanout.subscribe(never) as subscriber:
        fanout.broadcast(["a"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber.linger, 10.0)
            await trio.testing.wait_all_tasks_blocked()
            fanout.broadcast(["b", "c"])
            await trio.testing.wait_all_tasks_blocked()
            assert nursery.child_tasks  # Three of eight: still lingering.
            fanout.broadcast(["d"])
        assert trio.current_time() == 0.0
        await subscriber.linger(10.0)  # Already half full: returns at once.
        assert trio.current_time() == 0.0
        assert drain(subscriber) == ["a", "b", "c", "d"]


# Rooms


def message(room: str, text: str) -> str:
    return stamp_chat_frame(1, 0, encode_chat_body(room, ChatMessage("ann", text)))


NOTICE = notice_frame(NoticeCode.MESSAGES_MISSED, "gap", epoch="e")


def described(frames: Sequence[str]) -> list[str]:
    """``room:text`` for a message, ``presence room``, ``left room``, ``notice``, and joins
    as ``drain`` shows them."""
    shown = []
    for frame in frames:
        if frame.startswith("join "):
            shown.append(frame)
            continue
        doc = json.loads(frame)
        if doc["type"] == "message":
            shown.append(f"{doc['room']}:{doc['message']}")
        elif doc["type"] == "notice":
            shown.append("notice")
        else:
            shown.append(f"{doc['type']} {doc['room']}")
    return shown


def enter(fanout: Fanout, subscriber: Subscriber, *rooms: str) -> None:
    """``subscriber`` is in ``rooms`` (its joins settled and taken from its queue)."""
    for room in rooms:
        fanout.enter(subscriber, room).settle([], None)
    assert drain(subscriber) == [f"join {room}" for room in rooms]


def test_a_batch_of_one_room_goes_shared_to_the_rooms_members_only() -> None:
    fanout = Fanout(buffer_size=8)
    with (
        fanout.subscribe(never) as first,
        fanout.subscribe(never) as second,
        fanout.subscribe(never) as elsewhere,
        fanout.subscribe(never) as nowhere,
    ):
        enter(fanout, first, "a")
        enter(fanout, second, "b", "a")
        enter(fanout, elsewhere, "c")
        batch = (message("a", "1"), presence_frame("a", 1, 2, [], [], []), message("a", "2"))
        fanout.broadcast(batch)
        # One batch, shared (as a ``TimedBatch``: it has messages, whose lag is observed).
        shared = first.receive_channel.receive_nowait()
        assert shared is second.receive_channel.receive_nowait()
        assert list(frames_of(shared)) == list(batch)
        assert drain(elsewhere) == drain(nowhere) == []


def test_frames_of_a_room_nobody_is_in_are_dropped() -> None:
    fanout = Fanout(buffer_size=1)
    with fanout.subscribe(never) as subscriber:
        enter(fanout, subscriber, "a")
        fanout.broadcast([message("b", "1"), message("b", "2")])  # Would not even fit.
        fanout.broadcast([message("b", "3"), message("c", "4")])
        assert drain(subscriber) == []
        assert subscriber.close_code is None


def test_a_mixed_batch_gives_each_subscriber_exactly_its_rooms_frames_in_order() -> None:
    fanout = Fanout(buffer_size=16)
    with (
        fanout.subscribe(never) as in_a,
        fanout.subscribe(never) as in_b,
        fanout.subscribe(never) as in_both,
        fanout.subscribe(never) as in_c,
        fanout.subscribe(never) as in_none,
    ):
        enter(fanout, in_a, "a")
        enter(fanout, in_b, "b")
        enter(fanout, in_both, "b", "a")
        enter(fanout, in_c, "c")
        fanout.broadcast(
            [message("a", "1"), message("b", "2"), NOTICE, message("a", "3"), message("d", "4")]
        )
        assert described(drain(in_a)) == ["a:1", "notice", "a:3"]
        assert described(drain(in_b)) == ["b:2", "notice"]
        assert described(drain(in_both)) == ["a:1", "b:2", "notice", "a:3"]
        # A notice concerns every room of every connection, even one in no room of the batch.
        assert described(drain(in_c)) == ["notice"]
        assert described(drain(in_none)) == ["notice"]


def test_a_mixed_batch_without_notices_reaches_only_the_rooms_members() -> None:
    fanout = Fanout(buffer_size=16)
    with fanout.subscribe(never) as in_a, fanout.subscribe(never) as in_c:
        enter(fanout, in_a, "a")
        enter(fanout, in_c, "c")
        fanout.broadcast([message("a", "1"), message("b", "2"), message("a", "3")])
        assert described(drain(in_a)) == ["a:1", "a:3"]
        assert drain(in_c) == []


def test_the_members_of_one_room_of_a_mixed_batch_share_its_frames() -> None:
    fanout = Fanout(buffer_size=16)
    with fanout.subscribe(never) as first, fanout.subscribe(never) as second:
        enter(fanout, first, "a")
        enter(fanout, second, "a")
        fanout.broadcast([message("a", "1"), message("b", "2"), message("a", "3")])
        shared = frames_of(first.receive_channel.receive_nowait())
        assert shared is second.receive_channel.receive_nowait()
        assert described(shared) == ["a:1", "a:3"]


def test_enter_queues_a_pending_join_before_the_rooms_later_frames() -> None:
    fanout = Fanout(buffer_size=16)
    with fanout.subscribe(never) as subscriber:
        enter(fanout, subscriber, "a")
        fanout.broadcast([message("b", "before")])  # Not in b yet.
        fanout.broadcast([message("a", "1")])
        pending = fanout.enter(subscriber, "b")
        fanout.broadcast([message("b", "2"), message("a", "3")])
        assert pending.room == "b"
        assert list(subscriber.rooms) == ["a", "b"]  # In the order joined.
        assert list(frames_of(subscriber.receive_channel.receive_nowait())) == [message("a", "1")]
        assert subscriber.receive_channel.receive_nowait() is pending
        assert described(drain(subscriber)) == ["b:2", "a:3"]


def test_a_pending_join_is_settled_with_frames_and_a_snapshot() -> None:
    pending = PendingJoin("a")
    assert not pending.done.is_set()
    snapshot = Snapshot("a", [], 0, 1, presence_frame("a", 1, 1, [], [], []), 1)
    pending.settle(["history"], snapshot)
    assert pending.done.is_set()
    assert (pending.frames, pending.snapshot) == (["history"], snapshot)


def test_leave_queues_a_left_frame_and_nothing_of_the_room_after_it() -> None:
    fanout = Fanout(buffer_size=16)
    with fanout.subscribe(never) as subscriber, fanout.subscribe(never) as other:
        enter(fanout, subscriber, "a", "b")
        enter(fanout, other, "a")
        fanout.broadcast([message("a", "1")])
        fanout.leave(subscriber, "a")
        fanout.broadcast([message("a", "2"), message("b", "3")])
        fanout.broadcast([message("a", "4")])
        assert described(drain(subscriber)) == ["a:1", "left a", "b:3"]
        assert list(subscriber.rooms) == ["b"]
        assert described(drain(other)) == ["a:1", "a:2", "a:4"]


def test_leave_without_announcing_queues_nothing() -> None:
    fanout = Fanout(buffer_size=16)
    with fanout.subscribe(never) as subscriber:
        enter(fanout, subscriber, "a")
        fanout.leave(subscriber, "a", announce=False)
        fanout.broadcast([message("a", "1")])
        assert drain(subscriber) == []
        assert subscriber.rooms == {}
        assert fanout.statistics().rooms == 0


def test_an_evicted_subscriber_keeps_its_rooms_and_is_dropped_from_every_room() -> None:
    fanout = Fanout(buffer_size=2)
    evicted: list[CloseCode] = []
    with fanout.subscribe(evicted.append) as slow, fanout.subscribe(never) as other:
        enter(fanout, slow, "a", "b")
        enter(fanout, other, "b")
        fanout.broadcast([message("a", "1"), message("a", "2")])
        fanout.broadcast([message("a", "3")])  # One too many for the slow one.
        assert evicted == [CloseCode.TRY_AGAIN_LATER]
        # Its session leaves the rooms it was in, so it must still know them.
        assert list(slow.rooms) == ["a", "b"]
        assert fanout.statistics().rooms == 1  # Only b, where the other one is.
        fanout.broadcast([message("b", "4"), message("a", "5")])
        assert drain(slow) == []
        assert described(drain(other)) == ["b:4"]
        fanout.leave(slow, "a")  # What its session does next: harmless, nothing queued.
        fanout.leave(slow, "b")
        assert drain(slow) == []
        assert evicted == [CloseCode.TRY_AGAIN_LATER]
        assert fanout.statistics().dropped_slow == 1


def test_a_join_that_does_not_fit_evicts_the_subscriber_outside_the_room() -> None:
    fanout = Fanout(buffer_size=1)
    evicted: list[CloseCode] = []
    with fanout.subscribe(evicted.append) as subscriber:
        fanout.broadcast([NOTICE])
        fanout.enter(subscriber, "a")
        assert evicted == [CloseCode.TRY_AGAIN_LATER]
        assert subscriber.rooms == {}
        assert fanout.statistics().rooms == 0


def test_statistics_count_the_rooms_with_subscribers() -> None:
    fanout = Fanout(buffer_size=16)
    assert fanout.statistics().rooms == 0
    with fanout.subscribe(never) as first:
        with fanout.subscribe(never) as second:
            enter(fanout, first, "a", "b")
            enter(fanout, second, "b", "c")
            assert fanout.statistics().rooms == 3
            fanout.leave(first, "a")
            assert fanout.statistics().rooms == 2
        assert fanout.statistics().rooms == 1  # The second one went, and c with it.
        assert fanout.statistics().subscribers == 1
    assert fanout.statistics().rooms == 0


_ROOMS = ["a", "b", "c"]
_frames = st.lists(st.sampled_from([*_ROOMS, "nobody's", None]), min_size=1, max_size=12)


@given(
    memberships=st.lists(st.lists(st.sampled_from(_ROOMS), unique=True), max_size=5),
    batches=st.lists(_frames, max_size=5),
)
def test_every_subscriber_gets_exactly_its_rooms_frames_and_the_notices_in_order(
    memberships: list[list[str]], batches: list[list[str | None]]
) -> None:
    fanout = Fanout(buffer_size=1000)
    subscriptions = [fanout.subscribe(never) for _ in memberships]
    subscribers = [subscription.__enter__() for subscription in subscriptions]
    for subscriber, rooms in zip(subscribers, memberships, strict=True):
        enter(fanout, subscriber, *rooms)
    sent: list[tuple[str | None, str]] = []
    for batch in batches:
        frames = []
        for room in batch:
            frame = NOTICE if room is None else message(room, str(len(sent)))
            sent.append((room, frame))
            frames.append(frame)
        fanout.broadcast(frames)
    for subscriber, rooms in zip(subscribers, memberships, strict=True):
        assert drain(subscriber) == [f for room, f in sent if room is None or room in rooms]
    for subscription in subscriptions:
        subscription.__exit__(None, None, None)
    assert fanout.statistics() == FanoutStatistics(subscribers=0, rooms=0, dropped_slow=0)


def test_a_subscriber_may_be_in_no_room_and_still_get_notices() -> None:
    fanout = Fanout(buffer_size=4)
    with fanout.subscribe(never) as subscriber:
        fanout.broadcast([NOTICE])
        assert drain(subscriber) == [NOTICE]
        assert subscriber.rooms == {}


# Delivery lag: observed once per batch, when the last subscriber holding it lets go.


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def timed_message(room: str, text: str, ts_ms: int, message_id: int = 1) -> str:
    return stamp_chat_frame(message_id, ts_ms, encode_chat_body(room, ChatMessage("ann", text)))


def lags(fanout: Fanout) -> tuple[int, float]:
    """How many lags were observed, and their sum."""
    figures = fanout.lag.figures()
    return figures.count, figures.sum


def take_one(subscriber: Subscriber) -> None:
    """The subscriber's writer sends its next item."""
    subscriber.taken(subscriber.receive_channel.receive_nowait())


def test_a_batchs_lag_is_observed_once_when_its_last_subscriber_has_sent_it() -> None:
    clock = WallClock(1000.0)
    fanout = Fanout(buffer_size=8, wall_clock=clock)
    with (
        fanout.subscribe(never) as first,
        fanout.subscribe(never) as second,
        fanout.subscribe(never) as third,
    ):
        for subscriber in (first, second, third):
            enter(fanout, subscriber, "a")
        # The newest message's hub time counts: the batch left when the last one did.
        fanout.broadcast(
            [timed_message("a", "1", 999_000), timed_message("a", "2", 999_750, message_id=2)]
        )
        clock.now = 1000.25
        take_one(first)
        take_one(second)
        assert lags(fanout) == (0, 0.0)
        clock.now = 1000.5
        take_one(third)
        assert lags(fanout) == (1, 0.75)


def test_a_batch_dropped_with_an_evicted_or_departed_subscriber_counts_as_let_go() -> None:
    clock = WallClock(10.0)
    fanout = Fanout(buffer_size=8, wall_clock=clock)
    with fanout.subscribe(never) as reader:
        enter(fanout, reader, "a")
        with fanout.subscribe(lambda code: None) as evicted, fanout.subscribe(never) as departed:
            enter(fanout, evicted, "a")
            enter(fanout, departed, "a")
            fanout.broadcast([timed_message("a", "1", 9_000)])
            take_one(reader)
            fanout.evict(evicted, CloseCode.GOING_AWAY)
            assert lags(fanout) == (0, 0.0)
        # ``departed`` left with the batch still queued for it.
        assert lags(fanout) == (1, 1.0)


def test_batches_without_messages_or_without_subscribers_are_not_observed() -> None:
    fanout = Fanout(buffer_size=8, wall_clock=WallClock(10.0))
    with fanout.subscribe(never) as subscriber:
        enter(fanout, subscriber, "a")
        fanout.broadcast([presence_frame("a", 1, 1, [], [], []), NOTICE])
        fanout.broadcast([timed_message("b", "nobody here", 9_000)])
        drain(subscriber)
        assert lags(fanout) == (0, 0.0)


def test_a_mixed_batch_is_observed_once_whoever_gets_which_part() -> None:
    fanout = Fanout(buffer_size=16, wall_clock=WallClock(10.0))
    with (
        fanout.subscribe(never) as in_a,
        fanout.subscribe(never) as in_b,
        fanout.subscribe(never) as in_both,
    ):
        enter(fanout, in_a, "a")
        enter(fanout, in_b, "b")
        enter(fanout, in_both, "a", "b")
        fanout.broadcast([timed_message("a", "1", 9_500), presence_frame("b", 1, 2, [], [], [])])
        for subscriber in (in_a, in_b):
            drain(subscriber)
        assert lags(fanout) == (0, 0.0)
        drain(in_both)
        assert lags(fanout) == (1, 0.5)


def test_every_batch_is_observed_once_however_many_subscribers_get_it() -> None:
    fanout = Fanout(buffer_size=64, wall_clock=WallClock(10.0))
    with (
        fanout.subscribe(never) as first,
        fanout.subscribe(never) as second,
        fanout.subscribe(never) as third,
    ):
        for subscriber in (first, second, third):
            enter(fanout, subscriber, "a")
        for n in range(5):
            fanout.broadcast([timed_message("a", str(n), 9_000, message_id=n + 1)])
        for subscriber in (first, second, third):
            drain(subscriber)
        assert lags(fanout)[0] == 5


def test_a_lag_from_a_hub_clock_ahead_of_ours_is_observed_as_zero() -> None:
    """With Redis, the hub's time is another host's clock: a little ahead, it would make the lag
    negative."""
    fanout = Fanout(buffer_size=8, wall_clock=WallClock(10.0))
    with fanout.subscribe(never) as subscriber:
        enter(fanout, subscriber, "a")
        fanout.broadcast([timed_message("a", "from the future", 10_250)])
        take_one(subscriber)
        figures = fanout.lag.figures()
        assert (figures.count, figures.sum) == (1, 0.0)
        assert figures.counts[0] == 1  # In the lowest bucket.
