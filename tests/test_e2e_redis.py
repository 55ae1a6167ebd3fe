"""Several servers, one chat and its rooms: two ``hypercorn -k trio -w 2`` servers, one Redis.

As behind a load balancer: each server is its own Hypercorn master with its own workers, on its
own port; the only thing they share is ``TRIO_CHAT_HUB=redis://...``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from servers import (
    HypercornServer,
    RedisServer,
    chat_client,
    hypercorn_server,
    presence_until,
    redis_server,
)
from wsclient import WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]

SERVER_WORKERS = 2
RECOVERY_TIMEOUT_SECONDS = 20.0


@asynccontextmanager
async def two_servers(redis: RedisServer) -> AsyncIterator[list[HypercornServer]]:
    env = {"TRIO_CHAT_HUB": redis.url, "TRIO_CHAT_RATE": "0"}
    async with (
        hypercorn_server(workers=SERVER_WORKERS, env=env) as first,
        hypercorn_server(workers=SERVER_WORKERS, env=env) as second,
    ):
        assert first.hub_pids == second.hub_pids == []  # Redis is the hub: none started.
        yield [first, second]


async def clients_on_every_worker(
    stack: AsyncExitStack, server: HypercornServer
) -> list[WebSocketClient]:
    """Clients of ``server`` until every one of its workers has at least one."""
    clients: list[WebSocketClient] = []
    while len({client.welcome["worker"] for client in clients}) < server.workers:
        assert len(clients) < 50, "every connection landed on one worker"
        clients.append(await stack.enter_async_context(chat_client(server)))
    return clients


async def test_clients_of_two_servers_share_one_chat_in_one_order(tmp_path: Path) -> None:
    async with (
        redis_server(tmp_path) as redis,
        two_servers(redis) as servers,
        AsyncExitStack() as stack,
    ):
        clients = [c for s in servers for c in await clients_on_every_worker(stack, s)]
        # Presence counts the clients of both servers.
        for client in clients:
            await presence_until(client, len(clients))

        per_client = 5
        async with trio.open_nursery() as nursery:
            for index, client in enumerate(clients):
                nursery.start_soon(send_many, client, f"c{index}", per_client)
        total = per_client * len(clients)
        seen = []
        for client in clients:
            seen.append([await client.receive_type("message") for _ in range(total)])
        orders = [[(m["id"], m["sender"], m["message"]) for m in frames] for frames in seen]
        assert all(order == orders[0] for order in orders)  # One order, on every worker.
        ids = [entry[0] for entry in orders[0]]
        assert ids == list(range(ids[0], ids[0] + total))


async def send_many(client: WebSocketClient, sender: str, count: int) -> None:
    for n in range(count):
        await client.send(sender, f"{sender} {n}")


async def test_a_client_moving_to_the_other_server_resumes_without_a_gap(tmp_path: Path) -> None:
    async with (
        redis_server(tmp_path) as redis,
        two_servers(redis) as (first, second),
        chat_client(second) as stayer,
    ):
        async with chat_client(first) as mover:
            await mover.send("mover", "on the first server")
            seen = await mover.receive_type("message")
            epoch = mover.history["epoch"]
        assert await stayer.receive_type("message") == seen  # One chat across the servers.
        for n in range(3):  # Said while the mover was away.
            await stayer.send("stayer", f"missed {n}")
        missed = [await stayer.receive_type("message") for _ in range(3)]
        async with chat_client(second, f"/chat?since={epoch}:{seen['id']}") as moved:
            assert moved.history["resumed"] is True
            assert moved.history["messages"] == missed
            await stayer.send("stayer", "live")
            live = await moved.receive_type("message")
            assert (live["id"], live["message"]) == (missed[-1]["id"] + 1, "live")


async def send_frame(client: WebSocketClient, **frame: str) -> None:
    await client.send_text(json.dumps(frame))


async def receive_of_room(client: WebSocketClient, kind: str, room: str) -> dict[str, Any]:
    """The next frame of type ``kind`` about ``room``, skipping others."""
    while (frame := await client.receive_type(kind)).get("room") != room:
        pass
    return frame


async def test_rooms_are_shared_by_the_servers_and_each_client_gets_only_its_own(
    tmp_path: Path,
) -> None:
    async with (
        redis_server(tmp_path) as redis,
        two_servers(redis) as (first, second),
        chat_client(first, "/chat?room=red&name=rae") as rae,
        chat_client(second, "/chat?room=red&name=ron") as ron,
        chat_client(second, "/chat?room=blue&name=bo") as bo,
        httpx.AsyncClient() as http,
    ):
        assert (rae.history["room"], bo.history["room"]) == ("red", "blue")
        # Presence is per room, across the servers.
        red = await presence_until(ron, 2)
        assert (red["room"], red["users"]) == ("red", ["rae", "ron"])

        await send_frame(bo, type="message", room="blue", sender="bo", message="blue 0")
        blue_0 = await bo.receive_type("message")
        await send_frame(rae, type="message", room="red", sender="rae", message="red 0")
        red_0 = await rae.receive_type("message")
        assert await ron.receive_type("message") == red_0  # One chat across the servers.
        assert red_0["room"] == "red" and red_0["id"] > blue_0["id"]  # One sequence of ids.
        await send_frame(bo, type="message", room="blue", sender="bo", message="blue 1")
        blue_1 = await bo.receive_type("message")
        assert blue_1["message"] == "blue 1"  # Not red's message, though it came first.

        # A client of the other server joins blue: its history, its presence.
        await send_frame(rae, type="join", room="blue")
        history = await receive_of_room(rae, "history", "blue")
        assert history["messages"] == [blue_0, blue_1]
        presence = await receive_of_room(rae, "presence", "blue")
        assert (presence["online"], presence["users"]) == (2, ["bo", "rae"])

        # Leaving, then resuming in the room after the last id seen there.
        await send_frame(rae, type="leave", room="blue")
        assert await receive_of_room(rae, "left", "blue") == {"type": "left", "room": "blue"}
        # The room's other member sees it leave (so it has reached Redis).
        while (presence := await receive_of_room(bo, "presence", "blue"))["online"] != 1:
            pass
        assert presence["users"] == ["bo"]
        await send_frame(bo, type="message", room="blue", sender="bo", message="blue 2")
        blue_2 = await bo.receive_type("message")
        since = f"{history['epoch']}:{blue_1['id']}"
        await send_frame(rae, type="join", room="blue", since=since)
        resumed = await receive_of_room(rae, "history", "blue")
        assert resumed["resumed"] is True and resumed["messages"] == [blue_2]

        # Every presence change of rae's has reached Redis once its message has.
        await send_frame(rae, type="message", room="blue", sender="rae", message="back")
        assert (await bo.receive_type("message"))["message"] == "back"
        await send_frame(ron, type="rooms")
        listing = await ron.receive_type("rooms")
        assert listing["rooms"] == [{"room": "blue", "online": 2}, {"room": "red", "online": 2}]
        for server in (first, second):
            response = await http.get(f"{server.url}/rooms")
            assert response.json() == {"rooms": listing["rooms"]}


async def test_servers_keep_their_clients_while_redis_restarts(tmp_path: Path) -> None:
    async with (
        redis_server(tmp_path, durable=True) as redis,
        two_servers(redis) as servers,
        AsyncExitStack() as stack,
        httpx.AsyncClient() as http,
    ):
        clients = [await stack.enter_async_context(chat_client(s)) for s in servers]
        await clients[0].send("ann", "before")
        before = [await client.receive_type("message") for client in clients]

        await redis.kill()
        # Every worker says it has lost its hub (each answers /healthz for itself).
        for server in servers:
            await health_of_every_worker(http, server, want_up=False)
        await clients[1].send("bob", "while Redis is down")
        refused = await clients[1].receive_type("error")
        assert refused["code"] == "hub_unavailable"

        await redis.start()
        for server in servers:
            await health_of_every_worker(http, server, want_up=True)
        # The same connections carry on, with the next id: nothing was lost, nothing repeated.
        await clients[1].send("bob", "after")
        for client, earlier in zip(clients, before, strict=True):
            after = await client.receive_type("message")
            assert (after["id"], after["message"]) == (earlier["id"] + 1, "after")


async def test_a_redis_restarted_with_its_data_keeps_the_run_of_ids_and_the_history(
    tmp_path: Path,
) -> None:
    async with (
        redis_server(tmp_path, durable=True) as redis,
        hypercorn_server(
            workers=SERVER_WORKERS, env={"TRIO_CHAT_HUB": redis.url, "TRIO_CHAT_RATE": "0"}
        ) as server,
        AsyncExitStack() as stack,
        httpx.AsyncClient() as http,
    ):
        stayers = await clients_on_every_worker(stack, server)
        async with chat_client(server) as leaver:
            await leaver.send("lea", "seen by all")
            seen = await leaver.receive_type("message")
            epoch = leaver.history["epoch"]
        await stayers[0].send("sam", "missed 0")
        await stayers[0].send("sam", "missed 1")
        before = [await messages_until(client, "missed 1") for client in stayers]

        await stop(redis)  # SIGTERM: as an operator or a service manager restarts it.
        await health_of_every_worker(http, server, want_up=False)
        await redis.start()  # Same port, same folder: it loads its append-only file.
        await health_of_every_worker(http, server, want_up=True)

        # The connections carry on with the next id, and none was told it missed anything.
        await stayers[-1].send("sid", "after the restart")
        after = [await messages_until(client, "after the restart") for client in stayers]
        assert all(frames == after[0] for frames in after)
        [said] = after[0]
        assert said["id"] == before[0][-1]["id"] + 1
        # Resuming from before the restart: the same run of ids, exactly what was missed.
        async with chat_client(server, f"/chat?since={epoch}:{seen['id']}") as back:
            assert back.history["epoch"] == epoch and back.history["resumed"] is True
            assert back.history["messages"] == [*before[0][-2:], said]
            assert not [f for f in back.opening if f.get("code") == "messages_missed"]


async def messages_until(client: WebSocketClient, text: str) -> list[dict[str, Any]]:
    """The client's message frames up to the one saying ``text``; no ``messages_missed``
    notice may come meanwhile (a worker that re-joins sends one before any later frame)."""
    frames = []
    while True:
        frame = await client.receive()
        assert frame.get("code") != "messages_missed", frame
        if frame["type"] == "message":
            frames.append(frame)
            if frame["message"] == text:
                return frames


async def stop(redis: RedisServer) -> None:
    """SIGTERM, and wait until it has exited (having written its append-only file)."""
    assert redis.process is not None
    redis.process.terminate()
    with trio.fail_after(RECOVERY_TIMEOUT_SECONDS):
        await redis.process.wait()


async def health_of_every_worker(
    http: httpx.AsyncClient, server: HypercornServer, *, want_up: bool
) -> None:
    """Ask /healthz until every worker of ``server`` has answered as wanted (new connections
    land on any worker, so it takes several asks to hear from all)."""
    answered: set[int] = set()
    with trio.fail_after(RECOVERY_TIMEOUT_SECONDS):
        for attempt in itertools.count():
            response = await http.get(f"{server.url}/healthz", headers={"Connection": "close"})
            health = response.json()
            if health["hub"] is want_up:
                assert response.status_code == (200 if want_up else 503)
                answered.add(health["pid"])
                if len(answered) == server.workers:
                    return
            else:
                answered.discard(health["pid"])
                await trio.sleep(0.05 * min(attempt, 10))  # Not there yet: ask again soon.
