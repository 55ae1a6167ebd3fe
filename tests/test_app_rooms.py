"""Rooms through the app, in-process: joins and leaves, each room's frames to its members only,
history and resume per room, presence per room, every room error, the room list, and the
classic one-room client.

Workers are ``ChatApp``s with their own lifespans on one ``LocalHub`` (so one Trio run holds
several workers), driven by ``asgi_driver``. Nothing sleeps: "nothing more was sent" is read
after ``wait_all_tasks_blocked``; the one test about the age of the room list runs on the
autojump clock. The rules are docs/protocol.md's (Rooms).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trio.testing

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.protocol import ChatMessage, encode_chat_body
from trio_chat.session import BATCH_SUBPROTOCOL
from trio_chat.worker import ROOMS_LIST_MAX_AGE_SECONDS

from asgi_driver import (
    DEFAULT_ROOM,
    MESSAGE_KEYS,
    NEGLIGIBLE_RATE,
    GatedHub,
    WebSocketClient,
    assert_error,
    assert_nothing_more,
    chat_app,
    chat_frame,
    fixed_clock_hub,
    open_chat,
    request,
    running_worker,
    settled,
    worker,
)


def chat(message_id: int, room: str, sender: str, message: str) -> dict[str, Any]:
    """``chat_frame`` with the room first, as this file's tests read best."""
    return chat_frame(message_id, sender, message, room)


async def say(client: WebSocketClient, room: str | None, message: str, sender: str = "ann") -> None:
    """Send a message to ``room``; ``None``: the classic frame, without type or room."""
    document: dict[str, Any] = {"sender": sender, "message": message}
    if room is not None:
        document = {"type": "message", "room": room, **document}
    await client.send_json(document)


async def leave(client: WebSocketClient, room: str) -> None:
    await client.send_json({"type": "leave", "room": room})


def texts(frames: Iterable[dict[str, Any]]) -> list[str]:
    return [frame["message"] for frame in frames]


def of_type(frames: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == kind]


def history_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    [history] = of_type(frames, "history")
    return history


async def assert_still_talking(client: WebSocketClient, room: str) -> None:
    """The connection is open and in ``room``: a message to it comes back."""
    await say(client, room, "still here")
    frame = await client.receive_json()
    assert (frame["type"], frame["room"], frame["message"]) == ("message", room, "still here")


async def rooms_of_the_hub(hub: LocalHub) -> dict[str, int]:
    return dict(hub.state.rooms())


# Joining, leaving, and where messages go


async def test_a_join_answers_the_rooms_history_then_its_presence_and_nothing_else() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"name=bob") as bob,
    ):
        await ann.join("x")
        await say(ann, "x", "in x")
        await say(ann, DEFAULT_ROOM, "in general")
        await ann.receive_json()
        await ann.receive_json()
        await settled(bob)

        answer = await bob.join("x")

        epoch = bob.history["epoch"]
        assert answer == [
            {
                "type": "history",
                "room": "x",
                "resumed": False,
                "epoch": epoch,
                "complete": True,  # The room's first message is in it.
                "messages": [chat(1, "x", "ann", "in x")],
            },
            {
                "type": "presence",
                "version": answer[1]["version"],
                "room": "x",
                "online": 2,
                "users": ["ann", "bob"],
                "joined": [],  # A state, not a change: the newcomer had seen none before.
                "left": [],
            },
        ]
        assert [list(frame) for frame in answer] == [
            ["type", "room", "resumed", "epoch", "complete", "messages"],
            ["type", "version", "room", "online", "users", "joined", "left"],
        ]
        await assert_nothing_more(bob)
        # Ann, in x already, hears of Bob in x only.
        [presence] = await settled(ann)
        assert (presence["room"], presence["joined"]) == ("x", ["bob"])


async def test_each_room_has_its_own_history() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state):
        async with open_chat(app, state) as ann:
            await ann.join("x")
            for room, message in [("x", "x1"), (DEFAULT_ROOM, "g1"), ("x", "x2")]:
                await say(ann, room, message)
                await ann.receive_json()
        async with open_chat(app, state) as bob:
            assert texts(bob.history["messages"]) == ["g1"]
            assert bob.history["room"] == DEFAULT_ROOM
            answer = await bob.join("x")
            assert texts(history_of(answer)["messages"]) == ["x1", "x2"]
            assert [m["id"] for m in history_of(answer)["messages"]] == [1, 3]


