"""End to end: ``hypercorn -k trio -w 4 trio_chat:app`` in a subprocess, real WebSocket clients.

Localhost only, a free port per server, every wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from trio_chat.supervision import EXIT_GRACE_SECONDS

from servers import (
    CHAT_BACK_SECONDS,
    DEFAULT_ROOM,
    HUB_LOSS_NOTICED_SECONDS,
    ROOT,
    SHIPPED_CONFIG,
    STARTUP_TIMEOUT_SECONDS,
    HypercornServer,
    chat_client,
    clients_on_every_worker,
    free_port,
    healthz_of_every_worker,
    hypercorn_command,
    hypercorn_server,
    one_message_from_each_worker_reaches_everyone,
    standalone_hub,
    wait_gone,
    workers_of,
)
from wsclient import HandshakeRefused, WebSocketClient, open_websocket

pytestmark = [pytest.mark.e2e, pytest.mark.process]

GRACEFUL_TIMEOUT_SECONDS = SHIPPED_CONFIG.graceful_timeout
#: The promise: a server is gone this long after SIGTERM or Ctrl+C, whatever its clients do.
STOP_DEADLINE_SECONDS = GRACEFUL_TIMEOUT_SECONDS + EXIT_GRACE_SECONDS
#: For tests that send faster than a person could (the default is 5 messages a second).
NO_RATE_LIMIT = {"TRIO_CHAT_RATE": "0"}

ROOM = DEFAULT_ROOM
MESSAGE_KEYS = ["type", "id", "ts", "room", "sender", "message"]

CLIENTS = 40
SENDERS = 8
MESSAGES_PER_SENDER = 10


async def test_every_client_on_every_worker_gets_every_message_in_one_order() -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        clients: list[WebSocketClient] = []
        for _ in range(CLIENTS):
            clients.append(await stack.enter_async_context(chat_client(server)))
        welcomes = [client.welcome for client in clients]
        assert all(w["type"] == "welcome" and w["message"] == "You are connected" for w in welcomes)
        assert {welcome["max_rooms"] for welcome in welcomes} == {32}
        # Without ?room=, everyone is in the default room.
        assert {(c.history["room"], c.opening[-1]["room"]) for c in clients} == {(ROOM, ROOM)}
        workers = {welcome["worker"] for welcome in welcomes}
        assert len(workers) > 1, "all clients landed on one worker"

        async def send_all(index: int) -> None:
            for n in range(MESSAGES_PER_SENDER):
                await clients[index].send(f"sender-{index}", f"message {n}")

        received: list[list[dict[str, Any]]] = [[] for _ in clients]

        async def receive_all(index: int) -> None:
            while len(received[index]) < SENDERS * MESSAGES_PER_SENDER:
                received[index].append(await clients[index].receive_type("message"))

        async with trio.open_nursery() as nursery:
            for index in range(len(clients)):
                nursery.start_soon(receive_all, index)
            for index in range(SENDERS):
                nursery.start_soon(send_all, index)

        first = received[0]
        assert all(frames == first for frames in received), "clients disagree on the order"
        ids = [frame["id"] for frame in first]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        for index in range(SENDERS):
            texts = [f["message"] for f in first if f["sender"] == f"sender-{index}"]
            assert texts == [f"message {n}" for n in range(MESSAGES_PER_SENDER)]
        assert all(isinstance(frame["ts"], int) for frame in first)
        assert all(list(frame) == MESSAGE_KEYS and frame["room"] == ROOM for frame in first)


async def test_healthz_is_answered_by_each_worker_and_counts_its_connections() -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(chat_client(server)) for _ in range(12)]
        per_worker: dict[int, int] = {}
        for client in clients:
            worker = client.welcome["worker"]
            per_worker[worker] = per_worker.get(worker, 0) + 1
        seen: dict[int, int] = {}
        async with httpx.AsyncClient(base_url=server.url) as http:
            # Each request is a new connection, so it can land on any worker; ask until every
            # worker that holds clients has answered (bounded by the deadline).
            with trio.fail_after(30):
                while not set(per_worker) <= set(seen):
                    response = await http.get("/healthz", headers={"connection": "close"})
                    assert response.status_code == 200
                    health = response.json()
                    assert health["hub"] is True
                    seen[health["pid"]] = health["connections"]
        assert {pid: seen[pid] for pid in per_worker} == per_worker


async def test_sigterm_closes_every_client_with_1001_and_leaves_no_hub() -> None:
    await _stop_and_check_everyone_was_told(HypercornServer.terminate)


async def test_ctrl_c_closes_every_client_with_1001_and_leaves_no_hub() -> None:
    await _stop_and_check_everyone_was_told(HypercornServer.interrupt)


async def _stop_and_check_everyone_was_told(stop: Callable[[HypercornServer], None]) -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack, at_least=16)
        [hub_pid] = server.hub_pids
        children = server.child_pids
        assert workers_of(clients) <= set(children)
        stop(server)
        with trio.fail_after(STOP_DEADLINE_SECONDS):
            assert await server.process.wait() == 0
        # Every client was told goodbye (1001, going away), none cut off (1006).
        assert [await client.wait_closed() for client in clients] == [1001] * len(clients)
        # The hub served the workers to the end: no worker had to start another one.
        assert server.hub_pids == [hub_pid]
        for pid in [hub_pid, *children]:
            await wait_gone(pid, within=5)


async def test_a_client_that_stopped_reading_cannot_hold_up_shutdown() -> None:
    async with (
        hypercorn_server(workers=1, env=NO_RATE_LIMIT) as server,
        chat_client(server, receive_buffer=16_384) as stalled,
        chat_client(server) as talker,
    ):
        for _ in range(1500):  # Enough to fill the kernel buffers towards the stalled client.
            await talker.send("talker", "x" * 4000)
            await talker.receive_type("message")
        with trio.fail_after(EXIT_GRACE_SECONDS + GRACEFUL_TIMEOUT_SECONDS + 3):
            await server.stop()
        del stalled


async def test_two_servers_on_one_machine_each_get_their_own_hub() -> None:
    async with hypercorn_server(workers=2) as one, hypercorn_server(workers=2) as two:
        assert len(one.hub_pids) == 1
        assert len(two.hub_pids) == 1
        assert one.hub_pids != two.hub_pids
        async with chat_client(one) as alice, chat_client(two) as bob:
            await alice.send("alice", "only for server one")
            frame = await alice.receive_type("message")
            assert frame["message"] == "only for server one"
            await bob.send("bob", "only for server two")
            frame = await bob.receive_type("message")
            assert frame["message"] == "only for server two"
            assert frame["id"] == 1  # Server two's hub never saw server one's message.
            assert frame["room"] == ROOM


async def test_bad_frames_get_error_frames_and_a_huge_one_closes_with_1009() -> None:
    async with (
        hypercorn_server(workers=1) as server,
        chat_client(server) as client,
        chat_client(server) as other,
    ):
        await client.send_text("not json")
        error = await client.receive_type("error")
        assert error["type"] == "error"
        assert error["code"] == "invalid_json"
        assert "room" not in error  # About no room.
        await client.send("ann", "still here")
        assert (await client.receive_type("message"))["message"] == "still here"
        assert (await other.receive_type("message"))["message"] == "still here"
        await client.send("a", "x" * 70_000)  # Over websocket_max_message_size (64 KiB).
        assert await client.wait_closed() == 1009
        # The others carry on.
        await other.send("bob", "after")
        assert (await other.receive_type("message"))["message"] == "after"


async def test_chat_carries_on_across_workers_after_the_hub_is_killed() -> None:
    # A hub that keeps messages in memory only: its replacement starts a new run of ids and
    # the clients are told (with the store, nothing is missed: test_e2e_durable).
    memory_store = {"TRIO_CHAT_STORE": "memory"}
    async with hypercorn_server(workers=4, env=memory_store) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack)
        by_worker = {client.welcome["worker"]: client for client in clients}
        worker_pids = set(by_worker)
        old_epoch = clients[0].history["epoch"]
        await clients[0].send("early", "before the hub died")
        for client in clients:
            assert (await client.receive_type("message"))["id"] == 1
        [first_hub] = server.hub_pids

        os.kill(first_hub, signal.SIGKILL)
        killed_at = trio.current_time()
        with trio.fail_after(HUB_LOSS_NOTICED_SECONDS):
            await server.wait_for_output_from("event=hub_down", worker_pids)
        with trio.fail_at(killed_at + CHAT_BACK_SECONDS):
            await server.wait_for_output_from("event=hub_up", worker_pids)
            # Every client is told, once its worker is back on a hub, that it may have missed
            # messages, and which run of ids follows; none is disconnected.
            notices = [await client.receive_type("notice") for client in clients]
            assert {notice["code"] for notice in notices} == {"messages_missed"}
            assert not [notice for notice in notices if "room" in notice]  # For every room.
            [new_epoch] = {notice["epoch"] for notice in notices}
            senders = await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        assert new_epoch != old_epoch
        # The new hub gave ids above those the workers had seen.
        assert sorted(frame["id"] for frame in senders) == list(range(2, 2 + len(senders)))

        # Exactly one worker started the new hub, and the old one is gone.
        assert len(server.hub_pids) == 2
        assert psutil.pid_exists(server.hub_pids[1])
        await wait_gone(first_hub)
        answers = await healthz_of_every_worker(server, worker_pids, status=200)
        assert all(answer["hub"] is True for answer in answers.values())
        # Every worker joined the new hub with all its clients; and a resume from the old run
        # is refused, with the whole new history, rather than answered with a silent gap.
        async with chat_client(server, f"/chat?since={old_epoch}:1") as late:
            assert late.opening[-1]["online"] == len(clients) + 1
            assert [(f["code"], f["room"]) for f in late.opening if f["type"] == "error"] == [
                ("invalid_resume", ROOM)
            ]
            assert (late.history["room"], late.history["epoch"]) == (ROOM, new_epoch)
            assert late.history["resumed"] is False
            assert late.history["messages"] == senders


async def test_workers_use_a_hub_started_by_hand(tmp_path: Path) -> None:
    async with (
        standalone_hub(tmp_path) as hub,
        hypercorn_server(workers=2, env=hub.env) as server,
        AsyncExitStack() as stack,
    ):
        assert server.hub_pids == []  # No worker started a hub of its own.
        clients = [await stack.enter_async_context(chat_client(server)) for _ in range(2)]
        while len({client.welcome["worker"] for client in clients}) < 2:
            assert len(clients) < 50, "every connection landed on one worker"
            clients.append(await stack.enter_async_context(chat_client(server)))
        await clients[0].send("ann", "through the standalone hub")
        for client in clients:
            assert (await client.receive_type("message"))["message"] == "through the standalone hub"


async def test_a_worker_that_cannot_reach_its_hub_stops_the_server(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    secret.chmod(0o600)
    env = {
        **os.environ,
        "TRIO_CHAT_HUB": f"unix:{tmp_path / 'nobody.sock'}",
        "TRIO_CHAT_HUB_SECRET_FILE": str(secret),
    }
    with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
        result = await trio.run_process(
            hypercorn_command(free_port(), workers=2),
            cwd=ROOT,
            env=env,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            # The master's exit status is Hypercorn's choice, not ours: it reports whichever
            # worker it joins last, which may be one it terminated before that worker had even
            # installed its signal handler (-SIGTERM), or one that closed cleanly (0).
            check=False,
        )
    # The server stopped by itself rather than serve deaf workers, and its log says what went
    # wrong and what to check.
    log = result.stdout.decode()
    assert "could not join its hub" in log
    assert "TRIO_CHAT_HUB_SECRET_FILE" in log


async def test_a_client_that_stops_reading_is_dropped_with_1013_and_others_lose_nothing() -> None:
    # ~12 MB: more than the kernel buffers between the server and the stalled client, plus the
    # 256 frames of its subscriber buffer (the default).
    count, text = 3000, "x" * 4000
    async with (
        hypercorn_server(workers=1, env=NO_RATE_LIMIT) as server,
        chat_client(server, receive_buffer=16_384) as stalled,
        chat_client(server) as talker,
    ):
        received = 0

        async def read_everything() -> None:
            nonlocal received
            while received < count:
                await talker.receive_type("message")
                received += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_everything)
            for _ in range(count):
                await talker.send("talker", text)
        assert received == count
        # The stalled client was dropped while it read nothing; once it reads, it finds the
        # close frame after what had already been sent to it.
        with trio.fail_after(10):
            await server.wait_for_output("event=evicted")
        assert "reason=too_slow code=1013" in next(
            line for line in server.output if "evicted" in line
        )
        assert await stalled.wait_closed() == 1013


async def test_a_cross_site_handshake_is_refused_with_403() -> None:
    async with hypercorn_server(workers=1) as server:
        with pytest.raises(HandshakeRefused) as refused:
            async with chat_client(server, headers=[("origin", "http://evil.example")]):
                pass
        assert refused.value.status == 403
        origin = f"http://127.0.0.1:{server.port}"  # The page's own origin is welcome.
        async with chat_client(server, headers=[("origin", origin)]) as client:
            assert client.welcome["type"] == "welcome"


#: The promise (docs/architecture.md): every client is pinged every 15 s, one silent for 45 s is
#: closed.
SHIPPED_PING_INTERVAL_SECONDS = 15.0
SHIPPED_READ_TIMEOUT_SECONDS = 45
#: A chat message is at most 4 KiB; a frame may be 64 KiB, the rest headroom for escapes.
SHIPPED_MAX_FRAME_BYTES = 64 * 1024
SHIPPED_GRACEFUL_TIMEOUT_SECONDS = 5.0


def test_the_shipped_hypercorn_toml_pings_times_out_silent_peers_and_bounds_frames() -> None:
    config = SHIPPED_CONFIG  # Read by Hypercorn itself, from the file the e2e servers run with.
    assert config.websocket_ping_interval == SHIPPED_PING_INTERVAL_SECONDS
    assert config.read_timeout == SHIPPED_READ_TIMEOUT_SECONDS
    # A live peer answers several pings within the timeout, so only a dead one is cut off.
    assert config.read_timeout >= 2 * config.websocket_ping_interval
    assert config.websocket_max_message_size == SHIPPED_MAX_FRAME_BYTES
    assert config.graceful_timeout == SHIPPED_GRACEFUL_TIMEOUT_SECONDS


async def test_a_peer_that_vanishes_is_detected_and_released() -> None:
    # The shipped settings, with time divided by the ping interval: a ping every second, and
    # a connection closed after as many seconds of silence as the shipped timeout has ping
    # intervals (3 s). (The command line takes whole seconds.)
    shipped_ping = SHIPPED_CONFIG.websocket_ping_interval
    shipped_timeout = SHIPPED_CONFIG.read_timeout
    assert shipped_ping is not None and shipped_timeout is not None
    ping = 1
    timeout = math.ceil(shipped_timeout / shipped_ping)
    args = ["--websocket-ping-interval", str(ping), "--read-timeout", str(timeout)]
    async with (
        hypercorn_server(workers=1, args=args) as server,
        chat_client(server) as vanished,
        chat_client(server) as alive,
    ):
        # ``vanished`` reads nothing from now on, so it answers no ping, like a peer whose
        # network is gone; ``alive`` keeps reading, which answers the pings, and sends nothing
        # else until it has been silent longer than the timeout.
        received: list[str] = []
        got_message = trio.Event()

        async def keep_reading() -> None:
            while True:
                frame = await alive.receive()
                if frame["type"] == "message":
                    received.append(frame["message"])
                    got_message.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_reading)
            with trio.fail_after(timeout + 5):
                await server.wait_for_output("event=disconnect conn=1")
            # Pings come at once and then every ``ping``: this many span more than ``timeout``.
            with trio.fail_after(2 * timeout + 5):
                await alive.wait_pings_answered(timeout // ping + 2)
            await alive.send("alive", "still here")
            with trio.fail_after(5):
                await got_message.wait()
            nursery.cancel_scope.cancel()
        assert received == ["still here"]
        assert not any("disconnect conn=2" in line for line in server.output)
        [health] = (await healthz_of_every_worker(server, set(workers_of([alive])), 200)).values()
        assert health["connections"] == 1  # The vanished peer's session was released.
        del vanished


async def test_a_batch_client_gets_every_message_and_plain_clients_one_per_frame() -> None:
    count = 300
    async with (
        hypercorn_server(workers=2, env=NO_RATE_LIMIT) as server,
        open_websocket(server.port, subprotocols=["trio-chat.batch"]) as batched,
        chat_client(server) as plain,
    ):
        assert batched.subprotocol == "trio-chat.batch"
        for n in range(count):
            await plain.send("plain", str(n))
        received: list[str] = []
        with trio.fail_after(10):
            while len(received) < count:
                for line in str(await batched.receive_raw()).split("\n"):
                    frame = json.loads(line)
                    if frame["type"] == "message":
                        assert frame["room"] == ROOM
                        received.append(frame["message"])
            plain_received = [
                (await plain.receive_type("message"))["message"] for _ in range(count)
            ]
        assert received == plain_received == [str(n) for n in range(count)]
