"""What a worker counts (``WorkerFigures``), driven through the app in-process, and the whole
server's figures it gives (``Worker.server_figures``), on an in-process hub.

Each test reads the worker's own figures (``Worker.report``) or the server's
(``server_figures``); what ``/metrics`` makes of them is ``test_app_metrics.py``'s. Nothing
sleeps: the tests wait for the app with ``wait_all_tasks_blocked``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.hub_link import HubUnavailable
from trio_chat.hub_link.interface import REPORT_INTERVAL_SECONDS
from trio_chat.hub_link.local import LocalHub
from trio_chat.metrics.figures import Counts, WorkerReport
from trio_chat.protocol import ChatMessage, CloseCode, encode_chat_body
from trio_chat.session import BATCH_BURST_FRAMES
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import DEFAULT_ROOM as ROOM
from asgi_driver import NO_RATE_LIMIT, WebSocketClient, connect_websocket, open_chat
from asgi_driver import worker as started_worker


def the_worker(state: dict[str, Any]) -> Worker:
    worker = state[STATE_KEY]
    assert isinstance(worker, Worker)
    return worker


def counts(state: dict[str, Any]) -> Counts:
    return the_worker(state).report().counts


@asynccontextmanager
async def worker(
    settings: Settings = NO_RATE_LIMIT, hub: LocalHub | None = None
) -> AsyncIterator[tuple[ChatApp, dict[str, Any]]]:
    """A started worker on a hub of its own (the hub's clock is the wall clock: lags are real)."""
    async with started_worker(hub or LocalHub(), settings) as (app, state):
        yield app, state


async def publish(client: WebSocketClient, text: str) -> None:
    await client.send_json({"sender": "ann", "message": text})


def wire_bytes(texts: list[str]) -> int:
    return sum(len(text.encode()) for text in texts)


async def test_a_published_message_counts_once_however_many_receive_it() -> None:
    async with (
        worker() as (app, state),
        open_chat(app, state) as ann,
        open_chat(app, state) as bob,
        open_chat(app, state) as cat,
    ):
        await publish(ann, "hi")
        for client in (ann, bob, cat):
            await client.receive_json()
        assert counts(state).messages_published == 1


async def test_frames_and_bytes_sent_are_what_the_clients_received() -> None:
    async with worker() as (app, state):
        async with open_chat(app, state) as ann, open_chat(app, state) as bob:
            await publish(ann, "héllo, wörld ✓")  # Bytes are UTF-8's, not characters.
            await publish(bob, "x" * 100)
            await ann.send_json({"type": "nonsense"})  # An error frame is a frame too.
            await trio.testing.wait_all_tasks_blocked()
            texts = ann.texts_sent + bob.texts_sent
            sent = counts(state)
        assert (sent.frames_sent, sent.bytes_sent) == (len(texts), wire_bytes(texts))
        assert sent.frames_sent >= 2 * 3 + 4  # Welcome, history, presence... and the rest.


async def test_a_batch_mode_frame_counts_as_one_frame() -> None:
    subprotocols = ["trio-chat.batch"]
    async with (
        worker() as (app, state),
        open_chat(app, state, subprotocols=subprotocols) as batched,
    ):
        for n in range(5):
            await publish(batched, f"m{n}")
        await trio.testing.wait_all_tasks_blocked()
        sent = counts(state)
        assert sent.frames_sent == len(batched.texts_sent)
        assert sent.bytes_sent == wire_bytes(batched.texts_sent)


async def test_error_frames_are_counted_by_their_code() -> None:
    async with (
        worker(Settings(rate=1e-9, burst=3)) as (app, state),
        open_chat(app, state, query_string=b"name=%00") as ann,
    ):
        await ann.send_text("{not json")
        await publish(ann, "one")
        await ann.send_json({"type": "leave", "room": "elsewhere"})
        for n in range(2):
            await publish(ann, f"too fast {n}")
        await trio.testing.wait_all_tasks_blocked()
        assert counts(state).frames_refused == {
            "invalid_name": 1,
            "invalid_json": 1,
            "not_joined": 1,
            "rate_limited": 2,
        }


async def test_a_refused_origin_and_too_many_connections_count_as_refused_handshakes() -> None:
    settings = Settings(rate=0, max_connections_per_address=1)
    async with worker(settings) as (app, state):
        headers = [(b"host", b"chat.test"), (b"origin", b"http://evil.example")]
        async with connect_websocket(app, state, headers=headers) as refused:
            assert (await refused.receive())["type"] == "websocket.close"
        async with open_chat(app, state), connect_websocket(app, state) as third:
            assert (await third.receive())["type"] == "websocket.close"
        async with connect_websocket(app, state, "/elsewhere") as lost:
            assert (await lost.receive())["type"] == "websocket.close"
        assert counts(state).handshakes_refused == {
            "origin": 1,
            "too_many_connections": 1,
            "unknown_path": 1,
        }


async def test_sessions_that_end_are_counted_by_close_code() -> None:
    async with worker(Settings(rate=0, subscriber_buffer=2)) as (app, state):
        async with open_chat(app, state) as ann, open_chat(app, state) as slow:
            slow.stall("websocket.send")
            for n in range(6):
                await publish(ann, f"m{n}")
                await ann.receive_json()
                await trio.testing.wait_all_tasks_blocked()
            slow.unstall()
            await slow.wait_returned()  # Dropped with 1013.
            await ann.disconnect(1000)
        async with open_chat(app, state) as bob, open_chat(app, state) as cat:
            the_worker(state).close_all_sessions()
            await bob.wait_returned()
            await cat.wait_returned()
        assert counts(state).disconnects == {1013: 1, 1000: 1, 1001: 2}


async def test_the_delivery_lag_is_observed_once_per_batch_not_per_recipient() -> None:
    async with worker() as (app, state):
        async with (
            open_chat(app, state) as ann,
            open_chat(app, state) as bob,
            open_chat(app, state) as cat,
        ):
            lag_before = counts(state).delivery_lag
            for n in range(4):
                await publish(ann, f"m{n}")
                for client in (ann, bob, cat):
                    await client.receive_json()
            lag = counts(state).delivery_lag
        assert lag.count - lag_before.count == 4  # Four batches, three recipients each.
        assert 0 <= lag.sum - lag_before.sum < 60  # The hub's wall clock, and ours.


async def test_the_server_figures_add_up_every_workers_report() -> None:
    hub = LocalHub()
    async with worker(hub=hub) as (app, state), open_chat(app, state) as ann:
        await publish(ann, "hi")
        await ann.receive_json()
        # Another worker of the server, as the hub has it: its report as it joined, and now.
        hub.board.report(WorkerReport(os.getpid() + 1, 0, True, Counts()), trio.current_time())
        other = Counts(messages_published=5, disconnects={1000: 2})
        hub.board.report(
            WorkerReport(os.getpid() + 1, 3, True, other),
            trio.current_time(),
        )

        figures = await the_worker(state).server_figures()

        assert [w.pid for w in figures.workers] == [os.getpid(), os.getpid() + 1]
        assert figures.connections == 4
        assert figures.totals.messages_published == 6
        assert figures.totals.disconnects == {1000: 2}
        assert figures.rooms == 1
        assert figures.workers[0].hub_up


async def test_a_worker_that_cannot_reach_its_hub_has_no_figures_to_give() -> None:
    """Its own counts alone, or beside the others' old ones, could make a counter go back."""
    hub = LocalHub()
    async with worker(hub=hub) as (app, state), open_chat(app, state):
        worker_ = the_worker(state)
        hub.connected = False
        with pytest.raises(HubUnavailable):
            await worker_.server_figures()

        hub.connected = True
        other = WorkerReport(os.getpid() + 1, 3, True, Counts(frames_sent=7))
        hub.board.report(other, trio.current_time())
        figures = await worker_.server_figures()
        assert figures.connections == 4
        assert [w.pid for w in figures.workers] == [os.getpid(), os.getpid() + 1]


async def test_a_worker_that_ends_hands_its_counts_to_the_hub() -> None:
    hub = LocalHub()
    async with worker(hub=hub) as (app, state), open_chat(app, state) as ann:
        await publish(ann, "hi")
        await ann.receive_json()
    figures = hub.board.figures()
    assert figures.workers == ()
    assert figures.retired.messages_published == 1
    assert figures.retired.disconnects == {int(CloseCode.GOING_AWAY): 1}


async def test_the_hub_hears_from_a_worker_every_report_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = LocalHub()
    async with worker(hub=hub) as (app, state), open_chat(app, state) as ann:
        # Its first report went as it joined, before it served anyone: all zeros.
        [joined] = hub.board.figures().workers
        assert (joined.pid, joined.counts, joined.hub_up) == (os.getpid(), Counts(), True)
        await publish(ann, "hi")
        await ann.receive_json()
        await trio.sleep(1.5 * REPORT_INTERVAL_SECONDS)  # On the autojump clock: no real wait.
        [report] = hub.board.figures().workers
        assert (report.connections, report.counts.messages_published) == (1, 1)


async def test_a_batch_held_back_for_pacing_when_its_session_ends_is_observed_all_the_same(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A batch-mode writer past its burst lingers with the batch it took: a session that ends
    meanwhile still lets go of it, so its lag is observed (the clock stands still: the batch
    would wait for ever)."""
    hub = LocalHub()
    async with worker(hub=hub) as (app, state):
        client = WebSocketClient(app, state, "/chat")
        client.scope["subprotocols"] = ["trio-chat.batch"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run_app)
            await client.connect()
            assert (await client.receive())["subprotocol"] == "trio-chat.batch"
            await client.read_opening()
            # The opening was one paced frame: the rest of the burst goes at once.
            for n in range(BATCH_BURST_FRAMES - 1):
                hub.state.publish([encode_chat_body(ROOM, ChatMessage("ann", f"burst{n}"))])
                hub.deliver_all()
                await client.receive()
            lags_before = counts(state).delivery_lag.count
            hub.state.publish([encode_chat_body(ROOM, ChatMessage("ann", "held"))])
            hub.deliver_all()
            await trio.testing.wait_all_tasks_blocked()
            assert client.received_nowait() == []  # Held back for pacing.
            await client.disconnect()
        assert counts(state).delivery_lag.count == lags_before + 1