async def test_each_member_gets_the_frames_of_its_rooms_only_across_workers() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app_one, one),
        worker(hub) as (app_two, two),
        open_chat(app_one, one) as ann,  # general, x, y
        open_chat(app_two, two) as bob,  # general, x
        open_chat(app_two, two) as cat,  # general only: never sends a join
        open_chat(app_one, one, b"room=y") as dan,  # y only
    ):
        await ann.join("x")
        await ann.join("y")
        await bob.join("x")
        rooms = {ann: {DEFAULT_ROOM, "x", "y"}, bob: {DEFAULT_ROOM, "x"}, cat: {DEFAULT_ROOM}}
        rooms[dan] = {"y"}
        for client in rooms:
            await settled(client)

        await say(ann, "x", "to x")
        await say(bob, "x", "to x", sender="bob")
        await say(dan, "y", "to y", sender="dan")
        await say(cat, DEFAULT_ROOM, "to general", sender="cat")
        await say(ann, None, "classic")  # To ann's first room: general.
        await say(dan, None, "classic", sender="dan")  # Dan's only room: y.

        sent = [
            chat(1, "x", "ann", "to x"),
            chat(2, "x", "bob", "to x"),
            chat(3, "y", "dan", "to y"),
            chat(4, DEFAULT_ROOM, "cat", "to general"),
            chat(5, DEFAULT_ROOM, "ann", "classic"),
            chat(6, "y", "dan", "classic"),
        ]
        for client, member_of in rooms.items():
            frames = await settled(client)
            assert of_type(frames, "message") == [f for f in sent if f["room"] in member_of]
            assert {frame["room"] for frame in frames} <= member_of


async def test_a_leave_answers_left_after_the_rooms_last_frame_and_nothing_of_it_after() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"room=x&name=bob") as bob,
    ):
        await ann.join("x")
        await settled(bob)
        ann.stall("websocket.send")  # Ann's writer is stuck: what follows queues up.
        await say(bob, "x", "m1", sender="bob")
        await say(bob, "x", "m2", sender="bob")
        await trio.testing.wait_all_tasks_blocked()
        await leave(ann, "x")
        await trio.testing.wait_all_tasks_blocked()
        await say(bob, "x", "m3", sender="bob")  # After the leave: not for ann.
        await say(ann, DEFAULT_ROOM, "g")
        await trio.testing.wait_all_tasks_blocked()
        ann.unstall()

        frames = await settled(ann)
        assert frames == [
            chat(1, "x", "bob", "m1"),
            chat(2, "x", "bob", "m2"),
            {"type": "left", "room": "x"},
            chat(4, DEFAULT_ROOM, "ann", "g"),
        ]
        # Bob saw ann go, and got everything of x.
        bob_frames = await settled(bob)
        assert texts(of_type(bob_frames, "message")) == ["m1", "m2", "m3"]
        presence = of_type(bob_frames, "presence")[-1]
        assert (presence["room"], presence["online"], presence["left"]) == ("x", 1, ["ann"])
        # And ann is not in x any more: a message to x is refused.
        await say(ann, "x", "again")
        assert_error(await ann.receive_json(), "not_joined", "x")


async def test_a_connection_may_leave_its_first_room_and_join_it_again() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        await ann.join("x")
        await leave(ann, DEFAULT_ROOM)
        assert await ann.receive_json() == {"type": "left", "room": DEFAULT_ROOM}
        await say(ann, None, "classic")  # x is its first room now.
        assert await ann.receive_json() == chat(1, "x", "ann", "classic")

        answer = await ann.join(DEFAULT_ROOM)
        assert history_of(answer)["messages"] == []
        await say(ann, None, "still x")  # Earliest joined of the rooms it is in: x.
        assert await ann.receive_json() == chat(2, "x", "ann", "still x")


# Resuming a room


