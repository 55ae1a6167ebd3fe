"""The publisher's outbox (``hub_link/bridge/outbox.py``), on the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chat.hub_link.bridge.outbox import Outbox, Pending, Wake


async def test_a_wake_up_that_finds_the_outbox_full_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(1)
    pending = Pending("body")
    await outbox.put(pending)
    outbox.wake(Wake.PRESENCE)  # Does not block, does not raise.
    assert outbox.take(limit=10) == [pending]


async def test_waiting_ends_when_a_body_comes_and_it_goes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(8)
    first, second = Pending("first"), Pending("second")
    await outbox.put(first)
    await outbox.put(second)
    start = trio.current_time()
    await outbox.wait(due=lambda: start + 60)
    assert trio.current_time() == start  # No wait for the due time.
    assert outbox.take(limit=10) == [first, second]


async def test_waiting_ends_at_the_due_time_or_at_a_presence_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(8)
    start = trio.current_time()
    await outbox.wait(due=lambda: start + 5)
    assert trio.current_time() == start + 5

    outbox.wake(Wake.PRESENCE)
    await outbox.wait(due=lambda: start + 60)
    assert trio.current_time() == start + 5
    assert outbox.take(limit=10) == []


async def test_a_due_time_wake_up_waits_again_until_the_new_due_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(8)
    start = trio.current_time()
    due = start + 30
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.wait, lambda: due)
        await trio.testing.wait_all_tasks_blocked()
        due = start + 1
        outbox.wake(Wake.DUE_TIME)
    assert trio.current_time() == start + 1


async def test_taking_stops_at_the_limit_and_skips_wake_ups(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(8)
    bodies = [Pending(str(n)) for n in range(3)]
    for pending in bodies:
        outbox.wake(Wake.PRESENCE)
        await outbox.put(pending)
    outbox.wake(Wake.DUE_TIME)
    assert outbox.take(limit=2) == bodies[:2]
    assert outbox.take(limit=2) == bodies[2:]
    assert outbox.take(limit=2) == []


def test_settling_tells_only_the_sender_of_a_body_that_was_not_published() -> None:
    told: list[str] = []
    published = Pending("published", on_failure=lambda: told.append("published"))
    published.published = True
    lost = Pending("lost", on_failure=lambda: told.append("lost"))
    published.settle()
    lost.settle()
    assert told == ["lost"]


async def test_settling_wakes_a_waiting_sender_either_way() -> None:
    waiting = Pending("body", done=trio.Event())
    waiting.settle()
    assert waiting.done is not None
    assert waiting.done.is_set()


def test_a_report_that_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken_report() -> None:
        raise RuntimeError("a bug in the sender")

    Pending("lost", on_failure=broken_report).settle()
    assert "event=publish_failure_report_error" in caplog.text
