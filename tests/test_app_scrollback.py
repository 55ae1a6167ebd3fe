"""Scrollback through the app, in-process: ``older`` frames and their answers, page by page back
to a room's first message, to the asker alone, with every error of the frame.

Workers are ``ChatApp``s with their own lifespans on one ``LocalHub``, driven by
``asgi_driver``; the hub keeps every message of these tests (its history holds 100 per room,
and ``older`` reads from what it keeps). Nothing sleeps: "nothing more was sent" is read after
``wait_all_tasks_blocked``. The rules are docs/protocol.md's (Scrollback).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub_link.interface import MAX_OLDER_MESSAGES
from trio_chat.protocol import DEFAULT_OLDER_MESSAGES
from trio_chat.session import BATCH_SUBPROTOCOL

from asgi_driver import (
    DEFAULT_ROOM,
    MESSAGE_KEYS,
    NEGLIGIBLE_RATE,
    GatedHub,
    WebSocketClient,
    assert_error,
    assert_nothing_more,
    chat_frame,
    fixed_clock_hub,
    open_chat,
    settled,
    worker,
)

OLDER_KEYS = ["type", "room", "complete", "messages"]
#: Past any id of these tests: the newest messages.
NEWEST = 10**6


async def say(client: WebSocketClient, room: str, message: str) -> dict[str, Any]:
    """Send a message to ``room``; the frame it comes back as (the client must be in it)."""
    await client.send_json({"type": "message", "room": room, "sender": "ann", "message": message})
    frame: dict[str, Any] = await client.receive_json()
    assert (frame["type"], frame["message"]) == ("message", message), frame
    return frame


async def ask_older(client: WebSocketClient, **fields: Any) -> None:
    await client.send_json({"type": "older", **fields})


async def older(client: WebSocketClient, **fields: Any) -> dict[str, Any]:
    """Send an ``older`` frame; its answer, checked for shape."""
    await ask_older(client, **fields)
    answer: dict[str, Any] = await client.receive_json()
    assert list(answer) == OLDER_KEYS, answer
    assert isinstance(answer["complete"], bool)
    for message in answer["messages"]:
        assert list(message) == MESSAGE_KEYS, message
    return answer


async def assert_still_talking(client: WebSocketClient, room: str) -> None:
    """The connection is open and in ``room``: a message to it comes back."""
    await say(client, room, "still here")


# Paging back


@pytest.mark.parametrize("subprotocols", [(), (BATCH_SUBPROTOCOL,)], ids=["plain", "batch"])
@pytest.mark.parametrize("count", [5, 6])
async def test_scrollback_pages_back_to_the_rooms_first_message_complete_on_the_last_page(
    count: int, subprotocols: tuple[str, ...]
) -> None:
    """Pages of two, newest first, each oldest first; messages of another room between them
    never show; ``complete`` exactly on the page that holds the room's first message."""
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, subprotocols=subprotocols) as ann,
    ):
        await ann.join("x")
        live = []
        for n in range(count):
            live.append(await say(ann, "x", f"x{n}"))
            await say(ann, DEFAULT_ROOM, f"general {n}")  # Ids of another room in between.

        pages = []
        before = NEWEST
        while True:
            page = await older(ann, room="x", before=before, limit=2)
            assert page["room"] == "x"
            pages.append(page)
            if page["complete"]:
                break
            before = page["messages"][0]["id"]

        assert [len(page["messages"]) for page in pages] == [2] * (count // 2) + (
            [count % 2] if count % 2 else []
        )
        assert [page["complete"] for page in pages] == [False] * (len(pages) - 1) + [True]
        # Every message of x once, exactly as it came live, and nothing else.
        assert [m for page in reversed(pages) for m in page["messages"]] == live
        # Nothing older than the first: an empty page, complete.
        first = live[0]["id"]
        assert await older(ann, room="x", before=first, limit=2) == {
            "type": "older",
            "room": "x",
            "complete": True,
            "messages": [],
        }
        await assert_nothing_more(ann)