async def seeded_rooms(hub: LocalHub) -> None:
    """x: ids 1, 3, 4 and 5; general: id 2."""
    for room, message in [("x", "x1"), (DEFAULT_ROOM, "g2"), ("x", "x3"), ("x", "x4"), ("x", "x5")]:
        await hub.publish(encode_chat_body(room, ChatMessage("ann", message)))


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("{epoch}:1", ["x3", "x4", "x5"]),
        ("{epoch}:2", ["x3", "x4", "x5"]),  # An id of another room: what came after it.
        ("{epoch}:4", ["x5"]),
        ("{epoch}:5", []),  # Nothing missed.
        ("3", ["x4", "x5"]),  # Without an epoch: this run's ids.
    ],
)
async def test_a_join_with_since_gets_exactly_what_was_missed_in_that_room(
    since: str, expected: list[str]
) -> None:
    hub = fixed_clock_hub()
    await seeded_rooms(hub)
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        epoch = ann.history["epoch"]
        answer = await ann.join("x", since=since.format(epoch=epoch))

        assert [frame["type"] for frame in answer] == ["history", "presence"]
        history = history_of(answer)
        assert (history["room"], history["resumed"], history["epoch"]) == ("x", True, epoch)
        assert texts(history["messages"]) == expected
        await assert_nothing_more(ann)


@pytest.mark.parametrize(
    "since",
    [
        "{epoch}:6",  # Ahead of the last id given.
        "999999",
        "0000ffff:1",  # Another run of ids.
        "abc",
        "",
        "-1",
        "1.5",
        3,
        None,
        ["1"],
    ],
)
async def test_a_join_with_a_future_or_garbage_since_is_invalid_resume_then_fresh_history(
    since: Any,
) -> None:
    hub = fixed_clock_hub()
    await seeded_rooms(hub)
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        epoch = ann.history["epoch"]
        if isinstance(since, str):
            since = since.format(epoch=epoch)
        answer = await ann.join("x", since=since)

        assert [frame["type"] for frame in answer] == ["error", "history", "presence"]
        assert_error(answer[0], "invalid_resume", "x")
        history = history_of(answer)
        assert (history["room"], history["resumed"]) == ("x", False)
        assert texts(history["messages"]) == ["x1", "x3", "x4", "x5"]
        await assert_still_talking(ann, "x")


@pytest.mark.parametrize(
    ("since", "partial"),
    [(1, True), (2, True), (3, False), (4, False)],
)
async def test_a_join_with_since_older_than_the_rooms_history_is_resume_partial(
    since: int, partial: bool
) -> None:
    hub = fixed_clock_hub(history_size=2)
    await seeded_rooms(hub)  # x keeps 4 and 5: 3 was the last dropped.
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        epoch = ann.history["epoch"]
        answer = await ann.join("x", since=f"{epoch}:{since}")

        notices = of_type(answer, "notice")
        if partial:
            [notice] = notices
            assert list(notice) == ["type", "code", "message", "room", "first_available"]
            assert (notice["code"], notice["room"], notice["first_available"]) == (
                "resume_partial",
                "x",
                4,
            )
            assert answer[0] is notice
        else:
            assert notices == []
        history = history_of(answer)
        assert (history["room"], history["resumed"]) == ("x", True)
        assert texts(history["messages"]) == (["x5"] if since == 4 else ["x4", "x5"])
        assert not of_type(answer, "error")


async def test_since_in_the_url_resumes_the_room_of_the_url() -> None:
    hub = fixed_clock_hub()
    await seeded_rooms(hub)
    async with worker(hub) as (app, state), open_chat(app, state, b"room=x&since=3") as ann:
        assert [frame["type"] for frame in ann.opening] == ["welcome", "history", "presence"]
        assert (ann.history["room"], ann.history["resumed"]) == ("x", True)
        assert texts(ann.history["messages"]) == ["x4", "x5"]
        assert ann.opening[-1]["room"] == "x"


# Errors: each answers the frame that caused it, and the connection stays open.

BAD_ROOM_NAMES = ["General", "", "-x", "_x", "x" * 65, "a b", "a/b", "é", "x\n", " x"]


