"""History on join, resume without gaps, and presence, through the app with an in-process hub.

The interleaving tests hold a joining session at a chosen point (just before or just after its
snapshot is taken) with an event, publish meanwhile, and then check that the client sees every
message exactly once, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_chat.hub.core import HubCore
from trio_chat.hub_link.local import LocalHub
from trio_chat.protocol import ChatMessage, encode_chat_body
from trio_chat.session import BATCH_SUBPROTOCOL
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import (
    GatedHub,
    WebSocketClient,
    chat_app,
    connect_websocket,
    open_chat,
    running_worker,
)


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["message"] for frame in frames]


async def say(client: WebSocketClient, *messages: str, sender: str = "ann") -> None:
    for message in messages:
        await client.send_json({"sender": sender, "message": message})


async def receive_messages(client: WebSocketClient, count: int) -> list[dict[str, Any]]:
    return [await client.receive_json() for _ in range(count)]


async def assert_nothing_more(client: WebSocketClient) -> None:
    await trio.testing.wait_all_tasks_blocked()
    assert client.received_nowait() == []


async def test_a_newcomer_gets_the_history_oldest_first_then_live_messages() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state:
        async with open_chat(app, state) as ann:
            assert ann.history["messages"] == []
            await say(ann, "one", "two")
            await receive_messages(ann, 2)
        async with open_chat(app, state) as bob:
            assert bob.history["resumed"] is False
            assert texts(bob.history["messages"]) == ["one", "two"]
            assert [m["id"] for m in bob.history["messages"]] == [1, 2]
            await say(bob, "three", sender="bob")
            assert texts(await receive_messages(bob, 1)) == ["three"]


async def test_history_is_bounded_to_the_last_messages() -> None:
    hub = LocalHub(history_size=3)
    app = chat_app(hub)
    async with running_worker(app) as state:
        async with open_chat(app, state) as ann:
            await say(ann, *[str(n) for n in range(1, 6)])
            await receive_messages(ann, 5)
        async with open_chat(app, state) as bob:
            assert texts(bob.history["messages"]) == ["3", "4", "5"]


@pytest.mark.parametrize("subprotocols", [(), (BATCH_SUBPROTOCOL,)], ids=["plain", "batch"])
@pytest.mark.parametrize("hold", ["before_snapshot", "after_snapshot"])
async def test_joining_during_a_burst_shows_no_gap_and_no_duplicate(
    hold: str, subprotocols: tuple[str, ...]
) -> None:
    hub = GatedHub()
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state) as ann:
        await say(ann, "m1")
        await receive_messages(ann, 1)
        gate = trio.Event()
        setattr(hub, hold, gate)
        async with connect_websocket(app, state, subprotocols=subprotocols) as bob:
            assert (await bob.receive())["type"] == "websocket.accept"
            await trio.testing.wait_all_tasks_blocked()  # Bob's session waits at the gate.
            await say(ann, "m2", "m3")  # Published while Bob joins.
            await receive_messages(ann, 2)
            setattr(hub, hold, None)
            gate.set()
            await bob.read_opening()
            history = texts(bob.history["messages"])
            live = texts(await receive_messages(bob, 3 - len(history)))
            await say(ann, "m4")
            live += texts(await receive_messages(bob, 1))
            assert history + live == ["m1", "m2", "m3", "m4"]
            # Held before the snapshot, it covers the burst; held after, the burst comes live.
            assert history == (["m1", "m2", "m3"] if hold == "before_snapshot" else ["m1"])
            await assert_nothing_more(bob)


async def test_a_client_joining_as_the_hub_is_replaced_gets_the_new_hubs_frames() -> None:
    """A new hub starts its ids and presence versions again: a session still catching up on
    its snapshot must not take them for frames the snapshot covers."""
    hub = GatedHub()
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state) as ann:
        await say(ann, "m1", "m2", "m3")
        await receive_messages(ann, 3)
        hub.after_snapshot = gate = trio.Event()
        async with connect_websocket(app, state) as bob:
            assert (await bob.receive())["type"] == "websocket.accept"
            await trio.testing.wait_all_tasks_blocked()  # Bob's snapshot is taken: id 3.
            replacement = HubCore(history_size=10, mailbox_size=100)
            mailbox = replacement.join(
                "this worker", {(1, "general"): "ann", (2, "general"): "bob"}
            )
            replacement.publish([encode_chat_body("general", ChatMessage("ann", "after"))])
            worker: Worker = state[STATE_KEY]
            worker.listener.messages_missed(replacement.current_epoch())
            worker.listener.deliver(replacement.fetch_nowait(mailbox, 100) or [])
            gate.set()
            await bob.read_opening()
            assert texts(bob.history["messages"]) == ["m1", "m2", "m3"]
            notice = await bob.receive_json()
            assert (notice["code"], notice["epoch"]) == (
                "messages_missed",
                replacement.current_epoch(),
            )
            presence = await bob.receive_json(presence=True)
            assert (presence["version"], presence["room"], presence["users"]) == (
                1,
                "general",
                ["ann", "bob"],
            )
            after = await bob.receive_json()
            assert (after["id"], after["room"], after["message"]) == (1, "general", "after")


async def published(hub: LocalHub, count: int, room: str = "general") -> None:
    for n in range(1, count + 1):
        await hub.publish(encode_chat_body(room, ChatMessage("ann", str(n))))


@pytest.mark.parametrize(
    ("since", "expected", "partial"),
    [
        ("5", [], False),  # Nothing missed.
        ("3", ["4", "5"], False),  # Some missed.
        ("2", ["3", "4", "5"], False),  # Exactly the oldest kept.
        ("1", ["3", "4", "5"], True),  # Too old: message 2 is gone.
        ("0", ["3", "4", "5"], True),
    ],
)
async def test_resume_replays_exactly_what_was_missed(
    since: str, expected: list[str], partial: bool
) -> None:
    hub = LocalHub(history_size=3)
    await published(hub, 5)
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state, b"since=" + since.encode()) as c:
        assert (c.history["room"], c.history["resumed"]) == ("general", True)
        assert texts(c.history["messages"]) == expected
        notices = [f for f in c.opening if f["type"] == "notice"]
        if partial:
            assert [(n["code"], n["room"], n["first_available"]) for n in notices] == [
                ("resume_partial", "general", 3)
            ]
        else:
            assert notices == []
        assert not [f for f in c.opening if f["type"] == "error"]


@pytest.mark.parametrize("since", ["6", "999999", "abc", "-1", "1e3", "", "1.5", "x" * 100])
async def test_resume_from_a_future_or_garbage_id_is_an_error_then_fresh_history(
    since: str,
) -> None:
    hub = LocalHub(history_size=3)
    await published(hub, 5)
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state, b"since=" + since.encode()) as c:
        errors = [(f["code"], f["room"]) for f in c.opening if f["type"] == "error"]
        assert errors == ([] if since == "" else [("invalid_resume", "general")])
        assert (c.history["room"], c.history["resumed"]) == ("general", False)
        assert texts(c.history["messages"]) == ["3", "4", "5"]
        await say(c, "still connected")
        assert texts(await receive_messages(c, 1)) == ["still connected"]


async def presence(
    client: WebSocketClient, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The next presence frame that satisfies ``until``; other frames are passed over."""
    while True:
        frame: dict[str, Any] = await client.receive_json(presence=True)
        if frame["type"] == "presence" and until(frame):
            return frame


