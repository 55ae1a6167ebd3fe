"""End to end: the SQLite store under ``hypercorn -k trio -w 4``.

A restarted server keeps the conversation and its run of ids; a hub killed mid-conversation is
replaced by one that goes on from the store, and no client misses or doubles a message; a
damaged store, or one another server holds, stops startup with a message naming it; a full
store answers senders with errors and keeps all it acknowledged; scrollback reaches a room's
first message.

Localhost only, a free port per server, every wait bounded by ``trio.fail_after``; each test
gives its servers a data directory in ``tmp_path`` and reads the store itself to check them.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_chat.hub.store import DATABASE_NAME

from file_faults import read_only
from servers import (
    CHAT_BACK_SECONDS,
    DEFAULT_ROOM,
    ROOT,
    STARTUP_TIMEOUT_SECONDS,
    OutputCollector,
    chat_client,
    clients_on_every_worker,
    free_port,
    hypercorn_command,
    hypercorn_server,
    wait_gone,
)
from wsclient import WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]

ROOM = DEFAULT_ROOM
#: Each sender sends this many messages, one after the other's answer, while the hub dies.
MESSAGES_PER_SENDER = 40
#: The hub is killed once this many messages are stored.
KILL_AFTER_STORED = 30
EXIT_TIMEOUT_SECONDS = STARTUP_TIMEOUT_SECONDS


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"TRIO_CHAT_DATA_DIR": str(data_dir), "TRIO_CHAT_RATE": "0", **extra}


def stored_messages(data_dir: Path, room: str = ROOM) -> list[tuple[int, str, str]]:
    """(id, sender, text) of the room's messages in the store, read as another program would."""
    uri = f"{(data_dir / DATABASE_NAME).as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(
            "SELECT id, sender, text FROM messages WHERE room = ? ORDER BY id", (room,)
        ).fetchall()
    db.close()
    return [(int(i), str(sender), str(text)) for i, sender, text in rows]


def as_stored(frames: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(f["id"], f["sender"], f["message"]) for f in frames if f["type"] == "message"]


