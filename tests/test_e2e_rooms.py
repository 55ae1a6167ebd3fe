"""End to end: rooms under ``hypercorn -k trio -w 4 trio_chat:app``, real WebSocket clients.

Members of three rooms spread over all four workers talk at once: no frame leaks into another
room, every member of a room sees one order, a late joiner gets each room's history, a resume
each room's missed messages, and presence counts each room; the classic client, which never
sends a join, lives in the default room as before. Every room error is met over a real socket.

Localhost only, a free port per server, the real clock with every wait bounded by
``trio.fail_after``; one server serves several checks, to keep this file fast.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from servers import (
    CHAT_BACK_SECONDS,
    DEFAULT_ROOM,
    HUB_LOSS_NOTICED_SECONDS,
    MAX_CONNECTIONS_TO_REACH_EVERY_WORKER,
    STARTUP_TIMEOUT_SECONDS,
    HypercornServer,
    chat_client,
    clients_on_every_worker,
    hypercorn_server,
    standalone_hub,
    workers_of,
)
from wsclient import WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]

ROOMS = ("red", "green", "blue")
NO_RATE_LIMIT = {"TRIO_CHAT_RATE": "0"}
MESSAGES_PER_SENDER = 4
MESSAGE_KEYS = ["type", "id", "ts", "room", "sender", "message"]
#: Bounds each phase of a test: everyone's messages delivered, a join answered.
PHASE_TIMEOUT_SECONDS = 20.0


async def members_on_every_worker(
    server: HypercornServer, stack: AsyncExitStack
) -> dict[str, list[WebSocketClient]]:
    """Clients opened with ``?room=`` (and a name), each room in turn among those that still
    miss a worker, until every room has a member on every worker (the welcome frame names it).
    """
    members: dict[str, list[WebSocketClient]] = {room: [] for room in ROOMS}
    with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
        for n in itertools.count():
            missing = [room for room in ROOMS if len(workers_of(members[room])) < server.workers]
            if not missing:
                return members
            assert n < MAX_CONNECTIONS_TO_REACH_EVERY_WORKER, {
                room: workers_of(clients) for room, clients in members.items()
            }
            room = missing[n % len(missing)]
            path = f"/chat?room={room}&name={room}-{n}"
            members[room].append(await stack.enter_async_context(chat_client(server, path)))
    raise AssertionError("unreachable")


def names_of(clients: list[WebSocketClient]) -> set[str]:
    """The names the clients gave in their URLs: ``name=`` is the last field."""
    return {client.path.rpartition("name=")[2] for client in clients}


async def read_messages(
    client: WebSocketClient, counts: dict[str, int], seen: list[dict[str, Any]]
) -> None:
    """Read until ``counts`` messages of each room have come; every frame read goes in
    ``seen``."""
    got: dict[str, int] = defaultdict(int)
    while any(got[room] < count for room, count in counts.items()):
        frame = await client.receive()
        seen.append(frame)
        if frame["type"] == "message":
            got[frame["room"]] += 1


def messages(frames: list[dict[str, Any]], room: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "message" and f["room"] == room]


async def next_error(client: WebSocketClient) -> dict[str, Any]:
    """The next frame but presence and others' chat (the connection's rooms live on), which
    must be an error frame."""
    while (frame := await client.receive(presence=False))["type"] == "message":
        pass
    assert frame["type"] == "error", frame
    return frame


def assert_error(frame: dict[str, Any], code: str, room: str | None = None) -> None:
    assert (frame["type"], frame["code"], frame.get("room")) == ("error", code, room), frame
    assert ("room" in frame) is (room is not None), frame


async def assert_still_talking(client: WebSocketClient, room: str, sender: str) -> None:
    """The connection is open and in ``room``: a message to it comes back, next."""
    await client.send(sender, "still here", room)
    frame = await client.receive(presence=False)
    assert (frame["type"], frame["room"], frame["message"]) == ("message", room, "still here")


async def test_rooms_across_four_workers_keep_to_themselves_in_one_order_each() -> None:
    async with hypercorn_server(workers=4, env=NO_RATE_LIMIT) as server, AsyncExitStack() as stack:
        classic = await stack.enter_async_context(chat_client(server, "/chat?name=classic"))
        members = await members_on_every_worker(server, stack)
        for room, clients in members.items():
            for client in clients:
                assert [f["type"] for f in client.opening] == ["welcome", "history", "presence"]
                assert client.history["room"] == client.opening[-1]["room"] == room
        # A member of two rooms through join frames, out of the default room.
        hopper = await stack.enter_async_context(chat_client(server, "/chat?name=hopper"))
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            for room in ("red", "green"):
                answer = await hopper.join(room)
                assert [frame["type"] for frame in answer] == ["history", "presence"]
            await hopper.leave(DEFAULT_ROOM)
            assert await hopper.receive(presence=False) == {"type": "left", "room": DEFAULT_ROOM}

        # Everyone talks at once: in each room, a member on each worker, half of them with
        # the classic frame (their only room is their first), and the hopper in both its rooms.
        senders = {
            room: list({client.welcome["worker"]: client for client in members[room]}.values())
            for room in ROOMS
        }
        counts = {room: len(senders[room]) * MESSAGES_PER_SENDER for room in ROOMS}
        counts["red"] += MESSAGES_PER_SENDER
        counts["green"] += MESSAGES_PER_SENDER
        seen: dict[WebSocketClient, list[dict[str, Any]]] = defaultdict(list)

        async def send_all(client: WebSocketClient, room: str, classic: bool) -> None:
            # Under its own name: a message under another would be a rename.
            [name] = names_of([client])
            for n in range(MESSAGES_PER_SENDER):
                await client.send(name, f"{name} {n}", None if classic else room)

        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            async with trio.open_nursery() as nursery:
                for room, clients in members.items():
                    for client in clients:
                        nursery.start_soon(
                            read_messages, client, {room: counts[room]}, seen[client]
                        )
                hopper_counts = {"red": counts["red"], "green": counts["green"]}
                nursery.start_soon(read_messages, hopper, hopper_counts, seen[hopper])
                for room in ROOMS:
                    for index, sender in enumerate(senders[room]):
                        nursery.start_soon(send_all, sender, room, index % 2 == 1)
                for room in ("red", "green"):
                    nursery.start_soon(send_all, hopper, room, False)

        in_order: dict[str, list[dict[str, Any]]] = {}
        for room in ROOMS:
            # Nothing of another room, presence included, reached a member.
            for client in members[room]:
                assert {frame.get("room") for frame in seen[client]} == {room}
            first, *others = [messages(seen[client], room) for client in members[room]]
            assert all(other == first for other in others), f"members of {room} disagree"
            ids = [frame["id"] for frame in first]
            assert ids == sorted(set(ids))
            for frame in first:
                assert list(frame) == MESSAGE_KEYS
            by_sender: dict[str, list[str]] = defaultdict(list)
            for frame in first:
                by_sender[frame["sender"]].append(frame["message"])
            for name, texts in by_sender.items():
                assert texts == [f"{name} {n}" for n in range(MESSAGES_PER_SENDER)]
            in_order[room] = first
        assert {frame.get("room") for frame in seen[hopper]} == {"red", "green"}
        for room in ("red", "green"):
            assert messages(seen[hopper], room) == in_order[room]

        # The classic client: nothing of the rooms, and its own room as it was.
        await classic.send("classic", "in the default room")
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            frames = [await classic.receive()]
            while frames[-1]["type"] != "message":
                frames.append(await classic.receive())
        assert [frame["type"] for frame in classic.opening] == ["welcome", "history", "presence"]
        assert classic.history["room"] == DEFAULT_ROOM
        assert {frame.get("room") for frame in frames} == {DEFAULT_ROOM}
        assert list(frames[-1]) == MESSAGE_KEYS
        assert (frames[-1]["sender"], frames[-1]["message"]) == ("classic", "in the default room")

        # A late joiner gets each room's history, and its presence: everyone in the room.
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            async with chat_client(server, "/chat?room=red&name=late") as late:
                assert (late.history["room"], late.history["resumed"]) == ("red", False)
                assert late.history["messages"] == in_order["red"]
                presence = late.opening[-1]
                assert presence["room"] == "red"
                assert presence["online"] == len(members["red"]) + 2  # The hopper, and late.
                expected_users = sorted(names_of(members["red"]) | {"hopper", "late"})
                assert presence["users"] == expected_users
                answer = await late.join("green")
                history, presence = answer[-2:]
                assert (history["room"], history["messages"]) == ("green", in_order["green"])
                assert presence["online"] == len(members["green"]) + 2
                # A resume of blue from its third message: exactly the rest.
                epoch = late.history["epoch"]
                since = f"{epoch}:{in_order['blue'][2]['id']}"
                answer = await late.join("blue", since=since)
                assert [frame["type"] for frame in answer] == ["history", "presence"]
                history, presence = answer
                assert (history["room"], history["resumed"]) == ("blue", True)
                assert history["messages"] == in_order["blue"][3:]
                assert presence["online"] == len(members["blue"]) + 1
                assert presence["users"] == sorted(names_of(members["blue"]) | {"late"})
            # The same resume in the URL of a new connection.
            async with chat_client(server, f"/chat?room=blue&since={since}") as back:
                assert (back.history["room"], back.history["resumed"]) == ("blue", True)
                assert back.history["messages"] == in_order["blue"][3:]


ROOM_LIMITS = {
    "TRIO_CHAT_MAX_ROOMS": "3",
    "TRIO_CHAT_MAX_ROOMS_PER_CONNECTION": "2",
    # Each connection has 20 frames to send in all: enough for its part here, and no more.
    "TRIO_CHAT_RATE": "0.001",
    "TRIO_CHAT_BURST": "20",
}


async def test_every_room_error_is_answered_and_the_connection_stays_open() -> None:
    async with (
        hypercorn_server(workers=4, env=ROOM_LIMITS) as server,
        chat_client(server, "/chat?room=Not-Valid&name=ann") as ann,
        chat_client(server, "/chat?room=b&name=bob") as bob,
        chat_client(server, "/chat?name=cat") as cat,
        chat_client(server, "/chat?name=dan") as dan,
    ):
        # An invalid room in the URL: an error, and the default room.
        assert [frame["type"] for frame in ann.opening] == [
            "welcome",
            "error",
            "history",
            "presence",
        ]
        assert_error(ann.opening[1], "invalid_room")
        assert ann.history["room"] == DEFAULT_ROOM
        assert ann.welcome["max_rooms"] == 2
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            await ann.join("a")  # The server now holds general, a and b: its limit.

            # invalid_room, in a join, a leave and a message.
            await ann.send_json({"type": "join", "room": "Bad Room"})
            await ann.send_json({"type": "leave", "room": ""})
            await ann.send("ann", "hi", room="UPPER")
            for _ in range(3):
                assert_error(await next_error(ann), "invalid_room")
            # already_joined: and nothing is sent again (the next frame is ann's message).
            await ann.send_json({"type": "join", "room": "a"})
            assert_error(await next_error(ann), "already_joined", "a")
            await assert_still_talking(ann, "a", "ann")
            # too_many_rooms: ann is in two rooms already.
            await ann.send_json({"type": "join", "room": "b"})
            assert_error(await next_error(ann), "too_many_rooms", "b")
            # not_joined: a message to, or a leave of, a room ann is not in.
            await ann.send("ann", "hi", room="b")
            assert_error(await next_error(ann), "not_joined", "b")
            await ann.leave("b")
            assert_error(await next_error(ann), "not_joined", "b")
            await assert_still_talking(ann, DEFAULT_ROOM, "ann")

            # room_limit: a fourth room while the three have members; cat is not in it.
            await cat.send_json({"type": "join", "room": "c"})
            assert_error(await next_error(cat), "room_limit", "c")
            await cat.send("cat", "hi", room="c")
            assert_error(await next_error(cat), "not_joined", "c")
            # not_joined without a room: a classic message after leaving every room.
            await cat.leave(DEFAULT_ROOM)
            assert await cat.receive(presence=False) == {"type": "left", "room": DEFAULT_ROOM}
            await cat.send("cat", "anyone?")
            assert_error(await next_error(cat), "not_joined")
            await cat.join("a")
            await assert_still_talking(cat, "a", "cat")

            # rate_limited: join frames count against the rate too.
            for _ in range(20):
                await dan.send_json({"type": "join", "room": "Bad"})
            for _ in range(20):
                assert_error(await next_error(dan), "invalid_room")
            await dan.send_json({"type": "join", "room": "a"})
            assert_error(await next_error(dan), "rate_limited")

            # Bob, in b all along, got nothing of all this: his next frame is his own message.
            await assert_still_talking(bob, "b", "bob")


async def test_a_join_while_the_hub_is_down_is_hub_unavailable_and_leaves_no_trace(
    tmp_path: Path,
) -> None:
    """A hub started by hand stays down until its operator starts it again: meanwhile a join
    on any worker is refused, and the client is not in the room once the hub is back."""
    async with (
        standalone_hub(tmp_path) as hub,
        hypercorn_server(workers=4, env={**hub.env, **NO_RATE_LIMIT}) as server,
        AsyncExitStack() as stack,
    ):
        clients = await clients_on_every_worker(server, stack, at_least=4)
        worker_pids = workers_of(clients)
        await hub.kill()
        with trio.fail_after(HUB_LOSS_NOTICED_SECONDS):
            await server.wait_for_output_from("event=hub_down", worker_pids)
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            for client in clients:
                await client.send_json({"type": "join", "room": "side"})
                assert_error(await next_error(client), "hub_unavailable", "side")

        await hub.start()
        with trio.fail_after(CHAT_BACK_SECONDS):
            # Started again on its store: the workers went on where they were, and their
            # clients, having missed nothing, are told nothing (the notices are checked below).
            await server.wait_for_output_from("event=hub_up", worker_pids)
        with trio.fail_after(PHASE_TIMEOUT_SECONDS):
            for client in clients:
                await client.send("someone", "hi", room="side")
                assert_error(await next_error(client), "not_joined", "side")
            # Joined now, one after the other: each is counted once, the failed join not at all.
            for count, client in enumerate(clients, start=1):
                answer = await client.join("side")
                assert answer[-1]["online"] == count
            await assert_still_talking(clients[0], "side", "someone")