@pytest.mark.parametrize("name", BAD_ROOM_NAMES)
@pytest.mark.parametrize("kind", ["join", "leave", "message"])
async def test_an_invalid_room_name_is_refused_with_invalid_room(kind: str, name: str) -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        frame = {"type": kind, "room": name, "sender": "ann", "message": "hi"}
        await ann.send_json(frame)

        [error] = await settled(ann)
        assert_error(error, "invalid_room")
        assert await rooms_of_the_hub(hub) == {DEFAULT_ROOM: 1}
        await assert_still_talking(ann, DEFAULT_ROOM)


@pytest.mark.parametrize(
    ("field", "code"),
    [({"room": 5}, "wrong_type"), ({"room": None}, "wrong_type"), ({}, "missing_field")],
)
@pytest.mark.parametrize("kind", ["join", "leave"])
async def test_a_join_or_leave_without_a_room_name_is_refused(
    kind: str, field: dict[str, Any], code: str
) -> None:
    async with worker(fixed_clock_hub()) as (app, state), open_chat(app, state) as ann:
        await ann.send_json({"type": kind, **field})
        [error] = await settled(ann)
        assert_error(error, code)
        await assert_still_talking(ann, DEFAULT_ROOM)


@pytest.mark.parametrize("name", [n for n in BAD_ROOM_NAMES if n])
async def test_an_invalid_room_in_the_url_is_an_error_and_the_default_room(name: str) -> None:
    hub = fixed_clock_hub()
    query = f"room={quote(name)}".encode()
    async with worker(hub) as (app, state), open_chat(app, state, query) as ann:
        assert [frame["type"] for frame in ann.opening] == [
            "welcome",
            "error",
            "history",
            "presence",
        ]
        assert_error(ann.opening[1], "invalid_room")
        assert ann.history["room"] == ann.opening[-1]["room"] == DEFAULT_ROOM
        await assert_still_talking(ann, DEFAULT_ROOM)


async def test_a_connection_with_no_room_in_the_url_is_in_the_default_room() -> None:
    settings = Settings(rate=0, default_room="lobby")
    async with worker(fixed_clock_hub(), settings) as (app, state), open_chat(app, state) as ann:
        assert ann.history["room"] == ann.opening[-1]["room"] == "lobby"
        await say(ann, None, "hi")
        assert await ann.receive_json() == chat(1, "lobby", "ann", "hi")


async def test_a_message_to_or_a_leave_of_a_room_not_joined_is_not_joined() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state, b"room=x") as bob,
    ):
        await say(ann, "x", "not mine")
        assert_error(await ann.receive_json(), "not_joined", "x")
        await leave(ann, "x")
        assert_error(await ann.receive_json(), "not_joined", "x")
        await leave(ann, "nowhere")  # Not even a room yet.
        assert_error(await ann.receive_json(), "not_joined", "nowhere")
        await assert_nothing_more(ann, bob)  # Nothing reached x.
        await assert_still_talking(ann, DEFAULT_ROOM)


async def test_a_message_after_leaving_every_room_is_not_joined_until_a_join() -> None:
    async with worker(fixed_clock_hub()) as (app, state), open_chat(app, state) as ann:
        await leave(ann, DEFAULT_ROOM)
        assert await ann.receive_json() == {"type": "left", "room": DEFAULT_ROOM}
        await say(ann, None, "anyone?")
        assert_error(await ann.receive_json(), "not_joined")
        await say(ann, DEFAULT_ROOM, "anyone?")
        assert_error(await ann.receive_json(), "not_joined", DEFAULT_ROOM)
        await assert_nothing_more(ann)

        await ann.join("x")
        await say(ann, None, "here")
        assert await ann.receive_json() == chat(1, "x", "ann", "here")


async def test_a_join_past_the_rooms_per_connection_is_too_many_rooms() -> None:
    hub = fixed_clock_hub()
    settings = Settings(rate=0, max_rooms_per_connection=2)
    async with worker(hub, settings) as (app, state), open_chat(app, state) as ann:
        assert ann.opening[0]["max_rooms"] == 2
        await ann.join("a")
        await ann.send_json({"type": "join", "room": "b"})

        [error] = await settled(ann)
        assert_error(error, "too_many_rooms", "b")
        assert set(await rooms_of_the_hub(hub)) == {DEFAULT_ROOM, "a"}
        await say(ann, "b", "hi")
        assert_error(await ann.receive_json(), "not_joined", "b")
        await assert_still_talking(ann, "a")
        # Leaving one makes room for another.
        await leave(ann, "a")
        assert await ann.receive_json() == {"type": "left", "room": "a"}
        await ann.join("b")
        await assert_still_talking(ann, "b")