async def test_a_page_holds_the_newest_messages_before_the_id_given_oldest_first() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        live = [await say(ann, DEFAULT_ROOM, f"m{n}") for n in range(10)]

        page = await older(ann, room=DEFAULT_ROOM, before=live[7]["id"], limit=3)

        assert page["messages"] == live[4:7]
        assert page["messages"] == [
            chat_frame(message["id"], "ann", f"m{n}") for n, message in enumerate(live[4:7], 4)
        ]
        assert not page["complete"]
        # An id that is not one of the room's (here: one past the newest) works as well.
        newest = await older(ann, room=DEFAULT_ROOM, before=live[-1]["id"] + 1, limit=2)
        assert newest["messages"] == live[-2:]


async def test_older_without_a_limit_gives_the_default_number() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        live = [await say(ann, DEFAULT_ROOM, f"m{n}") for n in range(DEFAULT_OLDER_MESSAGES + 2)]

        page = await older(ann, room=DEFAULT_ROOM, before=NEWEST)

        assert page["messages"] == live[-DEFAULT_OLDER_MESSAGES:]
        assert not page["complete"]
        everything = await older(ann, room=DEFAULT_ROOM, before=NEWEST, limit=MAX_OLDER_MESSAGES)
        assert (everything["messages"], everything["complete"]) == (live, True)


async def test_older_without_a_room_is_of_the_connections_first_room() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state, b"room=lobby") as ann:
        await ann.join("x")
        await say(ann, "x", "in x")
        mine = await say(ann, "lobby", "in lobby")

        page = await older(ann, before=NEWEST)

        assert (page["room"], page["messages"], page["complete"]) == ("lobby", [mine], True)


async def test_older_of_a_room_with_no_older_messages_is_empty_and_complete() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        await say(ann, DEFAULT_ROOM, "elsewhere")
        await ann.join("x")  # A room with no message at all.

        for before in (1, 2, NEWEST):
            page = await older(ann, room="x", before=before, limit=5)
            assert (page["messages"], page["complete"]) == ([], True)


async def test_a_scrollback_page_goes_to_the_asker_alone() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app_one, one),
        worker(hub) as (app_two, two),
        open_chat(app_one, one) as ann,
        open_chat(app_one, one) as bob,  # Same worker, same room.
        open_chat(app_two, two) as cat,  # Another worker, same room.
    ):
        message = await say(ann, DEFAULT_ROOM, "hello")
        await settled(bob)
        await settled(cat)

        page = await older(ann, room=DEFAULT_ROOM, before=NEWEST)

        assert page["messages"] == [message]
        await assert_nothing_more(ann, bob, cat)


async def test_older_answers_come_in_the_order_the_frames_were_sent() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        first = await say(ann, DEFAULT_ROOM, "first")
        await ask_older(ann, room=DEFAULT_ROOM, before=NEWEST)
        await ann.send_json({"type": "message", "sender": "ann", "message": "second"})
        await ask_older(ann, room=DEFAULT_ROOM, before=NEWEST)

        frames = [await ann.receive_json() for _ in range(3)]

        assert [frame["type"] for frame in frames] == ["older", "message", "older"]
        assert frames[0]["messages"] == [first]
        assert frames[2]["messages"] == [first, frames[1]]


async def test_live_frames_keep_coming_while_a_page_is_fetched() -> None:
    """The hub round trip holds up the asker's next frames only, as a join's does: what it is
    sent meanwhile goes out, and the page after."""
    hub = GatedHub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        earlier = await say(ann, DEFAULT_ROOM, "earlier")
        await settled(bob)
        hub.before_older = trio.Event()
        await ask_older(ann, room=DEFAULT_ROOM, before=earlier["id"] + 1)
        with trio.fail_after(5):
            await hub.older_held.wait()

        await bob.send_json({"sender": "bob", "message": "meanwhile"})
        meanwhile = await ann.receive_json()
        assert (meanwhile["sender"], meanwhile["message"]) == ("bob", "meanwhile")

        hub.before_older.set()
        page = await ann.receive_json()
        assert (page["type"], page["messages"]) == ("older", [earlier])


# Errors


