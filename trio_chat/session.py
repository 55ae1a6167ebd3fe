"""One WebSocket connection on ``/chat``: accept it, then a reader and a writer task.

Lifetime: the session owns a nursery holding the writer task, while the session task itself
reads. The session ends when the client leaves (the reader returns), when the room evicts it
(its ``on_evict`` cancels the nursery; the session then closes with the code the room gave:
1013 for falling behind, 1001 at shutdown), or when the server cancels it (it closes with 1001
on its way out). In every case the subscription and both tasks end with it.

Only the writer task ever sends to the client; the reader hands error frames to it through the
same bounded channel, so frames never interleave and nothing else waits on this client.
"""

from __future__ import annotations

import logging

import trio

from .asgi_types import Receive, Scope, Send
from .hub import HubUnavailable
from .logs import log_event
from .protocol import (
    CloseCode,
    ErrorCode,
    ProtocolError,
    encode_chat_body,
    error_frame,
    parse_chat_frame,
    welcome_frame,
)
from .room import Subscriber
from .worker import Worker

CHAT_PATH = "/chat"
#: How long a close frame may take to go out when the server shuts a session down.
CLOSE_TIMEOUT_SECONDS = 1.0


async def serve_websocket(
    scope: Scope, receive: Receive, send: Send, worker: Worker | None
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != CHAT_PATH or worker is None or worker.closing:
        # Closing before accepting makes Hypercorn answer the handshake with 403.
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    await send({"type": "websocket.accept"})
    await Session(scope, receive, send, worker).run()


class Session:
    def __init__(self, scope: Scope, receive: Receive, send: Send, worker: Worker) -> None:
        self._receive = receive
        self._send = send
        self._worker = worker
        self._room = worker.room
        self._id = worker.next_connection_id()
        client = scope.get("client")
        self._peer = f"{client[0]}:{client[1]}" if client else "-"
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        log_event("connect", conn=self._id, client=self._peer, online=len(self._room) + 1)
        ended_by: str | None = None
        code: int = CloseCode.GOING_AWAY
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                with self._room.subscribe(on_evict=self._on_evict) as subscriber:
                    self._room.send_to(subscriber, welcome_frame(self._worker.pid))
                    nursery.start_soon(self._write, subscriber)
                    code = await self._read(subscriber)
                    ended_by = "client"
                    nursery.cancel_scope.cancel()
            if ended_by is None and subscriber.close_code is not None:
                # Evicted: too slow (1013), or the worker is shutting down (1001).
                ended_by, code = "server", subscriber.close_code
                with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await self._close(code)
        finally:
            if ended_by is None:
                # Cancelled from outside (the server gave up waiting at shutdown): say goodbye.
                ended_by = "cancelled"
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await self._close(code)
            level = logging.WARNING if code == CloseCode.TRY_AGAIN_LATER else logging.INFO
            log_event("disconnect", level, conn=self._id, by=ended_by, code=int(code))

    def _on_evict(self, code: CloseCode) -> None:
        # Logged now: the close frame itself may wait for a stalled client to read again.
        if code == CloseCode.TRY_AGAIN_LATER:
            log_event("evicted", logging.WARNING, conn=self._id, reason="too_slow", code=int(code))
        self._scope.cancel()

    async def _read(self, subscriber: Subscriber) -> int:
        """Handle client frames until the client leaves; returns its close code."""
        limits = self._worker.limits
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code", CloseCode.NORMAL))
            try:
                chat = parse_chat_frame(message.get("text"), message.get("bytes"), limits)
            except ProtocolError as error:
                self._reject(subscriber, error.code, error.message)
                continue
            try:
                await self._worker.hub.publish(encode_chat_body(chat))
            except HubUnavailable:
                self._reject(
                    subscriber,
                    ErrorCode.HUB_UNAVAILABLE,
                    "Your message was not sent: the server cannot reach the other workers "
                    "right now. Try again in a moment.",
                )

    def _reject(self, subscriber: Subscriber, code: ErrorCode, message: str) -> None:
        log_event("client_error", conn=self._id, code=code.value)
        self._room.send_to(subscriber, error_frame(code, message))

    async def _write(self, subscriber: Subscriber) -> None:
        send = self._send
        async for frame in subscriber.receive_channel:
            await send({"type": "websocket.send", "text": frame})

    async def _close(self, code: int) -> None:
        await self._send({"type": "websocket.close", "code": int(code)})
