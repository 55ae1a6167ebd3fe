"""End to end: WebSocket compression as browsers meet it, against ``hypercorn -k trio -w 4``.

Every client here offers permessage-deflate word for word as Chromium does. By default
(``TRIO_CHAT_WEBSOCKET_COMPRESSION=off``) the handshake answers without the extension and every
frame is plain; with ``on`` it is accepted, both sides compress, and no frame can make a worker
inflate past its ``websocket_max_message_size``. Localhost only, a free port per server, every
wait bounded.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import psutil
import pytest
import trio

from trio_chat.deflate import UTF8_MAX_BYTES_PER_CHAR

from servers import (
    SHIPPED_CONFIG,
    chat_client,
    clients_on_every_worker,
    hypercorn_server,
    one_message_from_each_worker_reaches_everyone,
)
from wsclient import deflated_message, text_frame

pytestmark = [pytest.mark.e2e, pytest.mark.process]

COMPRESSION_ON = {"TRIO_CHAT_WEBSOCKET_COMPRESSION": "on"}
#: What the hostile frame inflates to: far past any limit (about 200 KiB on the wire).
BOMB_INFLATED_BYTES = 200 << 20
#: How much the worker's memory may grow while it handles that frame: "a few MiB" (the frame
#: on the wire, the bounded inflation, the allocator's slack), where unbounded inflation took
#: 190 MiB (measured: under 1 MiB with the bound).
MAX_RSS_GROWTH_BYTES = 4 << 20
RSS_SAMPLE_SECONDS = 0.002
CLOSE_TIMEOUT_SECONDS = 20.0


@pytest.mark.parametrize(
    ("env", "negotiated"),
    [({}, []), (COMPRESSION_ON, ["permessage-deflate"])],
    ids=["default-off", "on"],
)
async def test_a_browser_offer_gets_what_the_setting_says_and_chat_flows_on_every_worker(
    env: dict[str, str], negotiated: list[str]
) -> None:
    async with hypercorn_server(workers=4, env=env) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack, deflate=True)

        assert all(client.extensions == negotiated for client in clients)
        by_worker = {client.welcome["worker"]: client for client in clients}
        # Either way each side reads what the other sends: plain frames (a frame with RSV1
        # set on a connection without the extension would be a protocol error), or
        # compressed ones both ways.
        await one_message_from_each_worker_reaches_everyone(by_worker, clients)


async def test_a_frame_inflating_past_the_limit_closes_with_1009_and_the_worker_stays_small() -> (
    None
):
    mib = b" " * (1 << 20)
    bomb = text_frame(deflated_message(*[mib] * (BOMB_INFLATED_BYTES >> 20)), compressed=True)
    limit = SHIPPED_CONFIG.websocket_max_message_size
    assert len(bomb) < limit * UTF8_MAX_BYTES_PER_CHAR < BOMB_INFLATED_BYTES
    async with (
        hypercorn_server(workers=1, env=COMPRESSION_ON) as server,
        chat_client(server, deflate=True) as attacker,
        chat_client(server, deflate=True) as bystander,
    ):
        assert attacker.extensions == ["permessage-deflate"]
        worker = psutil.Process(attacker.welcome["worker"])
        await attacker.send("attacker", "warming up")  # the worker's usual allocations
        await bystander.receive_type("message")
        before = worker.memory_info().rss
        peak = before
        closed = trio.Event()

        async def sample_rss() -> None:
            nonlocal peak
            while not closed.is_set():
                peak = max(peak, worker.memory_info().rss)
                await trio.sleep(RSS_SAMPLE_SECONDS)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_rss)
            await attacker.send_raw(bomb)
            with trio.fail_after(CLOSE_TIMEOUT_SECONDS):
                code = await attacker.wait_closed()
            closed.set()
        peak = max(peak, worker.memory_info().rss)

        assert code == 1009
        assert peak - before < MAX_RSS_GROWTH_BYTES, f"RSS grew by {(peak - before) >> 10} KiB"
        # Nobody else noticed.
        await bystander.send("bystander", "still here")
        assert (await bystander.receive_type("message"))["message"] == "still here"
