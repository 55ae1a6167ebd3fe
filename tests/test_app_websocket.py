"""WebSocket sessions on /chat, driven in-process: welcome, fan-out, error frames, slow clients.

Each "worker" is a ``ChatApp`` with its own lifespan; workers share one ``LocalHub``, so
cross-worker fan-out runs in one Trio run. The hub's clock is fixed unless a test is about it.
Nothing sleeps: "nothing was sent" is checked after ``wait_all_tasks_blocked``, and the one test
about a timeout runs on the autojump clock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_chat import ChatApp
from trio_chat.asgi_types import Message
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.protocol import ChatMessage, CloseCode, ErrorCode, encode_chat_body
from trio_chat.session import BATCH_BURST_FRAMES, BATCH_FRAMES_PER_SECOND
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import (
    APP_TIMEOUT_SECONDS,
    WebSocketClient,
    chat_app,
    connect_websocket,
    fixed_clock_hub,
    open_chat,
    request,
    running_worker,
)
from asgi_driver import (
    chat_frame as chat,
)


@asynccontextmanager
async def worker(
    hub: LocalHub, settings: Settings | None = None
) -> AsyncIterator[tuple[ChatApp, dict[str, Any]]]:
    """A started worker on ``hub``: its app and lifespan state."""
    app = chat_app(hub, settings)
    async with running_worker(app) as state:
        yield app, state


def body(message: str, sender: str = "ann", room: str = "general") -> str:
    """A chat body as a worker sends it to the hub (room first)."""
    return encode_chat_body(room, ChatMessage(sender=sender, message=message))


async def assert_nothing_sent(*clients: WebSocketClient) -> None:
    await trio.testing.wait_all_tasks_blocked()
    for client in clients:
        assert client.received_nowait() == []


# Handshake


@pytest.mark.parametrize("path", ["/", "/chat/", "/chatroom", "/static/app.js", "/healthz"])
async def test_websocket_on_another_path_is_closed_before_accept(path: str) -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        connect_websocket(app, state, path) as client,
    ):
        first = await client.receive()
        await client.wait_returned()

    assert first == {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}
    assert client.received_nowait() == []


async def test_websocket_is_refused_when_the_worker_has_not_started() -> None:
    app = chat_app(fixed_clock_hub())
    async with connect_websocket(app, None) as client:
        first = await client.receive()
        await client.wait_returned()

    assert first == {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}


async def test_first_frame_after_accept_is_the_welcome() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        connect_websocket(app, state) as client,
    ):
        accept = await client.receive()
        welcome = await client.receive_json()

    assert accept == {"type": "websocket.accept"}
    assert welcome == {
        "type": "welcome",
        "sender": "server",
        "message": "You are connected",
        "worker": os.getpid(),
        "max_message_bytes": 4096,
        "max_sender_chars": 64,
        "max_rooms": 32,
    }


# Fan-out


async def test_message_is_broadcast_to_every_client_including_the_sender() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
        open_chat(app, state) as cat,
    ):
        await ann.send_json({"sender": "ann", "message": "hi"})
        received = [await client.receive_json() for client in (ann, bob, cat)]

    assert received == [chat(1, "ann", "hi")] * 3


async def test_ids_count_up_from_one_in_publish_order() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        for sender in (ann, bob, ann):
            await sender.send_json({"sender": "x", "message": "m"})
            await trio.testing.wait_all_tasks_blocked()
        ids = [(await ann.receive_json())["id"] for _ in range(3)]

    assert ids == [1, 2, 3]


async def test_ts_is_the_hub_wall_clock_in_milliseconds() -> None:
    before_ms = time.time_ns() // 1_000_000
    async with worker(LocalHub()) as (app, state), open_chat(app, state) as ann:
        await ann.send_json({"sender": "ann", "message": "hi"})
        frame = await ann.receive_json()
    after_ms = time.time_ns() // 1_000_000

    assert isinstance(frame["ts"], int)
    assert before_ms <= frame["ts"] <= after_ms


async def test_clients_on_two_workers_get_every_message_in_the_same_order() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app1, state1),
        worker(hub) as (app2, state2),
        open_chat(app1, state1) as ann,
        open_chat(app2, state2) as bob,
        open_chat(app2, state2) as cat,
    ):
        senders = [ann, bob, cat, bob, ann]
        for n, sender in enumerate(senders):
            await sender.send_json({"sender": f"s{n}", "message": f"m{n}"})
        seen = {
            name: [await client.receive_json() for _ in senders]
            for name, client in {"ann": ann, "bob": bob, "cat": cat}.items()
        }

    assert seen["ann"] == seen["bob"] == seen["cat"]
    assert [frame["id"] for frame in seen["ann"]] == [1, 2, 3, 4, 5]
    assert sorted(frame["message"] for frame in seen["ann"]) == [f"m{n}" for n in range(5)]


async def test_server_assigns_id_and_ts_whatever_the_client_sends() -> None:
    async with worker(fixed_clock_hub()) as (app, state), open_chat(app, state) as ann:
        await ann.send_json(
            {"sender": "ann", "message": "hi", "id": 99, "ts": 1, "type": "message"}
        )
        frame = await ann.receive_json()

    assert frame == chat(1, "ann", "hi")


@pytest.mark.parametrize(
    ("sent", "broadcast"),
    [
        (("ann", "hi"), ("ann", "hi")),
        (("  ann  ", "hi"), ("ann", "hi")),  # names are trimmed
        (("ann", "  two\nlines\tand tab  "), ("ann", "  two\nlines\tand tab  ")),
        (("a" * 64, "hi"), ("a" * 64, "hi")),
        (("ann", "x" * 4096), ("ann", "x" * 4096)),
        (("ann", "é" * 2048), ("ann", "é" * 2048)),  # 4096 bytes of UTF-8
        (("ann", "😀" * 1024), ("ann", "😀" * 1024)),  # 4096 bytes of UTF-8
        (("ann", "<script>alert(1)</script>"), ("ann", "<script>alert(1)</script>")),
        (("zoë", "\u200bzero width"), ("zoë", "\u200bzero width")),
    ],
)
async def test_valid_message_is_broadcast_as_sent(
    sent: tuple[str, str], broadcast: tuple[str, str]
) -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        await ann.send_json({"sender": sent[0], "message": sent[1]})
        frame = await bob.receive_json()

    assert frame == chat(1, *broadcast)


# Bad input: an error frame to the sender alone, and the connection stays open.

BAD_FRAMES: list[tuple[str | bytes, ErrorCode]] = [
    ("hello", ErrorCode.INVALID_JSON),
    ('{"sender": "a", "message": "b"', ErrorCode.INVALID_JSON),
    ("[" * 20_000, ErrorCode.INVALID_JSON),  # deeper than the parser's recursion limit
    ('{"sender":"a","message":"b","n":' + "9" * 5000 + "}", ErrorCode.INVALID_JSON),
    ("[" * 100_000, ErrorCode.MESSAGE_TOO_LONG),  # refused by size before it is parsed
    ('["ann", "hi"]', ErrorCode.NOT_AN_OBJECT),
    ("42", ErrorCode.NOT_AN_OBJECT),
    ('"hi"', ErrorCode.NOT_AN_OBJECT),
    ("null", ErrorCode.NOT_AN_OBJECT),
    ('{"message": "hi"}', ErrorCode.MISSING_FIELD),
    ('{"sender": "ann"}', ErrorCode.MISSING_FIELD),
    ('{"sender": 1, "message": "hi"}', ErrorCode.WRONG_TYPE),
    ('{"sender": "ann", "message": ["hi"]}', ErrorCode.WRONG_TYPE),
    ('{"sender": "ann", "message": null}', ErrorCode.WRONG_TYPE),
    ('{"sender": "ann", "message": ""}', ErrorCode.EMPTY_MESSAGE),
    ('{"sender": "ann", "message": " \\n\\t "}', ErrorCode.EMPTY_MESSAGE),
    ('{"sender": "", "message": "hi"}', ErrorCode.EMPTY_SENDER),
    ('{"sender": "   ", "message": "hi"}', ErrorCode.EMPTY_SENDER),
    (json.dumps({"sender": "a" * 65, "message": "hi"}), ErrorCode.SENDER_TOO_LONG),
    (json.dumps({"sender": "a", "message": "x" * 4097}), ErrorCode.MESSAGE_TOO_LONG),
    (json.dumps({"sender": "a", "message": "é" * 2048 + "x"}), ErrorCode.MESSAGE_TOO_LONG),
    (json.dumps({"sender": "a", "message": "😀" * 1025}), ErrorCode.MESSAGE_TOO_LONG),
    ('{"sender": "ann", "message": "bell\\u0007"}', ErrorCode.INVALID_TEXT),
    ('{"sender": "ann", "message": "\\u001b[2Jclear"}', ErrorCode.INVALID_TEXT),
    ('{"sender": "ann", "message": "nul\\u0000"}', ErrorCode.INVALID_TEXT),
    ('{"sender": "a\\nb", "message": "hi"}', ErrorCode.INVALID_TEXT),
    ('{"sender": "a", "message": "\\ud800"}', ErrorCode.INVALID_TEXT),  # a lone surrogate
    ('{"sender": "\\udfff", "message": "hi"}', ErrorCode.INVALID_TEXT),
    ('{"type": "typing", "sender": "ann", "message": "hi"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": null, "sender": "ann", "message": "hi"}', ErrorCode.UNKNOWN_TYPE),
    (b'{"sender": "ann", "message": "hi"}', ErrorCode.BINARY_FRAME),
    (b"\xff\x00", ErrorCode.BINARY_FRAME),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_frame_and_the_connection_stays_open(
    frame: str | bytes, code: ErrorCode
) -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        if isinstance(frame, bytes):
            await ann.send_bytes(frame)
        else:
            await ann.send_text(frame)
        error = await ann.receive_json()
        await assert_nothing_sent(ann, bob)

        await ann.send_json({"sender": "ann", "message": "still here"})
        after = [await ann.receive_json(), await bob.receive_json()]

    assert set(error) == {"type", "code", "message"}
    assert error["type"] == "error"
    assert error["code"] == code.value
    assert isinstance(error["message"], str) and error["message"]
    # Id 1: the bad frame was never published.
    assert after == [chat(1, "ann", "still here")] * 2


async def test_the_configured_limits_are_the_ones_applied() -> None:
    settings = Settings(max_message_bytes=10, max_sender_chars=3)
    async with worker(fixed_clock_hub(), settings) as (app, state), open_chat(app, state) as ann:
        await ann.send_json({"sender": "ann", "message": "é" * 6})  # 12 bytes, 6 characters
        await ann.send_json({"sender": "anne", "message": "hi"})
        await ann.send_json({"sender": "ann", "message": "x" * 10})
        frames = [await ann.receive_json() for _ in range(3)]
    assert [f.get("code") for f in frames[:2]] == ["message_too_long", "sender_too_long"]
    assert frames[2] == chat(1, "ann", "x" * 10)


async def test_one_log_line_per_connect_and_disconnect_none_per_message_and_errors_throttled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        worker(fixed_clock_hub(), Settings(rate=0)) as (app, state),
        open_chat(app, state) as ann,
    ):
        for n in range(3):
            await ann.send_json({"sender": "ann", "message": f"secret-{n}"})
        for _ in range(3):
            await ann.receive_json()
        for _ in range(50):
            await ann.send_text("not json")
        for _ in range(50):
            assert (await ann.receive_json())["code"] == "invalid_json"
        await ann.disconnect()
        await ann.wait_returned()
    lines = [record.getMessage() for record in caplog.records if record.name == "trio_chat"]
    sessions = [line for line in lines if "conn=" in line]
    assert [line.split()[0] for line in sessions] == [
        "event=connect",
        "event=client_error",  # The first one; the other 49 are counted, not logged.
        "event=disconnect",
    ]
    assert "code=invalid_json" in sessions[1]
    assert "errors=50" in sessions[2]
    assert not [line for line in lines if "secret-" in line]


async def test_hub_down_gets_hub_unavailable_and_the_connection_stays_open() -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        hub.connected = False
        await ann.send_json({"sender": "ann", "message": "lost"})
        error = await ann.receive_json()
        await assert_nothing_sent(ann, bob)

        hub.connected = True
        await ann.send_json({"sender": "ann", "message": "back"})
        after = await bob.receive_json()

    assert error["type"] == "error"
    assert error["code"] == ErrorCode.HUB_UNAVAILABLE.value
    assert after == chat(1, "ann", "back")


# Slow consumers


async def _connections(app: ChatApp, state: dict[str, Any]) -> int:
    health = (await request(app, state, "GET", "/healthz")).json()
    count = health["connections"]
    assert isinstance(count, int)
    return count


async def test_slow_client_is_closed_with_1013_and_the_others_keep_up() -> None:
    buffer = 2
    async with (
        worker(fixed_clock_hub(), Settings(subscriber_buffer=buffer)) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
        open_chat(app, state) as slow,
    ):
        slow.stall("websocket.send")  # slow stops reading: the server's send never completes
        assert await _connections(app, state) == 3
        count = buffer + 4
        for n in range(1, count + 1):
            await ann.send_json({"sender": "ann", "message": f"m{n}"})
            # Each message reaches the others at once, before and after slow is dropped.
            assert await ann.receive_json() == chat(n, "ann", f"m{n}")
            assert await bob.receive_json() == chat(n, "ann", f"m{n}")
            await trio.testing.wait_all_tasks_blocked()

        assert slow.send_stalled.is_set()
        assert await _connections(app, state) == 2
        worker_ = state[STATE_KEY]
        assert isinstance(worker_, Worker)
        assert worker_.fanout.statistics().dropped_slow == 1
        # Once the client reads again, the frame in flight arrives, then the close: nothing
        # more was queued for it after it was dropped.
        slow.unstall()
        await slow.wait_returned()
        received = slow.received_nowait()
        assert received[-1] == {"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER}
        assert len(received) <= 2


async def test_an_evicted_client_that_never_reads_again_is_released_when_it_goes() -> None:
    async with (
        worker(fixed_clock_hub(), Settings(subscriber_buffer=4)) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as slow,
    ):
        slow.stall("websocket.send", "websocket.close")
        for n in range(1, 10):
            await ann.send_json({"sender": "ann", "message": f"m{n}"})
            await ann.receive_json()
            await trio.testing.wait_all_tasks_blocked()
        assert await _connections(app, state) == 1
        await slow.disconnect()  # Its TCP connection dies: the stalled send fails, all ends.
        assert slow.returned.is_set()


# Leaving


async def test_sessions_leave_no_task_behind() -> None:
    """Clients that come and go, however they go, leave no task behind (``/healthz`` counts
    the worker's tasks, so that a soak can watch them from outside)."""
    async with worker(fixed_clock_hub()) as (app, state):
        before = (await request(app, state, "GET", "/healthz")).json()["tasks"]
        for _ in range(3):
            async with open_chat(app, state) as leaving, open_chat(app, state) as cancelled:
                await leaving.send_json({"sender": "ann", "message": "hi"})
                await leaving.receive_json()
                await cancelled.receive_json()
                await leaving.disconnect()
                await leaving.wait_returned()
                await cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
        after = (await request(app, state, "GET", "/healthz")).json()
    assert after["connections"] == 0
    assert after["tasks"] == before


async def test_disconnect_ends_the_session_and_leaves_the_room() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        await bob.disconnect(1001)
        assert bob.returned.is_set()
        assert await _connections(app, state) == 1

        await ann.send_json({"sender": "ann", "message": "anyone?"})
        assert await ann.receive_json() == chat(1, "ann", "anyone?")
        await assert_nothing_sent(bob)


async def test_client_leaving_while_the_server_is_blocked_sending_to_it_ends_the_session() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        bob.stall("websocket.send")
        await ann.send_json({"sender": "ann", "message": "hi"})
        await ann.receive_json()
        with trio.fail_after(APP_TIMEOUT_SECONDS):
            await bob.send_stalled.wait()

        await bob.disconnect()

        assert await _connections(app, state) == 1


async def test_cancelled_session_says_going_away_before_it_returns() -> None:
    async with worker(fixed_clock_hub()) as (app, state), open_chat(app, state) as ann:
        await ann.cancel()

        assert ann.received_nowait() == [{"type": "websocket.close", "code": CloseCode.GOING_AWAY}]
        assert await _connections(app, state) == 0


async def test_closing_the_worker_says_going_away_to_every_session_and_refuses_new_ones() -> None:
    async with (
        worker(fixed_clock_hub()) as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
    ):
        worker_ = state[STATE_KEY]
        assert isinstance(worker_, Worker)

        worker_.close_all_sessions()
        await ann.wait_returned()
        await bob.wait_returned()
        async with connect_websocket(app, state) as late:
            refused = await late.receive()

        going_away = {"type": "websocket.close", "code": CloseCode.GOING_AWAY}
        assert ann.received_nowait() == bob.received_nowait() == [going_away]
        assert refused == {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}
        assert await _connections(app, state) == 0


# Hostile and careless clients


async def test_a_cross_site_handshake_is_refused_and_a_same_site_one_accepted() -> None:
    async with worker(fixed_clock_hub()) as (app, state):
        for origin, accepted in [(b"http://evil.example", False), (b"http://chat.test", True)]:
            headers = [(b"host", b"chat.test"), (b"origin", origin)]
            async with connect_websocket(app, state, headers=headers) as client:
                answer = await client.receive()
                expected = "websocket.accept" if accepted else "websocket.close"
                assert answer["type"] == expected


async def test_frames_past_the_rate_limit_get_an_error_and_the_connection_stays() -> None:
    settings = Settings(rate=1, burst=3)
    async with (
        worker(fixed_clock_hub(), settings) as (app, state),
        open_chat(app, state) as ann,
    ):
        for n in range(5):
            await ann.send_json({"sender": "ann", "message": f"m{n}"})
        frames = [await ann.receive_json() for _ in range(5)]
        assert [f.get("message") for f in frames if f["type"] == "message"] == ["m0", "m1", "m2"]
        assert [f["code"] for f in frames if f["type"] == "error"] == ["rate_limited"] * 2


async def test_connections_per_address_can_be_capped() -> None:
    async with (
        worker(fixed_clock_hub(), Settings(max_connections_per_address=2)) as (app, state),
        open_chat(app, state),
        open_chat(app, state),
        connect_websocket(app, state) as third,
    ):
        assert (await third.receive())["type"] == "websocket.close"


# Batch mode


async def test_batch_subprotocol_joins_waiting_frames_into_one_and_others_keep_one_each() -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_chat(app, state) as plain:
        batched = WebSocketClient(app, state, "/chat")
        batched.scope["subprotocols"] = ["trio-chat.batch"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batched.run_app)
            await batched.connect()
            accept = await batched.receive()
            assert accept == {"type": "websocket.accept", "subprotocol": "trio-chat.batch"}
            await batched.read_opening()
            bodies = [body(f"m{n}") for n in range(3)]
            hub.state.publish(bodies)  # One hub batch of three messages...
            hub.deliver_all()
            sent = await batched.receive()
            lines = sent["text"].split("\n")  # ...goes out to the batch client as one frame,
            assert [json.loads(line)["message"] for line in lines] == ["m0", "m1", "m2"]
            assert [(await plain.receive_json())["message"] for _ in range(3)] == [
                "m0",
                "m1",
                "m2",
            ]  # ...and as three to the others.
            await trio.testing.wait_all_tasks_blocked()
            assert plain.received_nowait() == []
            batched.cancel_nowait()


@asynccontextmanager
async def open_batch_chat(app: ChatApp, state: dict[str, Any]) -> AsyncIterator[WebSocketClient]:
    """A client that asked for batch mode, its opening frames read."""
    client = WebSocketClient(app, state, "/chat")
    client.scope["subprotocols"] = ["trio-chat.batch"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run_app)
        await client.connect()
        assert (await client.receive())["subprotocol"] == "trio-chat.batch"
        await client.read_opening()
        yield client
        client.cancel_nowait()


def publish(hub: LocalHub, *messages: str) -> None:
    hub.state.publish([body(m) for m in messages])
    hub.deliver_all()


def batch_lines(sent: Message) -> list[str]:
    return [json.loads(line)["message"] for line in sent["text"].split("\n")]


async def send_a_burst(hub: LocalHub, client: WebSocketClient) -> None:
    """As many frames as pacing lets a batch client have at once, one message each.

    The opening's history and presence went out as one paced frame: the burst has one less.
    """
    for n in range(BATCH_BURST_FRAMES - 1):
        publish(hub, f"burst{n}")
        assert batch_lines(await client.receive()) == [f"burst{n}"]
    assert trio.current_time() == 0.0


async def test_a_batch_client_past_its_burst_gets_what_arrives_meanwhile_in_one_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = fixed_clock_hub()
    async with worker(hub) as (app, state), open_batch_chat(app, state) as batched:
        await send_a_burst(hub, batched)
        publish(hub, "m1")
        publish(hub, "m2")  # Two hub batches past the burst...
        await assert_nothing_sent(batched)
        assert batch_lines(await batched.receive()) == ["m1", "m2"]  # ...make one frame,
        assert trio.current_time() == pytest.approx(1 / BATCH_FRAMES_PER_SECOND)  # when due.


async def test_a_batch_client_is_sent_half_a_buffer_at_once_without_waiting_its_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = fixed_clock_hub()
    async with (
        worker(hub, Settings(subscriber_buffer=8)) as (app, state),
        open_batch_chat(app, state) as batched,
    ):
        await send_a_burst(hub, batched)
        publish(hub, "m1", "m2")
        await assert_nothing_sent(batched)
        publish(hub, "m3", "m4")  # Half of the 8-frame buffer is waiting: no more waiting.
        assert batch_lines(await batched.receive()) == ["m1", "m2", "m3", "m4"]
        assert trio.current_time() == 0.0