async def test_older_of_a_room_not_joined_is_not_joined() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state, b"room=x") as bob,
    ):
        await say(bob, "x", "private to x")
        await ask_older(ann, room="x", before=NEWEST)
        assert_error(await ann.receive_json(), "not_joined", "x")
        await ask_older(ann, room="nowhere", before=NEWEST)  # Not even a room.
        assert_error(await ann.receive_json(), "not_joined", "nowhere")
        await assert_nothing_more(ann, bob)
        await assert_still_talking(ann, DEFAULT_ROOM)


async def test_older_without_a_room_after_leaving_every_room_is_not_joined() -> None:
    async with worker(fixed_clock_hub()) as (app, state), open_chat(app, state) as ann:
        await ann.send_json({"type": "leave", "room": DEFAULT_ROOM})
        assert await ann.receive_json() == {"type": "left", "room": DEFAULT_ROOM}

        await ask_older(ann, before=NEWEST)

        assert_error(await ann.receive_json(), "not_joined")
        await assert_nothing_more(ann)


@pytest.mark.parametrize(
    ("fields", "code", "room"),
    [
        ({"room": "Bad Room", "before": 5}, "invalid_room", None),
        ({"room": "", "before": 5}, "invalid_room", None),
        ({"room": 7, "before": 5}, "wrong_type", None),
        ({"room": DEFAULT_ROOM}, "missing_field", DEFAULT_ROOM),
        ({}, "missing_field", None),
        ({"room": DEFAULT_ROOM, "before": "5"}, "wrong_type", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": True}, "wrong_type", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": 5.0}, "wrong_type", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": 5, "limit": "2"}, "wrong_type", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": 0}, "out_of_range", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": -5}, "out_of_range", DEFAULT_ROOM),
        ({"room": DEFAULT_ROOM, "before": 5, "limit": 0}, "out_of_range", DEFAULT_ROOM),
        ({"before": 5, "limit": MAX_OLDER_MESSAGES + 1}, "out_of_range", None),
    ],
)
async def test_a_bad_older_frame_gets_one_error_and_the_connection_goes_on(
    fields: dict[str, Any], code: str, room: str | None
) -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        await say(ann, DEFAULT_ROOM, "kept")
        await settled(bob)

        await ask_older(ann, **fields)

        [error] = await settled(ann)
        assert_error(error, code, room)
        await assert_nothing_more(bob)
        await assert_still_talking(ann, DEFAULT_ROOM)


async def test_older_while_the_hub_is_down_is_hub_unavailable_then_works_again() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        message = await say(ann, DEFAULT_ROOM, "kept")
        hub.connected = False

        await ask_older(ann, room=DEFAULT_ROOM, before=NEWEST)
        [error] = await settled(ann)
        await ask_older(ann, before=NEWEST)  # The first room, unnamed: the error names it.
        [unnamed] = await settled(ann)
        hub.connected = True

        for frame in (error, unnamed):
            assert_error(frame, "hub_unavailable", DEFAULT_ROOM)
            assert "Try again in a moment" in frame["message"]
        page = await older(ann, room=DEFAULT_ROOM, before=NEWEST)
        assert page["messages"] == [message]


async def test_older_frames_count_against_the_rate_limit() -> None:
    hub = fixed_clock_hub()
    settings = Settings(rate=NEGLIGIBLE_RATE, burst=2)
    async with worker(hub, settings) as (app, state), open_chat(app, state) as ann:
        await older(ann, room=DEFAULT_ROOM, before=NEWEST)
        await older(ann, room=DEFAULT_ROOM, before=NEWEST)
        await ask_older(ann, room=DEFAULT_ROOM, before=NEWEST)

        [error] = await settled(ann)
        assert_error(error, "rate_limited")


async def test_an_older_page_is_one_json_line_even_in_batch_mode() -> None:
    """A page is one frame: in batch mode, one line among the others."""
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, subprotocols=[BATCH_SUBPROTOCOL]) as ann,
    ):
        tricky = await say(ann, DEFAULT_ROOM, 'two\nlines and "quotes"')
        await ask_older(ann, room=DEFAULT_ROOM, before=NEWEST)
        await ann.send_json({"sender": "ann", "message": "after"})

        frames = await settled(ann)

        assert [frame["type"] for frame in frames] == ["older", "message"]
        assert frames[0]["messages"] == [tricky]  # Decoded from one line of the batch.