@pytest.mark.parametrize("room", [DEFAULT_ROOM, "x"])
async def test_a_join_of_a_room_joined_already_is_already_joined_and_resends_nothing(
    room: str,
) -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"name=bob") as bob,
    ):
        if room != DEFAULT_ROOM:
            await ann.join(room)
        await settled(ann)
        await settled(bob)
        await ann.send_json({"type": "join", "room": room, "since": "0"})

        [error] = await settled(ann)
        assert_error(error, "already_joined", room)
        await assert_nothing_more(bob)  # No presence change either.
        await assert_still_talking(ann, room)


async def test_a_new_room_past_the_servers_rooms_is_room_limit_while_they_have_members() -> None:
    app = ChatApp(Settings(hub="local", max_rooms=1, rate=0))
    async with (
        running_worker(app) as state,
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        await settled(ann)
        await ann.send_json({"type": "join", "room": "x"})
        [error] = await settled(ann)
        assert_error(error, "room_limit", "x")
        # Ann is not in x: a message to it is refused, and x is in no list.
        await say(ann, "x", "hi")
        assert_error(await ann.receive_json(), "not_joined", "x")
        assert (await request(app, state, "GET", "/rooms")).json() == {
            "rooms": [{"room": DEFAULT_ROOM, "online": 2}]
        }
        await assert_still_talking(ann, DEFAULT_ROOM)
        await settled(bob)

        # Once general is empty it makes way for x.
        await leave(ann, DEFAULT_ROOM)
        await leave(bob, DEFAULT_ROOM)
        await settled(ann)
        answer = await ann.join("x")
        assert history_of(answer)["room"] == "x"
        await assert_still_talking(ann, "x")


async def test_a_join_while_the_hub_is_down_is_hub_unavailable_and_not_in_the_room() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"name=bob") as bob,
    ):
        await settled(ann)
        hub.connected = False
        await ann.send_json({"type": "join", "room": "x"})
        [error] = await settled(ann)
        assert_error(error, "hub_unavailable", "x")
        hub.connected = True

        await say(ann, "x", "hi")
        assert_error(await ann.receive_json(), "not_joined", "x")
        # Nor in the room's presence.
        answer = await bob.join("x")
        presence = answer[-1]
        assert (presence["online"], presence["users"]) == (1, ["bob"])
        await assert_nothing_more(ann)
        await assert_still_talking(ann, DEFAULT_ROOM)
        await ann.join("x")
        await assert_still_talking(ann, "x")


async def test_a_join_whose_answer_is_lost_sends_nothing_of_the_room() -> None:
    """The hub took the join in (so the worker gets the room's frames), then the answer was
    lost: the client is told it is not in the room, and must get nothing of it."""
    hub = GatedHub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state, b"room=x") as bob,
    ):
        await settled(bob)

        def lost() -> None:
            hub.lose_answer = None
            hub.state.publish([encode_chat_body("x", ChatMessage("bob", "meanwhile in x"))])
            hub.deliver_all()

        hub.lose_answer = lost
        await settled(ann)
        await ann.send_json({"type": "join", "room": "x"})
        frames = await settled(ann)

        assert_error(frames[0], "hub_unavailable", "x")
        assert frames[1:] == []


# Presence


async def test_presence_is_per_room_and_a_rename_reaches_every_room_of_the_connection() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"name=bob") as bob,
        open_chat(app, state, b"room=x&name=cat") as cat,
    ):
        assert (cat.opening[-1]["room"], cat.opening[-1]["users"]) == ("x", ["cat"])
        answer = await ann.join("x")
        assert (answer[-1]["online"], answer[-1]["users"]) == (2, ["ann", "cat"])
        for client in (ann, bob, cat):
            await settled(client)

        await ann.send_json({"type": "rename", "name": "anna"})

        to_ann, to_bob, to_cat = [await settled(client) for client in (ann, bob, cat)]
        by_room = {frame["room"]: frame for frame in to_ann}
        assert [frame["type"] for frame in to_ann] == ["presence", "presence"]
        assert set(by_room) == {DEFAULT_ROOM, "x"}
        assert by_room[DEFAULT_ROOM]["users"] == ["anna", "bob"]
        assert by_room["x"]["users"] == ["anna", "cat"]
        for frame in to_ann:
            assert (frame["online"], frame["joined"], frame["left"]) == (2, ["anna"], ["ann"])
        assert to_bob == [by_room[DEFAULT_ROOM]]
        assert to_cat == [by_room["x"]]


