"""The baseline: the least an ASGI app can do on Hypercorn's Trio worker to serve the chat.

Run as ``hypercorn -k trio -w 1 bench/baseline.py:app``. One process, so one in-process room:
a set of bounded trio memory channels, one per client. Same wire protocol as trio_chat for
what the benchmark uses (docs/protocol.md): a welcome frame on connect; every text frame a
client sends is stamped with the next id and a timestamp and broadcast to every client, the
sender included. No validation, no hub, no logging.

The broadcast frame is built by splicing ``"type"``, ``"id"`` and ``"ts"`` after the client's
opening brace, without decoding it, as trio_chat's hub does with bodies it has already
validated.

Slow consumers: the same policy as trio_chat with its defaults: a client with ``BUFFER`` frames
waiting is dropped (its channel closed, the connection closed with 1013).

Batch mode: a client that offers the ``trio-chat.batch`` subprotocol gets it; its writer then
sends everything waiting in its channel as one text frame, the JSON objects joined by "\\n".
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio

BATCH_SUBPROTOCOL = "trio-chat.batch"
#: Frames waiting for one client before it is dropped (trio_chat's default is larger: 1024).
BUFFER = 256
TRY_AGAIN_LATER = 1013

_subscribers: set[trio.MemorySendChannel[str]] = set()
_last_id = 0
_WELCOME = (
    f'{{"type":"welcome","sender":"server","message":"You are connected","worker":{os.getpid()}}}'
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await _chat(scope, receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    elif kind == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _broadcast(frame: str) -> None:
    slow = []
    for channel in _subscribers:
        try:
            channel.send_nowait(frame)
        except trio.WouldBlock:
            slow.append(channel)
    for channel in slow:
        _subscribers.discard(channel)
        channel.close()


async def _chat(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _last_id
    await receive()  # websocket.connect
    batch = BATCH_SUBPROTOCOL in scope.get("subprotocols", ())
    await send({"type": "websocket.accept", "subprotocol": BATCH_SUBPROTOCOL if batch else None})
    await send({"type": "websocket.send", "text": _WELCOME})
    send_channel, receive_channel = trio.open_memory_channel[str](BUFFER)
    _subscribers.add(send_channel)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _write_batches if batch else _write, receive_channel, send, nursery.cancel_scope
            )
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text:
                    _last_id += 1
                    _broadcast(
                        f'{{"type":"message","id":{_last_id},"ts":{time.time_ns() // 1_000_000},'
                        f"{text[1:]}"
                    )
            nursery.cancel_scope.cancel()
    finally:
        _subscribers.discard(send_channel)
        send_channel.close()


async def _write(
    channel: trio.MemoryReceiveChannel[str], send: Any, scope: trio.CancelScope
) -> None:
    async for frame in channel:
        await send({"type": "websocket.send", "text": frame})
    await _evicted(send, scope)


async def _write_batches(
    channel: trio.MemoryReceiveChannel[str], send: Any, scope: trio.CancelScope
) -> None:
    async for frame in channel:
        frames = [frame]
        try:
            while True:
                frames.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            pass
        await send({"type": "websocket.send", "text": "\n".join(frames)})
    await _evicted(send, scope)


async def _evicted(send: Any, scope: trio.CancelScope) -> None:
    """The channel was closed by ``_broadcast``: this client fell behind."""
    await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
    scope.cancel()
