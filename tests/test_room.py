"""In-process fan-out: order, bounds, the slow-consumer policy and cleanup."""

from __future__ import annotations

import trio
import trio.testing

from trio_chat.protocol import CloseCode
from trio_chat.room import Room, Subscriber


def drain(subscriber: Subscriber) -> list[str]:
    """Every frame queued, in order, taken as a writer takes them."""
    frames: list[str] = []
    while True:
        try:
            batch = subscriber.receive_channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return frames
        frames.extend(batch)
        subscriber.taken(batch)


def never(code: CloseCode) -> None:
    raise AssertionError("no subscriber should overflow here")


def test_broadcast_reaches_every_subscriber_in_order() -> None:
    room = Room(buffer_size=100)
    with room.subscribe(never) as first, room.subscribe(never) as second:
        room.broadcast(["a", "b"])
        room.broadcast(["c"])
        assert drain(first) == ["a", "b", "c"]
        assert drain(second) == ["a", "b", "c"]


def test_fan_out_to_many_subscribers() -> None:
    room = Room(buffer_size=10)
    subscriptions = [room.subscribe(never) for _ in range(500)]
    subscribers = [subscription.__enter__() for subscription in subscriptions]
    room.broadcast([str(n) for n in range(10)])
    assert all(drain(s) == [str(n) for n in range(10)] for s in subscribers)
    for subscription in subscriptions:
        subscription.__exit__(None, None, None)
    assert len(room) == 0


def test_leaving_removes_the_subscriber_and_closes_its_channel() -> None:
    room = Room(buffer_size=4)
    with room.subscribe(never) as subscriber:
        assert len(room) == 1
    assert len(room) == 0
    room.broadcast(["after"])  # Nothing to deliver to, nothing raised.
    try:
        subscriber.receive_channel.receive_nowait()
    except trio.ClosedResourceError:
        pass
    else:
        raise AssertionError("the channel should be closed")


def test_full_subscriber_is_dropped_and_others_get_everything() -> None:
    room = Room(buffer_size=3)
    overflowed: list[CloseCode] = []
    with (
        room.subscribe(lambda code: overflowed.append(code)) as slow,
        room.subscribe(never) as fast,
    ):
        for n in range(3):
            room.broadcast([f"m{n}"])
            assert drain(fast) == [f"m{n}"]
        assert overflowed == []
        room.broadcast(["m3"])  # The slow one's buffer (3) is full now.
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]
        assert slow.close_code == CloseCode.TRY_AGAIN_LATER
        assert fast.close_code is None
        assert drain(fast) == ["m3"]
        assert len(room) == 1
        assert room.statistics().dropped_slow == 1
        # What was queued for the dropped subscriber is freed at once, and nothing more ever
        # arrives.
        room.broadcast(["m4"])
        assert drain(slow) == []
        assert slow.waiting == 0
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]


def test_a_batch_larger_than_the_buffer_drops_the_subscriber() -> None:
    room = Room(buffer_size=2)
    overflowed: list[CloseCode] = []
    with room.subscribe(lambda code: overflowed.append(code)) as subscriber:
        room.broadcast(["a", "b", "c"])
        assert overflowed == [CloseCode.TRY_AGAIN_LATER]
        assert subscriber.close_code == CloseCode.TRY_AGAIN_LATER


def test_evict_all_closes_everyone_with_the_code_given() -> None:
    room = Room(buffer_size=2)
    evicted: list[tuple[int, CloseCode]] = []
    with (
        room.subscribe(lambda code: evicted.append((1, code))) as a,
        room.subscribe(lambda code: evicted.append((2, code))) as b,
    ):
        room.evict_all(CloseCode.GOING_AWAY)
        assert evicted == [(1, CloseCode.GOING_AWAY), (2, CloseCode.GOING_AWAY)]
        assert a.close_code == b.close_code == CloseCode.GOING_AWAY
        assert len(room) == 0
        assert room.statistics().dropped_slow == 0


def test_send_to_one_subscriber_only() -> None:
    room = Room(buffer_size=2)
    with room.subscribe(never) as target, room.subscribe(never) as other:
        room.send_to(target, "error")
        assert drain(target) == ["error"]
        assert drain(other) == []


async def test_writer_tasks_receive_as_soon_as_frames_arrive() -> None:
    room = Room(buffer_size=8)
    received: dict[int, list[str]] = {0: [], 1: []}

    async def writer(index: int, subscriber_ready: trio.Event) -> None:
        with room.subscribe(never) as subscriber:
            subscriber_ready.set()
            async for batch in subscriber.receive_channel:
                received[index].extend(batch)
                subscriber.taken(batch)

    async with trio.open_nursery() as nursery:
        for index in received:
            ready = trio.Event()
            nursery.start_soon(writer, index, ready)
            await ready.wait()
        room.broadcast(["x"])
        await trio.testing.wait_all_tasks_blocked()
        assert received == {0: ["x"], 1: ["x"]}
        nursery.cancel_scope.cancel()
    # Cancelled writers have left the room: no subscriber, no task left behind.
    assert len(room) == 0


def test_a_batch_is_shared_by_every_subscriber_not_copied() -> None:
    room = Room(buffer_size=8)
    with room.subscribe(never) as first, room.subscribe(never) as second:
        batch = ("a", "b")
        room.broadcast(batch)
        assert first.receive_channel.receive_nowait() is second.receive_channel.receive_nowait()


def test_frames_taken_by_the_writer_make_room_again() -> None:
    room = Room(buffer_size=4)
    with room.subscribe(never) as subscriber:
        for _ in range(10):
            room.broadcast(("a", "b", "c"))
            batch = subscriber.receive_channel.receive_nowait()
            subscriber.taken(batch)
        assert subscriber.close_code is None
        assert subscriber.waiting == 0


async def test_linger_waits_until_its_deadline_while_little_is_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    room = Room(buffer_size=8)
    with room.subscribe(never) as subscriber:
        room.broadcast(["a", "b", "c"])  # Under half of the buffer.
        await subscriber.linger(1.5)
        assert trio.current_time() == 1.5
        assert drain(subscriber) == ["a", "b", "c"]


async def test_linger_ends_as_soon_as_half_the_buffer_is_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    room = Room(buffer_size=8)
    with room.subscribe(never) as subscriber:
        room.broadcast(["a"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber.linger, 10.0)
            await trio.testing.wait_all_tasks_blocked()
            room.broadcast(["b", "c"])
            await trio.testing.wait_all_tasks_blocked()
            assert nursery.child_tasks  # Three of eight: still lingering.
            room.broadcast(["d"])
        assert trio.current_time() == 0.0
        await subscriber.linger(10.0)  # Already half full: returns at once.
        assert trio.current_time() == 0.0
        assert drain(subscriber) == ["a", "b", "c", "d"]