async def test_presence_counts_and_names_across_workers() -> None:
    hub = LocalHub()
    app_one, app_two = chat_app(hub), chat_app(hub)
    async with (
        running_worker(app_one) as one,
        running_worker(app_two) as two,
        open_chat(app_one, one, b"name=ann") as ann,
    ):
        opening = ann.opening[-1]
        assert (opening["online"], opening["users"]) == (1, ["ann"])
        async with open_chat(app_two, two, b"name=bob") as bob, open_chat(app_two, two):
            assert (bob.opening[-1]["online"], bob.opening[-1]["users"]) == (2, ["ann", "bob"])
            frame = await presence(ann, lambda f: f["online"] == 3)
            assert frame["users"] == ["ann", "bob"]  # The third client gave no name.
        frame = await presence(ann, lambda f: f["online"] == 1)
        assert frame["users"] == ["ann"]


async def test_a_join_a_rename_and_a_leave_are_announced() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state, b"name=ann") as ann:
        async with open_chat(app, state, b"name=bob") as bob:
            joined = await presence(ann, lambda f: bool(f["joined"]))
            assert joined["joined"] == ["bob"]
            await say(bob, "hello", sender="robert")
            renamed = await presence(ann, lambda f: bool(f["left"]))
            assert (renamed["joined"], renamed["left"]) == (["robert"], ["bob"])
            assert renamed["users"] == ["ann", "robert"]
        left = await presence(ann, lambda f: bool(f["left"]))
        assert (left["left"], left["online"], left["users"]) == (["robert"], 1, ["ann"])


