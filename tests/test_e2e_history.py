"""History, resume and presence across the workers of a real ``hypercorn -k trio -w 4``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest

from servers import DEFAULT_ROOM, chat_client, hypercorn_server, presence_until
from wsclient import WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]


async def on_another_worker(
    stack: AsyncExitStack, server: Any, than: WebSocketClient, path: str = "/chat"
) -> WebSocketClient:
    """A client on a different worker than ``than`` (connections land where they land)."""
    for _ in range(50):
        client = await stack.enter_async_context(chat_client(server, path))
        if client.welcome["worker"] != than.welcome["worker"]:
            return client
    raise AssertionError("every connection landed on the same worker")


async def test_a_client_that_reconnects_gets_exactly_what_it_missed() -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        async with chat_client(server) as leaver:
            await leaver.send("leaver", "before")
            last_seen = (await leaver.receive_type("message"))["id"]
            others = [await on_another_worker(stack, server, leaver) for _ in range(3)]
        # The leaver is gone; clients on other workers talk.
        for index, other in enumerate(others):
            for n in range(3):
                await other.send(f"other-{index}", f"missed {index}.{n}")
        everyone_saw = [frame["id"] for frame in [await others[0].receive_type("message")
                                                   for _ in range(9)]]  # fmt: skip
        async with chat_client(server, f"/chat?since={last_seen}") as back:
            history = back.history
            assert (history["room"], history["resumed"]) == (DEFAULT_ROOM, True)
            assert {m["room"] for m in history["messages"]} == {DEFAULT_ROOM}
            assert [m["id"] for m in history["messages"]] == everyone_saw
            assert [m["id"] for m in history["messages"]] == list(
                range(last_seen + 1, last_seen + 10)
            )
            # And live messages carry on after them, without a gap.
            await others[1].send("other-1", "live")
            live = await back.receive_type("message")
            assert (live["id"], live["room"], live["message"]) == (
                last_seen + 10,
                DEFAULT_ROOM,
                "live",
            )


async def test_presence_counts_every_client_on_every_worker_up_and_down() -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(chat_client(server, "/chat?name=watcher"))
        async with AsyncExitStack() as crowd:
            clients = [
                await crowd.enter_async_context(chat_client(server, f"/chat?name=user{n % 5}"))
                for n in range(20)
            ]
            assert len({client.welcome["worker"] for client in [watcher, *clients]}) > 1
            frame = await presence_until(watcher, online=21, room=DEFAULT_ROOM)
            assert frame["users"] == ["user0", "user1", "user2", "user3", "user4", "watcher"]
        frame = await presence_until(watcher, online=1, room=DEFAULT_ROOM)
        assert frame["users"] == ["watcher"]