async def test_presence_versions_count_per_room() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        first = ann.opening[-1]["version"]
        answer = await ann.join("x")
        assert answer[-1]["version"] == 1  # x's first presence, whatever general's is.
        await leave(ann, "x")
        await settled(ann)
        async with open_chat(app, state) as bob:
            assert bob.opening[-1]["version"] == first + 1
            assert bob.opening[-1]["online"] == 2


# The classic client: one room, the one-room protocol


async def test_a_client_that_never_joins_sees_its_room_only_with_the_room_key() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state) as old,
    ):
        await ann.join("x")
        await say(ann, "x", "elsewhere")
        await say(old, None, "classic", sender="old")
        await say(ann, DEFAULT_ROOM, "here")
        await ann.send_json({"type": "rename", "name": "anna"})
        await leave(ann, "x")

        assert [frame["type"] for frame in old.opening] == ["welcome", "history", "presence"]
        assert old.history["room"] == old.opening[-1]["room"] == DEFAULT_ROOM
        frames = await settled(old)
        messages = of_type(frames, "message")
        assert messages == [
            chat(2, DEFAULT_ROOM, "old", "classic"),
            chat(3, DEFAULT_ROOM, "ann", "here"),
        ]
        assert all(list(frame) == MESSAGE_KEYS for frame in messages)
        assert {frame["type"] for frame in frames} == {"message", "presence"}
        assert {frame["room"] for frame in frames} == {DEFAULT_ROOM}


async def test_the_classic_frame_goes_to_the_first_room_joined() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state, b"room=x") as ann:
        await ann.join(DEFAULT_ROOM)
        await say(ann, None, "classic")
        await ann.send_json({"type": "message", "sender": "ann", "message": "typed"})
        assert [await ann.receive_json() for _ in range(2)] == [
            chat(1, "x", "ann", "classic"),
            chat(2, "x", "ann", "typed"),
        ]


# The room list


async def test_the_rooms_frame_and_get_rooms_list_the_busiest_rooms_first() -> None:
    hub = fixed_clock_hub()
    queries = [b"", b"", b"", b"room=b-room", b"room=b-room", b"room=a-room", b"room=z"]
    async with worker(hub) as (app, state), trio.open_nursery() as nursery:
        clients: list[WebSocketClient] = []
        for query in queries:
            clients.append(await nursery.start(open_client, app, state, query))
        await clients[0].join("a-room")  # general 3, a-room 2, b-room 2, z 1

        await clients[1].send_json({"type": "rooms"})
        frame = await clients[1].receive_json()
        response = await request(app, state, "GET", "/rooms")
        nursery.cancel_scope.cancel()

    expected = [
        {"room": DEFAULT_ROOM, "online": 3},
        {"room": "a-room", "online": 2},
        {"room": "b-room", "online": 2},
        {"room": "z", "online": 1},
    ]
    assert frame == {"type": "rooms", "rooms": expected}
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"rooms": expected}


