"""A small WebSocket client for tests: wsproto over a Trio TCP stream.

It exposes what tests need to see and do: the handshake status, raw text and binary frames,
the close code the server sent, extra handshake headers (Origin) and subprotocols. It always
closes its socket on the way out.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from trio_chat.hypercorn_hook import BROWSER_OFFER

RECEIVE_TIMEOUT_SECONDS = 10.0
RECEIVE_BYTES = 65536
#: What Chromium sends in ``Sec-WebSocket-Extensions`` on every handshake (the hook's own check
#: answers it too; test_browser.py checks it against Chromium's handshake).
CHROMIUM_EXTENSION_OFFER = BROWSER_OFFER.decode()


class ChromiumPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate offered word for word as Chromium offers it (wsproto's own offer
    names both window sizes); compressing and inflating are wsproto's, as in a browser."""

    def offer(self) -> str:
        return CHROMIUM_EXTENSION_OFFER.partition("; ")[2]


def deflated_message(*chunks: bytes) -> bytes:
    """``chunks`` as the payload of one compressed message (RFC 7692: raw deflate, its closing
    ``00 00 ff ff`` left out), compressed a chunk at a time: a message that inflates to
    hundreds of MiB is never whole in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(chunk) for chunk in chunks]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[: -len(b"\x00\x00\xff\xff")]


def text_frame(
    payload: bytes, *, compressed: bool = False, fin: bool = True, first: bool = True
) -> bytes:
    """A client's text frame built by hand, for frames wsproto would not make: masked with an
    all-zero key (RFC 6455 allows any key), RSV1 set if ``compressed`` (on a message's first
    frame only), a continuation frame unless ``first``."""
    head = (0x80 if fin else 0) | (0x01 if first else 0x00) | (0x40 if compressed and first else 0)
    length = len(payload)
    if length < 126:
        header = bytes([head, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([head, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([head, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


class HandshakeRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


class ConnectionClosed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"connection closed with code {code}")
        self.code = code


class WebSocketClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self._partial: list[str | bytes] = []
        # Replies to pings and closes come from the receiving task, maybe while another sends.
        self._send_lock = trio.Lock()
        self.subprotocol: str | None = None
        #: The target of the handshake (``/chat?room=...``), once sent.
        self.path = ""
        #: The extensions the server accepted (``permessage-deflate`` or nothing).
        self.extensions: list[str] = []
        #: The close code the server sent, once it has closed (1006 if the socket just died).
        self.close_code: int | None = None
        #: The frames the server opened with (welcome, history, presence), once read.
        self.opening: list[dict[str, Any]] = []
        #: Pings answered so far (they are answered while a task is receiving).
        self.pings_answered = 0
        self._ping_answered = trio.Event()

    async def _handshake(
        self,
        host: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        subprotocols: Sequence[str],
        deflate: bool,
    ) -> None:
        self.path = path
        request = Request(
            host=host,
            target=path,
            extra_headers=[(name.encode(), value.encode()) for name, value in headers],
            subprotocols=list(subprotocols),
            extensions=[ChromiumPerMessageDeflate()] if deflate else [],
        )
        await self._stream.send_all(self._ws.send(request))
        while True:
            event = await self._next_event()
            if isinstance(event, AcceptConnection):
                self.subprotocol = event.subprotocol
                self.extensions = [extension.name for extension in event.extensions]
                return
            if isinstance(event, RejectConnection):
                raise HandshakeRefused(event.status_code)
            if not isinstance(event, RejectData):
                raise AssertionError(f"unexpected handshake event {event!r}")

    async def _next_event(self) -> Event:
        while not self._events:
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.close_code = self.close_code or 1006
                raise ConnectionClosed(self.close_code)
            self._ws.receive_data(data)
            self._events.extend(self._ws.events())
        return self._events.pop(0)

    async def receive_raw(self) -> str | bytes:
        """The next whole message from the server; ``ConnectionClosed`` once it has closed."""
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code)
        with trio.fail_after(RECEIVE_TIMEOUT_SECONDS):
            while True:
                event = await self._next_event()
                if isinstance(event, Message):
                    self._partial.append(event.data)
                    if event.message_finished:
                        parts, self._partial = self._partial, []
                        if isinstance(event, TextMessage):
                            return "".join(str(part) for part in parts)
                        return b"".join(bytes(part) for part in parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    await self._send_event(event.response())
                    self.pings_answered += 1
                    self._ping_answered.set()
                    self._ping_answered = trio.Event()
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    await self._send_event(event.response())
                    raise ConnectionClosed(event.code)

    async def receive(self, *, presence: bool = True) -> dict[str, Any]:
        """The next frame, decoded; presence frames (which come whenever someone joins or
        leaves a room) are skipped unless ``presence``."""
        while True:
            frame = json.loads(await self.receive_raw())
            assert isinstance(frame, dict)
            if presence or frame["type"] != "presence":
                return frame

    async def read_opening(self) -> list[dict[str, Any]]:
        """Read the opening frames: welcome, maybe errors or notices, history, presence."""
        while not self.opening or self.opening[-1]["type"] != "presence":
            self.opening.append(await self.receive())
        return self.opening

    @property
    def welcome(self) -> dict[str, Any]:
        return self.opening[0]

    @property
    def history(self) -> dict[str, Any]:
        [history] = [frame for frame in self.opening if frame["type"] == "history"]
        return history

    async def receive_type(self, kind: str) -> dict[str, Any]:
        """The next frame of type ``kind``, skipping other types (e.g. notices)."""
        while (frame := await self.receive())["type"] != kind:
            pass
        return frame

    async def wait_pings_answered(self, count: int) -> None:
        """Wait until ``count`` pings in all have been answered (by another task, receiving)."""
        while self.pings_answered < count:
            await self._ping_answered.wait()

    async def wait_closed(self) -> int:
        """Read until the server closes; returns its close code."""
        while True:
            try:
                await self.receive_raw()
            except ConnectionClosed as closed:
                return closed.code

    async def send_text(self, text: str) -> None:
        await self._send_event(TextMessage(data=text))

    async def send_bytes(self, data: bytes) -> None:
        await self._send_event(BytesMessage(data=data))

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the connection, past wsproto: a hostile client's own frames."""
        async with self._send_lock:
            await self._stream.send_all(data)

    async def send(self, sender: str, message: str, room: str | None = None) -> None:
        """A chat message to ``room``; without one, the classic frame (to the first room)."""
        if room is None:
            await self.send_json({"sender": sender, "message": message})
        else:
            await self.send_json(
                {"type": "message", "room": room, "sender": sender, "message": message}
            )

    async def send_json(self, document: Any) -> None:
        await self.send_text(json.dumps(document))

    async def join(self, room: str, **fields: Any) -> list[dict[str, Any]]:
        """Send a ``join`` frame (with ``fields``: ``since``) and read its answer, up to the
        room's presence frame; frames of other rooms meanwhile are left out."""
        await self.send_json({"type": "join", "room": room, **fields})
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "presence":
            frame = await self.receive()
            if frame.get("room") == room:
                frames.append(frame)
        return frames

    async def leave(self, room: str) -> None:
        await self.send_json({"type": "leave", "room": room})

    async def _send_event(self, event: Event) -> None:
        try:
            async with self._send_lock:
                await self._stream.send_all(self._ws.send(event))
        except LocalProtocolError:  # Closed already (another task read the close frame).
            raise ConnectionClosed(self.close_code or 1006) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close_code = self.close_code or 1006
            raise ConnectionClosed(self.close_code) from None

    async def close(self, code: int = 1000) -> None:
        try:
            if self.close_code is None and self._ws.state == ConnectionState.OPEN:
                with suppress(ConnectionClosed):
                    await self._send_event(CloseConnection(code=code))
                self.close_code = code
        finally:
            await self._stream.aclose()


@asynccontextmanager
async def open_websocket(
    port: int,
    path: str = "/chat",
    *,
    host: str = "127.0.0.1",
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    receive_buffer: int | None = None,
    deflate: bool = False,
) -> AsyncIterator[WebSocketClient]:
    """Connect and handshake; ``receive_buffer`` pins the socket's kernel receive buffer (bytes),
    as on a slow device, instead of letting the kernel grow it to megabytes. ``deflate`` offers
    permessage-deflate as a browser does, and compresses and inflates if the server accepts."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    client = WebSocketClient(trio.SocketStream(sock))
    try:
        with trio.fail_after(RECEIVE_TIMEOUT_SECONDS):
            await client._handshake(f"{host}:{port}", path, headers, subprotocols, deflate)
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.close()