async def test_a_restarted_server_keeps_the_conversation_and_resumes_without_a_gap(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with (
        hypercorn_server(workers=4, env=server_env(data_dir)) as server,
        chat_client(server) as client,
    ):
        for n in range(1, 6):
            await client.send("ann", f"before the restart {n}")
            assert (await client.receive_type("message"))["id"] == n
        epoch = client.history["epoch"]

    async with hypercorn_server(workers=4, env=server_env(data_dir)) as server:
        # A client that had seen up to 3 resumes: exactly 4 and 5, in the same run.
        async with chat_client(server, f"/chat?since={epoch}:3") as resumed:
            assert [f for f in resumed.opening if f["type"] in ("error", "notice")] == []
            history = resumed.history
            assert (history["epoch"], history["resumed"]) == (epoch, True)
            assert [m["message"] for m in history["messages"]] == [
                "before the restart 4",
                "before the restart 5",
            ]
            await resumed.send("bob", "after the restart")
            assert (await resumed.receive_type("message"))["id"] == 6
        # A new client gets the whole conversation.
        async with chat_client(server) as fresh:
            assert [m["id"] for m in fresh.history["messages"]] == [1, 2, 3, 4, 5, 6]


async def test_a_hub_killed_mid_conversation_is_replaced_and_no_client_misses_a_message(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with (
        hypercorn_server(workers=4, env=server_env(data_dir)) as server,
        AsyncExitStack() as stack,
    ):
        clients = await clients_on_every_worker(server, stack)
        senders = list({client.welcome["worker"]: client for client in clients}.values())
        listeners = [client for client in clients if client not in senders]
        epoch = clients[0].history["epoch"]
        [first_hub] = server.hub_pids
        received: dict[WebSocketClient, list[dict[str, Any]]] = {c: [] for c in clients}
        # What a client was shown is stored: once one has seen enough, the hub dies.
        enough_stored = trio.Event()
        frame_received = trio.Event()

        def note(client: WebSocketClient, frame: dict[str, Any]) -> None:
            nonlocal frame_received
            received[client].append(frame)
            if len(as_stored(received[client])) >= KILL_AFTER_STORED:
                enough_stored.set()
            frame_received.set()
            frame_received = trio.Event()

        async def send_all(sender: WebSocketClient, name: str) -> None:
            """One message at a time: the next once the last came back; again if it was
            refused (``hub_unavailable``, while the workers have no hub)."""
            for n in range(MESSAGES_PER_SENDER):
                while not await sent(sender, name, f"{name} {n}"):
                    pass  # Refused: the sender tries again, as the page does.

        async def sent(sender: WebSocketClient, name: str, text: str) -> bool:
            await sender.send(name, text)
            while True:
                frame = await sender.receive()
                note(sender, frame)
                if frame["type"] == "error":
                    assert frame["code"] == "hub_unavailable"
                    return False
                if frame["type"] == "message" and frame["message"] == text:
                    return True

        async def listen(client: WebSocketClient) -> None:
            while True:
                note(client, await client.receive())

        async def kill_the_hub_mid_conversation() -> None:
            await enough_stored.wait()
            os.kill(first_hub, signal.SIGKILL)

        with trio.fail_after(MESSAGES_PER_SENDER + 2 * CHAT_BACK_SECONDS):
            async with trio.open_nursery() as listening:
                for listener in listeners:
                    listening.start_soon(listen, listener)
                async with trio.open_nursery() as sending:
                    sending.start_soon(kill_the_hub_mid_conversation)
                    for index, sender in enumerate(senders):
                        sending.start_soon(send_all, sender, f"sender-{index}")
                # Everyone reads on until it has the last message stored.
                stored = stored_messages(data_dir)
                for sender in senders:
                    listening.start_soon(listen, sender)
                while not all(stored[-1] in as_stored(frames) for frames in received.values()):
                    await frame_received.wait()
                listening.cancel_scope.cancel()

        await wait_gone(first_hub)
        with trio.fail_after(CHAT_BACK_SECONDS):  # One worker started the new hub.
            await server.wait_until(lambda: len(server.hub_pids) == 2)
        assert stored_messages(data_dir) == stored
        for frames in received.values():
            # Every client got every stored message once, in one order, and was never told
            # that something was missed.
            assert as_stored(frames) == stored
            assert [f for f in frames if f["type"] == "notice"] == []
        assert len(stored) > KILL_AFTER_STORED
        async with chat_client(server) as late:
            assert [f["type"] for f in late.opening] == ["welcome", "history", "presence"], (
                late.opening
            )
            assert late.history["epoch"] == epoch  # The run of ids went on.


async def test_a_damaged_store_stops_startup_with_a_message_naming_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    damaged = b"SQLite format 3\0" + os.urandom(8192)
    (data_dir / DATABASE_NAME).write_bytes(damaged)

    log = await run_until_it_exits(server_env(data_dir))

    assert f"cannot open the message store {data_dir / DATABASE_NAME}" in log
    assert "move it aside" in log
    # Refused, not replaced by an empty store: the old file is there for its owner.
    assert (data_dir / DATABASE_NAME).read_bytes() == damaged


async def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        hypercorn_server(workers=2, env=server_env(data_dir)) as first,
        chat_client(first) as client,
    ):
        [hub] = first.hub_pids

        log = await run_until_it_exits(server_env(data_dir))

        assert f"{data_dir.absolute()} is in use by another trio_chat server's hub " in log
        assert f"(pid {hub})" in log
        # The first server's clients notice nothing.
        await client.send("ann", "still here")
        assert (await client.receive_type("message"))["message"] == "still here"


async def test_a_full_store_refuses_messages_with_errors_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    """The disk fills up (here: a limit on the size of the files the server may write, which
    the hub inherits). Senders are told, nothing is shown that was not stored, and the hub
    stays up."""
    data_dir = tmp_path / "data"
    async with (
        hypercorn_server(
            workers=2, env=server_env(data_dir), preexec_fn=limit_file_size(160 * 1024)
        ) as server,
        chat_client(server) as sender,
        chat_client(server) as watcher,
    ):
        [hub] = server.hub_pids
        acknowledged: list[str] = []
        with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
            for n in range(1000):
                await sender.send("ann", f"{n} " + "x" * 3000)
                frame = await sender.receive()
                while frame["type"] == "presence":
                    frame = await sender.receive()
                if frame["type"] == "error":
                    assert (frame["code"], frame["room"]) == ("hub_unavailable", ROOM)
                    break
                acknowledged.append(frame["message"])
            else:
                raise AssertionError("the store never filled up")
            # Nothing was shown that is not stored, and all that was shown is.
            seen = [(await watcher.receive_type("message"))["message"] for _ in acknowledged]
        assert seen == acknowledged == [text for _, _, text in stored_messages(data_dir)]
        assert server.hub_pids == [hub] and server.process.returncode is None
        assert "event=store_write_failed" in "\n".join(server.output)


async def test_a_store_that_turns_read_only_refuses_messages_until_it_is_writable_again(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with (
        hypercorn_server(workers=2, env=server_env(data_dir)) as server,
        chat_client(server) as sender,
        chat_client(server) as watcher,
    ):
        [hub] = server.hub_pids
        await sender.send("ann", "stored")
        assert (await watcher.receive_type("message"))["message"] == "stored"

        with read_only(data_dir / f"{DATABASE_NAME}-wal"):
            await sender.send("ann", "refused")
            error = await sender.receive_type("error")
            assert (error["code"], error["room"]) == ("hub_unavailable", ROOM)
            assert "not sent" in error["message"]

        await sender.send("ann", "stored again")
        assert (await watcher.receive_type("message"))["message"] == "stored again"
        # The refused message was shown to nobody, and is not in the store.
        assert [text for _, _, text in stored_messages(data_dir)] == ["stored", "stored again"]
        assert server.hub_pids == [hub]
        log = "\n".join(server.output)
        assert "event=store_write_failed" in log and "event=store_writable_again" in log


async def test_scrollback_reaches_the_first_message_of_a_room(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = server_env(data_dir, TRIO_CHAT_HISTORY_SIZE="10")
    async with hypercorn_server(workers=4, env=env) as server:
        async with chat_client(server) as writer:
            for n in range(1, 131):
                await writer.send("ann", f"message {n}")
            with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
                while (await writer.receive_type("message"))["id"] < 130:
                    pass
        async with chat_client(server) as reader:
            shown = [m["message"] for m in reader.history["messages"]]
            before = reader.history["messages"][0]["id"]
            complete = False
            while not complete:
                await reader.send_json({"type": "older", "room": ROOM, "before": before})
                page = await reader.receive_type("older")
                complete = page["complete"]
                shown = [m["message"] for m in page["messages"]] + shown
                before = page["messages"][0]["id"] if page["messages"] else before
        assert shown == [f"message {n}" for n in range(1, 131)]


def limit_file_size(limit: int) -> Any:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


async def run_until_it_exits(env: dict[str, str]) -> str:
    """Start a 2-worker server that is expected to stop by itself; returns its output."""
    process = await trio.lowlevel.open_process(
        hypercorn_command(free_port(), workers=2),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    collector = OutputCollector(process)
    try:
        with trio.fail_after(EXIT_TIMEOUT_SECONDS):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(collector.collect_output)
                await process.wait()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return "\n".join(collector.output)