async def open_client(
    app: ChatApp,
    state: dict[str, Any],
    query: bytes,
    *,
    task_status: trio.TaskStatus[WebSocketClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A client that stays connected until cancelled."""
    async with open_chat(app, state, query) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def test_the_room_list_is_asked_again_once_it_is_old(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        first = (await request(app, state, "GET", "/rooms")).json()
        await ann.join("x")
        autojump_clock.jump(ROOMS_LIST_MAX_AGE_SECONDS)
        second = (await request(app, state, "GET", "/rooms")).json()

    assert first == {"rooms": [{"room": DEFAULT_ROOM, "online": 1}]}
    assert second == {"rooms": [{"room": DEFAULT_ROOM, "online": 1}, {"room": "x", "online": 1}]}


async def test_the_room_list_is_hub_unavailable_while_the_hub_is_down() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as ann:
        hub.connected = False
        response = await request(app, state, "GET", "/rooms")
        await ann.send_json({"type": "rooms"})
        [error] = await settled(ann)
        hub.connected = True
        back = await request(app, state, "GET", "/rooms")

    assert response.status == 503
    assert response.json() == {"error": "hub_unavailable"}
    assert_error(error, "hub_unavailable")
    assert back.status == 200


async def test_get_rooms_is_503_when_the_worker_never_started() -> None:
    app = chat_app(fixed_clock_hub())
    response = await request(app, None, "GET", "/rooms")
    assert (response.status, response.json()) == (503, {"error": "hub_unavailable"})


async def test_head_of_rooms_has_no_body_and_other_methods_are_405() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state):
        head = await request(app, state, "HEAD", "/rooms")
        post = await request(app, state, "POST", "/rooms")
    assert (head.status, head.body, head.headers["content-type"]) == (200, b"", "application/json")
    assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")


# The rate limit


async def test_join_frames_count_against_the_rate_limit() -> None:
    hub = fixed_clock_hub()
    settings = Settings(rate=NEGLIGIBLE_RATE, burst=2)
    async with worker(hub, settings) as (app, state), open_chat(app, state) as ann:
        await ann.join("a")
        await ann.join("b")
        await ann.send_json({"type": "join", "room": "c"})

        [error] = await settled(ann)
        assert_error(error, "rate_limited")
        assert set(await rooms_of_the_hub(hub)) == {DEFAULT_ROOM, "a", "b"}
        await leave(ann, "a")
        assert_error(await ann.receive_json(), "rate_limited")


# A join racing messages in its room


@pytest.mark.parametrize("subprotocols", [(), (BATCH_SUBPROTOCOL,)], ids=["plain", "batch"])
@pytest.mark.parametrize("hold", ["before_snapshot", "after_snapshot"])
@pytest.mark.parametrize("neighbour", [False, True], ids=["alone", "neighbour"])
async def test_a_join_during_a_burst_in_that_room_shows_no_gap_and_no_duplicate(
    hold: str, subprotocols: tuple[str, ...], neighbour: bool
) -> None:
    """Ann, on another worker, writes in x and Cat in general while Bob's join of x waits
    for its snapshot: Bob gets every message of x once, in order, and general's too.

    With a ``neighbour`` in x on Bob's worker, x's frames reach that worker all along, so Bob
    is queued the live frames his snapshot covers, which must be dropped.
    """
    hub = GatedHub()
    async with (
        worker(hub) as (app_one, one),
        worker(hub) as (app_two, two),
        open_chat(app_two, two, b"room=x") as ann,
        open_chat(app_two, two) as cat,
        open_chat(app_one, one, b"room=x" if neighbour else b"room=elsewhere"),
        open_chat(app_one, one, subprotocols=subprotocols) as bob,
    ):
        await say(ann, "x", "m1")
        await ann.receive_json()
        gate = trio.Event()
        setattr(hub, hold, gate)
        await bob.send_json({"type": "join", "room": "x"})
        await trio.testing.wait_all_tasks_blocked()  # Bob's join waits at the gate.
        await say(ann, "x", "m2")
        await say(cat, DEFAULT_ROOM, "g")
        await say(ann, "x", "m3")
        await settled(ann)
        setattr(hub, hold, None)
        gate.set()

        answer = await bob.read_join("x")
        history = texts(history_of(answer)["messages"])
        await say(ann, "x", "m4")
        frames = await settled(bob)
        live_x = [f["message"] for f in frames if f["type"] == "message" and f["room"] == "x"]
        assert history + live_x == ["m1", "m2", "m3", "m4"]
        # Held before the snapshot, it covers the burst; held after, the burst comes live.
        assert history == (["m1", "m2", "m3"] if hold == "before_snapshot" else ["m1"])
        assert texts(f for f in frames if f["type"] == "message" and f["room"] != "x") == ["g"]
        # Nor any presence of x older than the one of the join.
        versions = [f["version"] for f in frames if f["type"] == "presence" and f["room"] == "x"]
        assert all(version > answer[-1]["version"] for version in versions)
        assert not of_type(frames, "error")