async def test_a_second_tab_under_the_same_name_counts_once_in_users() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with (
        running_worker(app) as state,
        open_chat(app, state, b"name=ann") as first,
        open_chat(app, state, b"name=ann") as second,
    ):
        assert (second.opening[-1]["online"], second.opening[-1]["users"]) == (2, ["ann"])
        del first


async def test_an_invalid_name_is_an_error_and_the_client_stays_anonymous() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state, b"name=" + b"n" * 65) as c:
        assert [f["code"] for f in c.opening if f["type"] == "error"] == ["invalid_name"]
        assert (c.opening[-1]["online"], c.opening[-1]["users"]) == (1, [])


async def test_a_worker_shutting_down_with_clients_connected_takes_them_out_of_presence() -> None:
    hub = LocalHub()
    app_one, app_two = chat_app(hub), chat_app(hub)
    async with running_worker(app_one) as one, open_chat(app_one, one, b"name=ann") as ann:
        async with running_worker(app_two) as two:
            for name in (b"bob", b"cat", b"dan"):
                async with open_chat(app_two, two, b"name=" + name):
                    pass
            async with open_chat(app_two, two, b"name=eve"):
                await presence(ann, lambda f: f["online"] == 2)
                # Worker two shuts down with eve still connected.
        frame = await presence(ann, lambda f: "eve" in f["left"])
        assert (frame["online"], frame["users"]) == (1, ["ann"])


async def test_a_newcomer_is_in_the_first_presence_it_gets() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state, open_chat(app, state, b"name=ann") as ann:
        first = ann.opening[-1]
        assert (first["online"], first["users"]) == (1, ["ann"])


async def test_a_rename_frame_updates_presence_without_a_message() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with (
        running_worker(app) as state,
        open_chat(app, state, b"name=ann") as ann,
        open_chat(app, state, b"name=bob") as bob,
    ):
        await bob.send_json({"type": "rename", "name": "robert"})
        frame = await presence(ann, lambda f: bool(f["left"]))
        assert (frame["joined"], frame["left"], frame["users"]) == (
            ["robert"],
            ["bob"],
            ["ann", "robert"],
        )
        await assert_nothing_more(bob)


async def test_a_resume_from_another_run_of_ids_is_refused_and_gets_fresh_history() -> None:
    hub = LocalHub(history_size=3)
    await published(hub, 5)
    app = chat_app(hub)
    async with running_worker(app) as state:
        async with open_chat(app, state) as first:
            epoch = first.history["epoch"]
        query = f"since={epoch}:4".encode()
        async with open_chat(app, state, query) as same_run:
            assert texts(same_run.history["messages"]) == ["5"]
        async with open_chat(app, state, b"since=0000ffff:4") as other_run:
            assert [f["code"] for f in other_run.opening if f["type"] == "error"] == [
                "invalid_resume"
            ]
            assert texts(other_run.history["messages"]) == ["3", "4", "5"]
