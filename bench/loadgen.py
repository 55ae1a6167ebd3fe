"""A lean WebSocket load generator for the chat protocol (docs/protocol.md).

It connects C clients to ``ws://HOST:PORT/chat``, has S of them send at a total rate of R
messages per second for T seconds, waits for the deliveries to drain, and reports what came
back: loss, duplicates, order, per-delivery latency, and (given the server's pid) the server's
CPU time per delivery over its whole process tree.

Why it is built this way (the load generator must not be the bottleneck):

- asyncio ``Protocol`` callbacks, no streams; the WebSocket handshake and framing by hand. The
  client writes masked frames with an all-zero mask key (valid per RFC 6455 section 5.3, and the
  payload needs no XOR); it reads the server's unmasked frames with a header walk that only
  finds frame boundaries and control frames.
- No per-frame JSON decoding: one compiled regex runs over every run of complete text frames
  in a received chunk and returns ``(id, sender:seq, sent_time)`` for every chat message in it,
  batch frames (several JSON objects joined by "\\n", subprotocol ``trio-chat.batch``) included.
  Everything per delivery is then done by C-level builtins: ``array.extend``, ``zlib.crc32``
  over the joined tags, and ``Counter.update`` for the latency histogram. Frames that the regex
  does not account for (the welcome, history, presence, anything unexpected) go through a slow
  path that decodes them as JSON; a cross-check (the count of this run's tags in the bytes)
  sends a whole chunk to the slow path if the fast path ever missed a message.
- Several processes (``--procs``) share the clients when one cannot keep up; each one reports
  its own CPU time, so the load generator's cost is part of the report.

What is checked, per client: its ids strictly increase (a repeated id is a duplicate); the
sequence of ids and the sequence of tags (sender:seq) are hashed, and every client that got all
messages must have the same hashes (one identical order, same message under each id). On one
reference client per process, a tag that comes twice under different ids counts as a duplicate.

Latency: the sender writes ``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared by all processes on
the machine) into the message, in units of 10 µs; the receiver subtracts it from the time the
chunk carrying the frame was read. Senders follow a fixed schedule (message j is due at
t0 + j / rate), so a late sender catches up instead of drifting; how late it ran is reported.

Browser mode (``--browser``): every client offers permessage-deflate word for word as Chromium
does (RFC 7692; ``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``) and
sends the page's ``Origin``. If the server accepts, the client inflates every message whose
first frame has RSV1 set and runs the same fast path over the inflated text, and it compresses
what it sends as Chromium does; if the server refuses, it speaks plain frames. The plain mode
(the default) is untouched by this: its clients are another class.

Rooms mode (``--rooms N``): client i connects with ``?room=room-<i % N>`` and its messages go
to that room; the senders are spread over the rooms, each room getting its share of the rate.
Every check above is then per room: a client must get every message of its room, and a room's
clients one identical order of them. A frame naming another room (or a chat message naming
none) is a leak: counted, never a delivery, and a failure. Without it, clients stay in the
server's default room, as before rooms existed.

Usage: ``python bench/loadgen.py --port 8000 -c 200 -s 10 -r 100 -t 10 [--server-pid PID]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import re
import resource
import secrets
import struct
import sys
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from operator import lt
from typing import Any, cast

BATCH_SUBPROTOCOL = "trio-chat.batch"
#: Latencies are kept in units of 10 µs: the send time travels in these units too.
LATENCY_UNIT_NS = 10_000
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_ZERO_MASK = b"\x00\x00\x00\x00"
_CLOSE_NORMAL = b"\x88\x82" + _ZERO_MASK + struct.pack("!H", 1000)
_FIN, _RSV1 = 0x80, 0x40
#: What Chromium sends in ``Sec-WebSocket-Extensions`` on every handshake.
CHROMIUM_EXTENSION_OFFER = "permessage-deflate; client_max_window_bits"
#: The end of a ``Z_SYNC_FLUSH``: stripped from every compressed message, and put back before
#: inflating one (RFC 7692 section 7.2).
_DEFLATE_TAIL = b"\x00\x00\xff\xff"

_HANDSHAKING, _WELCOMING, _OPEN, _CLOSED = range(4)


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    port: int
    host: str = "127.0.0.1"
    path: str = "/chat"
    clients: int = 200
    senders: int = 10
    #: Messages per second, all senders together.
    rate: float = 100.0
    duration: float = 10.0
    #: Longest wait, after the last send, for deliveries still on their way.
    drain: float = 5.0
    batch: bool = False
    procs: int = 1
    #: Handshakes in flight at once, per process.
    connect_concurrency: int = 256
    #: The longest the whole connect phase may take; clients not connected by then fail.
    connect_timeout: float = 60.0
    #: Extra characters appended to every message text.
    pad: int = 0
    server_pid: int | None = None
    #: Use uvloop's event loop when it is installed (it halves the cost per received frame).
    uvloop: bool = True
    #: Speak as a browser: offer permessage-deflate as Chromium does, and send an Origin.
    browser: bool = False
    #: 0: every client in the server's default room (no ``?room=``). N: client i connects with
    #: ``?room=room-<i % N>``; a message then reaches its room's members only.
    rooms: int = 0


# ---------------------------------------------------------------------------------------------
# The schedule: shared by the coordinator (to know how many messages there will be) and by the
# processes (to send them).


def process_senders(config: LoadConfig, proc: int) -> list[int]:
    """Global indices of the senders that process ``proc`` holds (client g lives in g % procs)."""
    return [g for g in range(min(config.senders, config.clients)) if g % config.procs == proc]


def process_schedule(config: LoadConfig, proc: int) -> tuple[float, float, int]:
    """(rate, phase, count) of the messages process ``proc`` sends; message j is due at
    t0 + (j + phase) / rate. Phases interleave the processes' sends."""
    senders = min(config.senders, config.clients)
    mine = len(process_senders(config, proc))
    if mine == 0 or config.rate <= 0:
        return 0.0, 0.0, 0
    rate = config.rate * mine / senders
    phase = proc / max(1, min(config.procs, senders))
    count = max(0, math.ceil(config.duration * rate - phase))
    return rate, phase, count


def total_messages(config: LoadConfig) -> int:
    return sum(process_schedule(config, p)[2] for p in range(config.procs))


def room_of(config: LoadConfig, index: int) -> int:
    """The room (0 to ``rooms`` - 1) of client ``index``; 0 for all without ``--rooms``."""
    return index % config.rooms if config.rooms else 0


def room_name(config: LoadConfig, index: int) -> str | None:
    """What client ``index`` puts in ``?room=``; None: it stays in the default room."""
    return f"room-{room_of(config, index)}" if config.rooms else None


def room_messages(config: LoadConfig) -> list[int]:
    """How many messages each room gets (indexed by ``room_of``): process p's message j is
    sent by its sender ``j % len(senders)``, in that sender's room."""
    counts = [0] * max(1, config.rooms)
    for proc in range(config.procs):
        senders = process_senders(config, proc)
        count = process_schedule(config, proc)[2]
        for k, sender in enumerate(senders):
            turns = count // len(senders) + (1 if k < count % len(senders) else 0)
            counts[room_of(config, sender)] += turns
    return counts


# ---------------------------------------------------------------------------------------------
# permessage-deflate (RFC 7692): the server's answer to our offer, without I/O.


@dataclasses.dataclass(frozen=True)
class DeflateParameters:
    """What the server accepted of a permessage-deflate offer (RFC 7692 section 7.1)."""

    #: The server starts every message with an empty window: inflate each one afresh.
    server_no_context_takeover: bool = False
    #: We must start every message we send with an empty window.
    client_no_context_takeover: bool = False
    #: The window the server compresses with (at most); 15 if it did not say.
    server_max_window_bits: int = 15
    #: The window we may compress with; 15 if the server did not say.
    client_max_window_bits: int = 15


_WINDOW_BITS = range(8, 16)


def parse_deflate_answer(header: str | None) -> DeflateParameters | None:
    """The server's ``Sec-WebSocket-Extensions`` answer to Chromium's offer: the negotiated
    parameters, or None if it accepted no extension.

    Raises ``ValueError`` for an answer a client must fail the connection on (RFC 7692
    section 5): an extension that was not offered, a parameter that is unknown, repeated,
    given a value it must not have, or out of range.
    """
    if not header or not header.strip():
        return None
    accepted = [part for part in header.split(",") if part.strip()]
    if len(accepted) != 1:
        raise ValueError(f"accepted {len(accepted)} extensions, one was offered: {header!r}")
    name, *parameters = (item.strip() for item in accepted[0].split(";"))
    if name.lower() != "permessage-deflate":
        raise ValueError(f"accepted an extension that was not offered: {name!r}")
    found: dict[str, int | None] = {}
    for parameter in parameters:
        key, equals, raw = (item.strip() for item in parameter.partition("="))
        key = key.lower()
        if key in found:
            raise ValueError(f"{key} given twice")
        value = raw.strip('"')
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if equals:
                raise ValueError(f"{key} takes no value")
            found[key] = None
        elif key in ("server_max_window_bits", "client_max_window_bits"):
            # In an answer, both need a value (section 7.1.2): an offer may leave one out.
            if not value.isdigit() or int(value) not in _WINDOW_BITS:
                raise ValueError(f"{key}={raw!r}: expected 8 to 15")
            found[key] = int(value)
        else:
            raise ValueError(f"unknown parameter {parameter!r}")
    return DeflateParameters(
        server_no_context_takeover="server_no_context_takeover" in found,
        client_no_context_takeover="client_no_context_takeover" in found,
        server_max_window_bits=found.get("server_max_window_bits") or 15,
        client_max_window_bits=found.get("client_max_window_bits") or 15,
    )


def _server_text_frame(payload: bytes) -> bytes:
    """An unmasked text frame, as the server would have sent ``payload`` uncompressed."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN | _OP_TEXT, length)) + payload
    if length < 65536:
        return bytes((_FIN | _OP_TEXT, 126)) + struct.pack("!H", length) + payload
    return bytes((_FIN | _OP_TEXT, 127)) + struct.pack("!Q", length) + payload


# ---------------------------------------------------------------------------------------------
# One client.


class Client(asyncio.Protocol):
    """A client that offers no extension: every frame it reads or writes is plain."""

    #: What was negotiated of permessage-deflate (only a ``BrowserClient`` offers it).
    deflate: DeflateParameters | None = None

    def __init__(self, proc: Process, index: int) -> None:
        self.proc = proc
        self.index = index
        self.state = _HANDSHAKING
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.key = base64.b64encode(secrets.token_bytes(16))
        self.worker_pid = 0
        self.batch_selected = False
        self.close_code: int | None = None
        self.ids = array("q")
        self.tag_crc = 0
        self.tags: list[bytes] | None = [] if index == proc.reference else None
        self.slow_frames = 0
        self.foreign = 0
        # Rooms (``--rooms``): this client's room, and how many messages it must get.
        self.room = room_name(proc.config, index)
        self._room_bytes = self.room.encode() if self.room else b""
        self._room_key = b'"room":"%s"' % self._room_bytes if self.room else b""
        self.expected = proc.room_totals[room_of(proc.config, index)]
        #: Frames of another room that reached this client (each one a failure).
        self.leaks = 0
        # Receive buffer: chunks waiting for the frame that spans them.
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._fragments: list[bytes] | None = None
        self._seq = 0
        self._sender_prefix = b""

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have Transport's methods without being subclasses of it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(("\r\n".join(self._request_lines()) + "\r\n\r\n").encode())

    def _request_lines(self) -> list[str]:
        """The handshake request, line by line."""
        config = self.proc.config
        query = []
        if self.index < min(config.senders, config.clients):
            # A sender connects under the name it sends with, as the page does: its first
            # message is then no rename, which would send everyone a presence frame.
            query.append(f"name=s{self.index}")
        if self.room:
            query.append(f"room={self.room}")
        path = config.path + ("?" + "&".join(query) if query else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {config.host}:{config.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if config.batch:
            lines.append(f"Sec-WebSocket-Protocol: {BATCH_SUBPROTOCOL}")
        return lines

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != _CLOSED:
            self.state = _CLOSED
            if self.close_code is None:
                self.close_code = 1006
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during connect ({exc})"))
        self.proc.closed += 1

    def data_received(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks = []
        elif (
            self.state == _OPEN
            and 1 < len(data) < 128
            and data[0] == 0x81
            and data[1] == len(data) - 2
        ):
            # The common case without batching: the chunk is one small text frame.
            self.proc.frames += 1
            self._flush(data, 0, len(data))
            return
        if self.state == _HANDSHAKING:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._keep(data, 0, len(data) + 1)
                return
            self._handshake(data[:end])
            data = data[end + 4 :]
            if self.state == _CLOSED:
                return
        self._frames(data)

    # the receive path

    def _keep(self, data: bytes, start: int, need: int) -> None:
        """Keep ``data[start:]`` until at least ``need`` bytes of it are there."""
        rest = data[start:] if start else data
        self._chunks = [rest]
        self._have = len(rest)
        self._need = need

    def _frames(self, data: bytes) -> None:
        """Walk the complete frames in ``data``; hand each run of text frames to ``_flush``."""
        size = len(data)
        pos = 0
        run_start = 0
        frames = 0
        while True:
            if size - pos < 2:
                break
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                header = 2
            elif length == 126:
                if size - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                header = 4
            else:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                header = 10
            end = pos + header + length
            if end > size:
                self.proc.frames += frames
                self._flush(data, run_start, pos)
                self._keep(data, pos, end - pos)
                return
            frames += 1
            b0 = data[pos]
            if b0 != 0x81:  # not a whole text frame: flush the run, handle it on its own
                self._flush(data, run_start, pos)
                self._other_frame(b0, data[pos + header : end])
                run_start = end
                if self.state == _CLOSED:
                    self.proc.frames += frames
                    return
            pos = end
        self.proc.frames += frames
        self._flush(data, run_start, pos)
        if pos < size:
            self._keep(data, pos, size - pos + 1)  # a partial header: wait for more

    def _flush(self, data: bytes, start: int, end: int) -> None:
        """Account for the chat messages in ``data[start:end]``, a run of whole text frames."""
        if end <= start:
            return
        if self.state != _OPEN:
            self._slow(data, start, end)
            return
        proc = self.proc
        # With rooms, a frame naming another room goes to the slow path, which counts it as a
        # leak (two C-level scans; room names need no escaping, so the bytes are exact).
        if self._room_key and data.count(b'"room":"', start, end) != data.count(
            self._room_key, start, end
        ):
            self._slow(data, start, end)
            return
        # Presence frames cost the server a broadcast each: count them (one C-level scan).
        proc.presence_frames += data.count(b'{"type":"presence"', start, end)
        expected = data.count(proc.mark, start, end)
        found = proc.strict_findall(data, start, end)
        if len(found) != expected:
            found = proc.lazy_findall(data, start, end)
            if len(found) != expected:
                self._slow(data, start, end)
                return
        if not found:
            return
        now = time.monotonic_ns() // LATENCY_UNIT_NS
        if len(found) == 1:
            message_id, room, tag, sent = found[0]
            if self._room_key and room != self._room_bytes:
                self._slow(data, start, end)
                return
            proc.received += 1
            self.ids.append(int(message_id))
            self.tag_crc = zlib.crc32(tag + b"|", self.tag_crc)
            proc.latency[now - int(sent)] += 1
            if self.tags is not None:
                self.tags.append(tag)
            return
        ids, rooms, tags, sents = zip(*found, strict=True)
        if self._room_key and rooms.count(self._room_bytes) != len(rooms):
            self._slow(data, start, end)
            return
        proc.received += len(found)
        self.ids.extend(map(int, ids))
        self.tag_crc = zlib.crc32(b"|".join(tags) + b"|", self.tag_crc)
        proc.latency.update(map(now.__sub__, map(int, sents)))
        if self.tags is not None:
            self.tags.extend(tags)

    def _slow(self, data: bytes, start: int, end: int) -> None:
        """Frames the fast path does not account for: decode them as JSON."""
        pos = start
        while pos < end:
            b1 = data[pos + 1] & 0x7F
            header = 2 if b1 < 126 else 4 if b1 == 126 else 10
            length = b1 if b1 < 126 else int.from_bytes(data[pos + 2 : pos + header], "big")
            self._other_frame(data[pos], data[pos + header : pos + header + length])
            pos += header + length

    def _other_frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in (_OP_TEXT, _OP_CONT):
            if opcode == _OP_TEXT and fin:
                self._slow_text(payload)
            elif opcode == _OP_TEXT:
                self._fragments = [payload]
            elif self._fragments is not None:
                self._fragments.append(payload)
                if fin:
                    whole = b"".join(self._fragments)
                    self._fragments = None
                    self._slow_text(whole)
        elif opcode == _OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.state = _CLOSED
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"closed by server ({self.close_code})"))
            assert self.transport is not None
            self.transport.write(_CLOSE_NORMAL)
            self.transport.close()
        elif opcode == _OP_PING:
            assert self.transport is not None
            self.transport.write(_masked(_OP_PONG, payload))
        elif opcode == _OP_BINARY:
            self.proc.binary_frames += 1

    def _slow_text(self, payload: bytes) -> None:
        self.slow_frames += 1
        now = time.monotonic_ns() // LATENCY_UNIT_NS
        for line in payload.split(b"\n"):
            try:
                document = json.loads(line)
            except ValueError:
                self.proc.bad_json += 1
                continue
            kind = document.get("type") if isinstance(document, dict) else None
            if self.room and kind is not None and self._leaked(kind, document):
                self.leaks += 1
            elif kind == "welcome" and self.state == _WELCOMING:
                self.worker_pid = int(document.get("worker") or 0)
                self.state = _OPEN
                if not self.ready.done():
                    self.ready.set_result(None)
            elif kind == "message":
                self._slow_message(document, now)
            elif kind == "presence":
                self.proc.presence_frames += 1
            elif kind == "error":
                self.proc.error_frames[str(document.get("code"))] += 1

    def _leaked(self, kind: str, document: dict[str, Any]) -> bool:
        """With rooms: a frame of another room, or a chat message of none, reached us."""
        room = document.get("room")
        return room != self.room if kind == "message" else room not in (None, self.room)

    def _slow_message(self, document: dict[str, Any], now: int) -> None:
        text = document.get("message")
        prefix = self.proc.tag_prefix
        if not isinstance(text, str) or not text.startswith(prefix):
            self.foreign += 1
            return
        parts = text[len(prefix) :].split(":")
        tag = f"{parts[0]}:{parts[1]}".encode()
        self.ids.append(int(document["id"]))
        self.tag_crc = zlib.crc32(tag + b"|", self.tag_crc)
        self.proc.latency[now - int(parts[2].split(" ")[0])] += 1
        self.proc.received += 1
        if self.tags is not None:
            self.tags.append(tag)

    def _handshake(self, head: bytes) -> None:
        status, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self.key + _WS_GUID).digest()).decode()
        if status.split(" ")[1:2] != ["101"] or headers.get("sec-websocket-accept") != expected:
            self._fail_handshake(f"handshake refused: {status}")
            return
        try:
            self._accept_extensions(headers.get("sec-websocket-extensions"))
        except ValueError as error:
            self._fail_handshake(f"bad Sec-WebSocket-Extensions: {error}")
            return
        self.batch_selected = headers.get("sec-websocket-protocol") == BATCH_SUBPROTOCOL
        self.state = _WELCOMING

    def _accept_extensions(self, header: str | None) -> None:
        """Take the server's ``Sec-WebSocket-Extensions``; none may be there, none was offered."""
        if header and header.strip():
            raise ValueError(f"accepted {header!r}, which was not offered")

    def _fail_handshake(self, reason: str) -> None:
        self.state = _CLOSED
        self.close_code = -1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        assert self.transport is not None
        self.transport.close()

    # the send path

    def send_message(self, now: int) -> None:
        """Send the next message of this client, stamped with ``now`` (10 µs units)."""
        if self.state != _OPEN:
            self.proc.unsent += 1
            return
        if not self._sender_prefix:
            self._sender_prefix = b'{"sender":"s%d","message":"%s%d:' % (
                self.index,
                self.proc.tag_prefix.encode(),
                self.index,
            )
        payload = b'%s%d:%d%s"}' % (self._sender_prefix, self._seq, now, self.proc.padding)
        self._seq += 1
        assert self.transport is not None
        self.transport.write(self._text_frame(payload))

    def _text_frame(self, payload: bytes) -> bytes:
        return _masked(_OP_TEXT, payload)

    def close(self) -> None:
        if self.transport is not None and self.state != _CLOSED:
            self.state = _CLOSED
            self.transport.write(_CLOSE_NORMAL)
            self.transport.close()


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame with the all-zero mask key: the payload goes out unchanged. ``opcode``
    may carry RSV1 (``_RSV1 | _OP_TEXT``: a compressed message)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", length)
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", length)
    return header + _ZERO_MASK + payload


class BrowserClient(Client):
    """A client that speaks as Chromium: it offers permessage-deflate with Chromium's header
    and sends the page's ``Origin``. If the server accepts the offer, it inflates every message
    whose first frame has RSV1 set and compresses every message it sends (RFC 7692 section 7.2);
    if not, it speaks plain frames, as a browser does.

    Receiving, a compressed frame is never ``0x81``, so ``_frames`` hands it to
    ``_other_frame``; once its message is whole and inflated, the text goes through ``_flush``
    (the same regex fast path and JSON slow path as a plain frame) dressed as the plain text
    frame the server would have sent without compression.
    """

    def __init__(self, proc: Process, index: int) -> None:
        super().__init__(proc, index)
        self._inflater: Any = None
        self._deflater: Any = None
        #: The inflated parts of the compressed message being received, if one is.
        self._inflated: list[bytes] | None = None
        self._inflated_binary = False

    def _request_lines(self) -> list[str]:
        config = self.proc.config
        return [
            *super()._request_lines(),
            f"Origin: http://{config.host}:{config.port}",
            f"Sec-WebSocket-Extensions: {CHROMIUM_EXTENSION_OFFER}",
        ]

    def _accept_extensions(self, header: str | None) -> None:
        self.deflate = parse_deflate_answer(header)

    # receiving

    def _other_frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if self.deflate is None or opcode >= _OP_CLOSE:  # plain, or a control frame
            super()._other_frame(b0, payload)
        elif b0 & _RSV1 and opcode != _OP_CONT:  # the first frame of a compressed message
            self._inflated = []
            self._inflated_binary = opcode == _OP_BINARY
            self._inflate(b0, payload)
        elif opcode == _OP_CONT and self._inflated is not None:
            self._inflate(b0, payload)
        else:  # a message the server chose not to compress
            super()._other_frame(b0, payload)

    def _inflate(self, b0: int, payload: bytes) -> None:
        assert self.deflate is not None and self._inflated is not None
        proc = self.proc
        proc.deflated_bytes += len(payload)
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-self.deflate.server_max_window_bits)
        try:
            self._inflated.append(self._inflater.decompress(payload))
            if not b0 & _FIN:
                return
            self._inflated.append(self._inflater.decompress(_DEFLATE_TAIL))
        except zlib.error:  # The server broke the stream: a browser would fail the connection.
            proc.bad_deflate += 1
            self._inflated = None
            self.close()
            return
        text = b"".join(self._inflated)
        self._inflated = None
        if self.deflate.server_no_context_takeover:
            self._inflater = None
        proc.deflated_messages += 1
        proc.inflated_bytes += len(text)
        if self._inflated_binary:
            proc.binary_frames += 1
            return
        frame = _server_text_frame(text)
        self._flush(frame, 0, len(frame))

    # sending

    def _text_frame(self, payload: bytes) -> bytes:
        if self.deflate is None:
            return _masked(_OP_TEXT, payload)
        if self._deflater is None:
            # As Chromium does: zlib's default level and memory, a raw deflate stream, and a
            # window of at least 9 bits, because zlib cannot compress a raw stream with 8; with
            # zlib, what it then writes still inflates with a 256-byte window
            # (https://crbug.com/691074).
            bits = max(self.deflate.client_max_window_bits, 9)
            self._deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
        data = self._deflater.compress(payload) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        if self.deflate.client_no_context_takeover:
            self._deflater = None
        return _masked(_RSV1 | _OP_TEXT, data[: -len(_DEFLATE_TAIL)])


# ---------------------------------------------------------------------------------------------
# One load-generator process: its share of the clients, and of the senders.


class Process:
    def __init__(self, config: LoadConfig, proc: int, run_tag: str) -> None:
        self.config = config
        self.proc = proc
        self.indices = list(range(proc, config.clients, config.procs))
        self.reference = self.indices[0] if self.indices else -1
        self.tag_prefix = f"bm:{run_tag}:"
        self.mark = b'"' + self.tag_prefix.encode()
        #: Messages each room gets (``room_messages``): what each of its members must receive.
        self.room_totals = room_messages(config)
        # trio_chat's frames: {"type":"message","id":N,"ts":T,"room":"..","sender":"..",
        # "message":"bm:RUN:S:Q:SENT.."} (the baseline's have no "room"; spaces after
        # separators allowed). Each match is (id, room or b"", sender:seq, sent). If a run of
        # frames holds more of this run's tags than the strict pattern finds, a looser one is
        # tried (other keys in between; [^}] keeps a match inside one object), then the JSON
        # slow path.
        tag = re.escape(self.tag_prefix.encode()) + rb"(\d+:\d+):(\d+)"
        self.strict_findall = re.compile(
            rb'\{"type": ?"message", ?"id": ?(\d+), ?"ts": ?\d+, ?(?:"room": ?"([^"\\]*)", ?)?'
            rb'"sender": ?"[^"\\]*", ?"message": ?"' + tag
        ).findall
        self.lazy_findall = re.compile(
            rb'\{"type": ?"message", ?"id": ?(\d+),(?:[^}]*?"room": ?"([^"\\]*)")?[^}]*?'
            rb'"message": ?"' + tag
        ).findall
        self.padding = (" " + "x" * (config.pad - 1)).encode() if config.pad > 0 else b""
        self.latency: Counter[int] = Counter()
        self.error_frames: Counter[str] = Counter()
        self.received = 0
        self.presence_frames = 0
        self.presence_at_go = 0
        self.frames = 0
        self.frames_at_go = 0
        self.closed = 0
        self.unsent = 0
        self.binary_frames = 0
        self.bad_json = 0
        self.client_class = BrowserClient if config.browser else Client
        # Browser mode: compressed messages received, their bytes on the wire and inflated.
        self.deflated_messages = 0
        self.deflated_bytes = 0
        self.inflated_bytes = 0
        self.deflate_at_go = (0, 0, 0)
        self.bad_deflate = 0
        self.clients: list[Client] = []
        self.connect_failures: Counter[str] = Counter()

    async def connect_all(self) -> tuple[float, float]:
        """Connect this process's clients, ``connect_concurrency`` at a time, within
        ``connect_timeout`` seconds for all of them; those not done by then count as failed."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.config.connect_concurrency)
        started = time.monotonic()
        deadline = started + self.config.connect_timeout

        async def connect(index: int) -> None:
            async with gate:
                client = None
                try:
                    async with asyncio.timeout_at(loop.time() + deadline - time.monotonic()):
                        _, client = await loop.create_connection(
                            lambda: self.client_class(self, index),
                            self.config.host,
                            self.config.port,
                        )
                        await client.ready
                except (OSError, ConnectionError, TimeoutError) as error:
                    reason = str(error)[:80] or "connect_timeout reached"
                    self.connect_failures[f"{type(error).__name__}: {reason}"] += 1
                    if client is not None:
                        client.close()
                else:
                    self.clients.append(client)

        await asyncio.gather(*(connect(index) for index in self.indices))
        self.clients.sort(key=lambda client: client.index)
        return started, time.monotonic()

    async def send_all(self, t0_ns: int) -> dict[str, Any]:
        rate, phase, count = process_schedule(self.config, self.proc)
        by_index = {client.index: client for client in self.clients}
        senders = [by_index.get(g) for g in process_senders(self.config, self.proc)]
        lateness: list[int] = []
        j = 0
        while j < count:
            now = time.monotonic_ns()
            due = t0_ns + int((j + phase) * 1e9 / rate)
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            lateness.append(now - due)
            stamp = now // LATENCY_UNIT_NS
            while j < count and t0_ns + int((j + phase) * 1e9 / rate) <= now:
                client = senders[j % len(senders)]
                if client is None:
                    self.unsent += 1
                else:
                    client.send_message(stamp)
                j += 1
        return {"sent": count, "max_late_ms": max(lateness, default=0) / 1e6}

    async def drain(self, deadline: float) -> None:
        """Wait until every open client has all its room's messages, or the deadline."""
        expected = sum(client.expected for client in self.clients)
        while time.monotonic() < deadline:
            if self.received >= expected:
                return
            if self.closed and all(
                len(client.ids) >= client.expected
                for client in self.clients
                if client.state != _CLOSED
            ):
                return
            await asyncio.sleep(0.01)

    def report(self, total: int) -> dict[str, Any]:
        clients = []
        for client in self.clients:
            ids = client.ids
            increasing = all(map(lt, ids, islice(ids, 1, None)))
            duplicates = 0 if increasing else len(ids) - len(set(ids))
            clients.append(
                {
                    "index": client.index,
                    "received": len(ids),
                    "duplicates": duplicates,
                    "increasing": increasing,
                    "order_key": (zlib.crc32(ids.tobytes()), client.tag_crc),
                    "close_code": client.close_code,
                    "worker": client.worker_pid,
                    "batch": client.batch_selected,
                    "foreign": client.foreign,
                    "room": room_of(self.config, client.index),
                    "leaks": client.leaks,
                }
            )
        tag_duplicates = 0
        for client in self.clients:
            if client.tags is not None:
                tag_duplicates = len(client.tags) - len(set(client.tags))
        messages, wire, inflated = self.deflate_at_go
        return {
            "clients": clients,
            "deflate_negotiated": sum(1 for client in self.clients if client.deflate),
            "deflated_messages_measuring": self.deflated_messages - messages,
            "deflated_bytes_measuring": self.deflated_bytes - wire,
            "inflated_bytes_measuring": self.inflated_bytes - inflated,
            "tag_duplicates_reference": tag_duplicates,
            "latency": dict(self.latency),
            "connect_failures": dict(self.connect_failures),
            "error_frames": dict(self.error_frames),
            "unsent": self.unsent,
            "presence_connecting": self.presence_at_go,
            "presence_measuring": self.presence_frames - self.presence_at_go,
            "frames_measuring": self.frames - self.frames_at_go,
            "binary_frames": self.binary_frames,
            "bad_json": self.bad_json,
            "bad_deflate": self.bad_deflate,
        }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_main(config: LoadConfig, proc: int, run_tag: str, pipe: Any) -> None:
    _raise_fd_limit()
    if config.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_process_async(config, proc, run_tag, pipe))
            return
    asyncio.run(_process_async(config, proc, run_tag, pipe))


async def _process_async(config: LoadConfig, proc: int, run_tag: str, pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    process = Process(config, proc, run_tag)
    started, connected = await process.connect_all()
    pipe.send(
        ("connected", {"started": started, "connected": connected, "count": len(process.clients)})
    )
    # The pipe stays blocking (uvloop would make a watched fd non-blocking): wait in a thread.
    command, t0_ns, total = await loop.run_in_executor(None, pipe.recv)
    if command == "go":
        cpu_before = _cpu_seconds()
        process.presence_at_go = process.presence_frames
        process.frames_at_go = process.frames
        process.deflate_at_go = (
            process.deflated_messages,
            process.deflated_bytes,
            process.inflated_bytes,
        )
        sent = await process.send_all(t0_ns)
        end = t0_ns / 1e9 + config.duration
        await process.drain(max(end, time.monotonic()) + config.drain)
        pipe.send(("drained", {**sent, "cpu": _cpu_seconds() - cpu_before}))
        await loop.run_in_executor(None, pipe.recv)
        pipe.send(("report", process.report(total)))
    for client in process.clients:
        client.close()
    await asyncio.sleep(0.05)  # let the close frames go out


# ---------------------------------------------------------------------------------------------
# The coordinator: starts the processes, measures the server, merges the reports.


def server_tree(pid: int) -> list[Any]:
    """The server's processes: the master, its workers, and the hub (a worker's child)."""
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _tree_cpu(pid: int | None) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each process of the server's tree, with its role."""
    import psutil

    if pid is None:
        return {}
    times = {}
    for process in server_tree(pid):
        try:
            cpu = process.cpu_times()
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        role = (
            "master"
            if process.pid == pid
            else "hub"
            if ".hub" in command
            else "resource_tracker"
            if "resource_tracker" in command
            else "worker"
        )
        times[process.pid] = (role, cpu.user + cpu.system)
    return times


def wait_quiet(pid: int, timeout: float = 15.0, busy_fraction: float = 0.05) -> None:
    """Wait (at most ``timeout``) until the server's tree uses under ``busy_fraction`` of a
    core over half a second: the previous measurement's backlog is worked off."""
    deadline = time.monotonic() + timeout
    before = sum(cpu for _, cpu in _tree_cpu(pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = sum(cpu for _, cpu in _tree_cpu(pid).values())
        if after - before < 0.5 * busy_fraction:
            return
        before = after


def _machine_times() -> dict[str, float]:
    """CPU seconds the whole machine has spent, all cores: busy in processes, in interrupt
    handlers (loopback TCP is processed there too), and stolen by the hypervisor."""
    import psutil

    times = psutil.cpu_times()
    irq = getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    steal = getattr(times, "steal", 0.0)
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    return {"processes": busy - irq - steal, "irq": irq, "steal": steal}


def tree_rss(pid: int) -> int:
    import psutil

    total = 0
    for process in server_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def _recv(pipe: Any, timeout: float, expected: str) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"a load-generator process did not report {expected!r} in time")
    kind, payload = pipe.recv()
    if kind != expected:
        raise RuntimeError(f"expected {expected!r} from a load-generator process, got {kind!r}")
    return payload


def run(config: LoadConfig) -> dict[str, Any]:
    """One measurement: connect, send, drain, report (a dict; see ``summarize``)."""
    _raise_fd_limit()
    run_tag = secrets.token_hex(4)
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    rss_idle = tree_rss(config.server_pid) if config.server_pid else None
    for proc in range(config.procs):
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_process_main, args=(config, proc, run_tag, theirs), daemon=True
        )
        process.start()
        theirs.close()
        pipes.append(mine)
        processes.append(process)
    try:
        return _coordinate(config, pipes, rss_idle)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()


def _coordinate(config: LoadConfig, pipes: list[Any], rss_idle: int | None) -> dict[str, Any]:
    connects = [_recv(pipe, config.connect_timeout + 60, "connected") for pipe in pipes]
    connected = sum(c["count"] for c in connects)
    connect_seconds = max(c["connected"] for c in connects) - min(c["started"] for c in connects)
    rss_connected = tree_rss(config.server_pid) if config.server_pid else None
    total = total_messages(config)
    t0_ns = time.monotonic_ns() + 300_000_000
    for pipe in pipes:
        pipe.send(("go", t0_ns, total))
    time.sleep(max(0.0, (t0_ns - time.monotonic_ns()) / 1e9))
    cpu_before = _tree_cpu(config.server_pid)
    machine_before = _machine_times()
    window_start = time.monotonic()
    limit = config.duration + config.drain + 30
    drained = [_recv(pipe, limit, "drained") for pipe in pipes]
    window = time.monotonic() - window_start
    cpu_after = _tree_cpu(config.server_pid)
    machine_after = _machine_times()
    machine = {key: machine_after[key] - machine_before[key] for key in machine_after}
    for pipe in pipes:
        pipe.send(("report", 0, 0))
    reports = [_recv(pipe, 60, "report") for pipe in pipes]
    by_role: dict[str, float] = collections.defaultdict(float)
    for pid, (role, after) in cpu_after.items():
        by_role[role] += after - cpu_before.get(pid, (role, 0.0))[1]
    server_cpu = sum(by_role.values()) if config.server_pid else None
    return _merge(
        config,
        total=total,
        connected=connected,
        connect_seconds=connect_seconds,
        window=window,
        server_cpu=server_cpu,
        server_processes=len(cpu_after),
        server_cpu_by_role=dict(by_role),
        machine=machine,
        rss_idle=rss_idle,
        rss_connected=rss_connected,
        drained=drained,
        reports=reports,
    )


def percentile(histogram: list[tuple[int, int]], count: int, fraction: float) -> float:
    """The ``fraction`` quantile, in ms, of a sorted (value, count) histogram in 10 µs units."""
    if count == 0:
        return math.nan
    rank = max(1, math.ceil(fraction * count))
    seen = 0
    for value, n in histogram:
        seen += n
        if seen >= rank:
            return value * LATENCY_UNIT_NS / 1e6
    return histogram[-1][0] * LATENCY_UNIT_NS / 1e6


def _merge(config: LoadConfig, **m: Any) -> dict[str, Any]:
    total, connected, reports = m["total"], m["connected"], m["reports"]
    clients = [client for report in reports for client in report["clients"]]
    received = sum(c["received"] for c in clients)
    duplicates = sum(c["duplicates"] for c in clients)
    duplicates += sum(r["tag_duplicates_reference"] for r in reports)
    # Each client must get every message of its room (one room without ``--rooms``), and the
    # clients of a room that got them all, one identical order of them.
    room_totals = room_messages(config)
    expected = sum(room_totals[c["room"]] for c in clients)
    complete = [c for c in clients if c["received"] - c["duplicates"] == room_totals[c["room"]]]
    orders: dict[int, set[tuple[int, int]]] = collections.defaultdict(set)
    for c in complete:
        orders[c["room"]].add(tuple(c["order_key"]))
    room_loss: Counter[int] = Counter()
    for c in clients:
        room_loss[c["room"]] += room_totals[c["room"]] - (c["received"] - c["duplicates"])
    latency: Counter[int] = Counter()
    for report in reports:
        latency.update({int(k): v for k, v in report["latency"].items()})
    histogram = sorted(latency.items())
    count = sum(latency.values())
    workers = Counter(c["worker"] for c in clients)
    loadgen_cpu = sum(d["cpu"] for d in m["drained"])
    result = {
        "config": dataclasses.asdict(config),
        "clients_connected": connected,
        "connect_failures": _sum_counters(r["connect_failures"] for r in reports),
        "connect_seconds": m["connect_seconds"],
        "connect_rate": connected / m["connect_seconds"] if m["connect_seconds"] > 0 else math.nan,
        "messages_sent": total,
        "unsent": sum(r["unsent"] for r in reports),
        "sender_max_late_ms": max(d["max_late_ms"] for d in m["drained"]),
        "expected": expected,
        "received": received,
        "duplicates": duplicates,
        "loss": expected - (received - duplicates),
        "clients_complete": len(complete),
        "clients_closed": Counter(str(c["close_code"]) for c in clients if c["close_code"]),
        "ids_increasing": all(c["increasing"] for c in clients),
        # Among the clients that got every message (None if none did); per room with rooms.
        "identical_order": all(len(keys) == 1 for keys in orders.values()) if complete else None,
        "order_groups": sum(len(keys) for keys in orders.values()),
        # Rooms (``--rooms``): how many, the fewest and most messages a room got, the rooms
        # with a loss, and frames of another room that reached a client (each a failure).
        "rooms": config.rooms,
        "room_messages_min_max": (min(room_totals), max(room_totals)),
        "rooms_with_loss": sum(1 for loss in room_loss.values() if loss),
        "leaks": sum(c["leaks"] for c in clients),
        "clients_with_leaks": sum(1 for c in clients if c["leaks"]),
        "latency_ms": {
            "p50": percentile(histogram, count, 0.50),
            "p90": percentile(histogram, count, 0.90),
            "p99": percentile(histogram, count, 0.99),
            "max": histogram[-1][0] * LATENCY_UNIT_NS / 1e6 if histogram else math.nan,
        },
        "window_seconds": m["window"],
        "deliveries_per_second": received / m["window"] if m["window"] > 0 else math.nan,
        "offered_deliveries_per_second": config.rate * connected,
        "server_cpu_seconds": m["server_cpu"],
        "server_processes": m["server_processes"],
        "server_cpu_by_role": m["server_cpu_by_role"],
        "server_cpu_us_per_delivery": (
            m["server_cpu"] / received * 1e6 if m["server_cpu"] is not None and received else None
        ),
        "loadgen_cpu_seconds": loadgen_cpu,
        "irq_cpu_cores": m["machine"]["irq"] / m["window"] if m["window"] > 0 else math.nan,
        "steal_cpu_cores": m["machine"]["steal"] / m["window"] if m["window"] > 0 else math.nan,
        # Everything else the machine did meanwhile (other tenants, the coordinator): noise.
        "other_cpu_cores": (
            (m["machine"]["processes"] - loadgen_cpu - (m["server_cpu"] or 0.0)) / m["window"]
            if m["window"] > 0
            else math.nan
        ),
        "loadgen_cpu_us_per_delivery": loadgen_cpu / received * 1e6 if received else None,
        "server_rss_idle": m["rss_idle"],
        "server_rss_connected": m["rss_connected"],
        "rss_per_connection": (
            m["rss_connected"] / connected if m["rss_connected"] and connected else None
        ),
        "rss_delta_per_connection": (
            (m["rss_connected"] - m["rss_idle"]) / connected
            if m["rss_connected"] and m["rss_idle"] and connected
            else None
        ),
        "batch_selected": sum(1 for c in clients if c["batch"]),
        # Browser mode: connections that negotiated permessage-deflate, and while measuring,
        # the compressed messages received and their bytes on the wire / inflated.
        "deflate_negotiated": sum(r["deflate_negotiated"] for r in reports),
        "deflated_messages": sum(r["deflated_messages_measuring"] for r in reports),
        "deflate_wire_ratio": (
            sum(r["deflated_bytes_measuring"] for r in reports)
            / sum(r["inflated_bytes_measuring"] for r in reports)
            if sum(r["inflated_bytes_measuring"] for r in reports)
            else None
        ),
        "clients_per_worker": dict(sorted(workers.items())),
        "foreign_messages": sum(c["foreign"] for c in clients),
        # Frames read while measuring (any frame), and chat messages per frame.
        "frames_received": sum(r["frames_measuring"] for r in reports),
        "messages_per_frame": (
            received / sum(r["frames_measuring"] for r in reports)
            if sum(r["frames_measuring"] for r in reports)
            else math.nan
        ),
        # Presence frames per client: while the clients connected, and while measuring.
        "presence_per_client_connecting": (
            sum(r["presence_connecting"] for r in reports) / connected if connected else 0.0
        ),
        "presence_per_client_measuring": (
            sum(r["presence_measuring"] for r in reports) / connected if connected else 0.0
        ),
        "error_frames": _sum_counters(r["error_frames"] for r in reports),
        "anomalies": {
            "binary_frames": sum(r["binary_frames"] for r in reports),
            "bad_json": sum(r["bad_json"] for r in reports),
            "bad_deflate": sum(r["bad_deflate"] for r in reports),
        },
    }
    result["order_ok"] = result["ids_increasing"] and result["identical_order"] is not False
    result["complete"] = (
        connected == config.clients
        and result["loss"] == 0
        and result["duplicates"] == 0
        and result["leaks"] == 0
    )
    result["held"] = held(result)
    return result


def _sum_counters(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


#: The sweep's limit: a rate holds with zero loss and p99 at most this.
SWEEP_P99_LIMIT_MS = 250.0


def held(result: dict[str, Any]) -> bool:
    """Every client connected and got every message once, in order, with p99 within limit."""
    return bool(
        result["complete"]
        and result["order_ok"]
        and result["latency_ms"]["p99"] <= SWEEP_P99_LIMIT_MS
    )


class Sweep:
    """The state of one sweep: the rate to try next, the best step so far, every step.

    The rate rises by ``factor`` after each step that holds, until one fails. Then ``refine``
    steps narrow the gap between the best rate and the one that failed, each trying their
    geometric middle (with x1.5 and 3 of them: to within about x1.05), so that two servers'
    results are not a whole x1.5 apart only because of the grid. If the very first step fails,
    the sweep steps down instead (not below ``floor``) until one holds, then refines the same
    way: a sweep may start high to save time without that costing the result.
    """

    def __init__(
        self,
        start_rate: float,
        factor: float = 1.5,
        floor: float | None = None,
        refine: int = 3,
    ):
        self.rate = start_rate
        self.factor = factor
        self.floor = start_rate if floor is None else floor
        self.best: dict[str, Any] | None = None
        self.steps: list[dict[str, Any]] = []
        self.done = False
        self._refine_left = refine
        #: The lowest rate that failed, once one has.
        self._failed_at: float | None = None

    def record(self, result: dict[str, Any]) -> None:
        self.steps.append(result)
        rate = self.rate
        if result["held"]:
            self.best = result
        else:
            self._failed_at = rate
        if self._failed_at is None:
            self.rate = rate * self.factor
        elif self.best is None:
            # Nothing held yet: step down, if the floor allows.
            if rate / self.factor >= self.floor * 0.999:
                self.rate = rate / self.factor
            else:
                self.done = True
        elif self._refine_left > 0:
            self._refine_left -= 1
            self.rate = math.sqrt(self.best["config"]["rate"] * self._failed_at)
        else:
            self.done = True

    def outcome(self) -> dict[str, Any]:
        return {"best": self.best, "steps": self.steps}


def sweep(
    config: LoadConfig,
    start_rate: float,
    factor: float = 1.5,
    max_steps: int = 30,
    floor: float | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Sweep the rate against one server (see ``Sweep``); returns ``best`` and ``steps``."""
    state = Sweep(start_rate, factor, floor)
    for _ in range(max_steps):
        if state.done:
            break
        if config.server_pid and state.steps:
            wait_quiet(config.server_pid)
        result = run(dataclasses.replace(config, rate=state.rate))
        if log:
            log(f"    rate {state.rate:9.1f} msg/s: " + one_line(result))
        state.record(result)
    return state.outcome()


def one_line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["server_cpu_us_per_delivery"]
    return (
        f"{r['received']}/{r['expected']} delivered, loss {r['loss']}, dup {r['duplicates']}, "
        f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms, "
        f"{r['deliveries_per_second']:,.0f} deliveries/s, "
        + (f"server {cpu:.2f} µs/delivery, " if cpu is not None else "")
        + f"loadgen {r['loadgen_cpu_us_per_delivery'] or 0:.2f} µs/delivery, "
        f"other {r['other_cpu_cores']:.2f} cores, order {_order_text(r)}"
        + (f", {r['rooms']} rooms, {r['leaks']} frames of another room" if r.get("rooms") else "")
        + (f", deflate {_deflate_text(r)}" if r["config"]["browser"] else "")
        + (f", clients per worker {spread}" if (spread := worker_spread(r)) else "")
        + ("" if r["held"] else f" [{', '.join(failures(r))}]")
    )


def worker_spread(r: dict[str, Any]) -> str:
    """How the clients spread over the server's workers, most loaded first: "83/41/40/36"."""
    counts = sorted(r.get("clients_per_worker", {}).values(), reverse=True)
    return "/".join(map(str, counts)) if len(counts) > 1 else ""


def busiest_worker_share(r: dict[str, Any]) -> float:
    """The fraction of the clients that the most loaded worker holds."""
    counts = r.get("clients_per_worker", {}).values()
    return max(counts) / sum(counts) if counts else math.nan


def failures(r: dict[str, Any]) -> list[str]:
    """Why a measurement did not hold, in words."""
    reasons = []
    if r["clients_connected"] < r["config"]["clients"]:
        reasons.append(f"{r['clients_connected']}/{r['config']['clients']} connected")
    if r["loss"]:
        reasons.append(f"loss {r['loss']:,}")
    if r["duplicates"]:
        reasons.append(f"{r['duplicates']:,} duplicates")
    if not r["order_ok"]:
        reasons.append("order broken")
    if r.get("leaks"):
        reasons.append(f"{r['leaks']:,} frames of another room ({r['clients_with_leaks']} clients)")
    if not r["latency_ms"]["p99"] <= SWEEP_P99_LIMIT_MS:
        reasons.append(f"p99 over {SWEEP_P99_LIMIT_MS:.0f} ms")
    return reasons


def _deflate_text(r: dict[str, Any]) -> str:
    """permessage-deflate negotiated on N of C connections, in short: "200/200"."""
    return f"{r['deflate_negotiated']}/{r['clients_connected']}"


def _order_text(r: dict[str, Any]) -> str:
    if not r["order_ok"]:
        return "BROKEN"
    return "ok" if r["identical_order"] else "ids increasing (no client got every message)"


def summarize(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lines = [
        f"clients        {r['clients_connected']} connected in {r['connect_seconds']:.2f} s "
        f"({r['connect_rate']:,.0f}/s); per worker {r['clients_per_worker']}; "
        f"batch selected by {r['batch_selected']}",
        f"messages       {r['messages_sent']} sent (sender at most "
        f"{r['sender_max_late_ms']:.1f} ms late), {r['unsent']} unsent",
        f"deliveries     expected {r['expected']}, received {r['received']}, "
        f"loss {r['loss']}, duplicates {r['duplicates']}",
        f"order          ids increasing: {r['ids_increasing']}; one identical order"
        + (" per room" if r["rooms"] else "")
        + f": {r['identical_order']} ({r['clients_complete']} complete clients)",
        f"latency        p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"max {lat['max']:.2f} ms",
        f"frames         {r['frames_received']:,} read while measuring, "
        f"{r['messages_per_frame']:.2f} messages per frame",
        f"throughput     {r['deliveries_per_second']:,.0f} deliveries/s over "
        f"{r['window_seconds']:.2f} s",
        f"loadgen CPU    {r['loadgen_cpu_seconds']:.2f} s; other processes used "
        f"{r['other_cpu_cores']:.2f} cores meanwhile; interrupts {r['irq_cpu_cores']:.2f} "
        f"cores, stolen by the hypervisor {r['steal_cpu_cores']:.2f} cores",
    ]
    if r["server_cpu_seconds"] is not None:
        per = r["server_cpu_us_per_delivery"]
        lines.append(
            f"server CPU     {r['server_cpu_seconds']:.2f} s over {r['server_processes']} "
            f"processes = "
            + (f"{per:.2f} µs per delivery" if per is not None else "-")
            + " ("
            + ", ".join(
                f"{role} {cpu:.2f} s" for role, cpu in sorted(r["server_cpu_by_role"].items())
            )
            + ")"
        )
    if r["config"]["browser"]:
        ratio = r["deflate_wire_ratio"]
        lines.append(
            f"deflate        permessage-deflate negotiated on {r['deflate_negotiated']} of "
            f"{r['clients_connected']} connections (browser clients)"
            + (
                f"; {r['deflated_messages']:,} compressed messages read while measuring, "
                f"{ratio:.0%} of their inflated size on the wire"
                if ratio is not None
                else ""
            )
        )
    else:
        lines.append("deflate        not offered (plain clients)")
    if r["rooms"]:
        low, high = r["room_messages_min_max"]
        lines.append(
            f"rooms          {r['rooms']}, {low} to {high} messages each; rooms with a loss "
            f"{r['rooms_with_loss']}; frames of another room received {r['leaks']} "
            f"({r['clients_with_leaks']} clients)"
        )
    if r["server_rss_connected"]:
        lines.append(
            f"server RSS     {r['server_rss_connected'] / 2**20:.1f} MiB connected = "
            f"{r['rss_per_connection'] / 1024:.1f} KiB per connection "
            f"({(r['rss_delta_per_connection'] or 0) / 1024:.1f} KiB above idle)"
        )
    if r["presence_per_client_connecting"] or r["presence_per_client_measuring"]:
        lines.append(
            f"presence       {r['presence_per_client_connecting']:.1f} frames per client while "
            f"connecting, {r['presence_per_client_measuring']:.1f} while measuring"
        )
    if r["clients_closed"]:
        lines.append(f"closed         {r['clients_closed']}")
    if r["connect_failures"] or r["error_frames"] or any(r["anomalies"].values()):
        lines.append(
            f"problems       connect {r['connect_failures']} errors {r['error_frames']} "
            f"{r['anomalies']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/chat")
    parser.add_argument("-c", "--clients", type=int, default=200)
    parser.add_argument("-s", "--senders", type=int, default=10)
    parser.add_argument("-r", "--rate", type=float, default=100.0, help="messages/s in total")
    parser.add_argument("-t", "--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--batch", action="store_true", help=f"ask for {BATCH_SUBPROTOCOL}")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--pad", type=int, default=0, help="extra characters per message")
    parser.add_argument("--server-pid", type=int, help="measure this process tree's CPU")
    parser.add_argument("--sweep", action="store_true", help="raise -r by x1.5 until it fails")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio even if uvloop")
    parser.add_argument(
        "--browser", action="store_true", help="offer permessage-deflate as Chromium does"
    )
    parser.add_argument(
        "--rooms", type=int, default=0, help="client i joins ?room=room-<i %% N> (0: no room)"
    )
    args = parser.parse_args(argv)
    config = LoadConfig(
        host=args.host, port=args.port, path=args.path, clients=args.clients,
        senders=args.senders, rate=args.rate, duration=args.duration, drain=args.drain,
        batch=args.batch, procs=args.procs, pad=args.pad, server_pid=args.server_pid,
        uvloop=not args.no_uvloop, browser=args.browser, rooms=args.rooms,
    )  # fmt: skip
    if args.sweep:
        outcome = sweep(config, args.rate, log=lambda line: print(line, flush=True))
        best = outcome["best"]
        if best is None:
            print("no rate held")
        else:
            print(
                f"highest rate that held: {best['config']['rate']:.1f} msg/s = "
                f"{best['offered_deliveries_per_second']:,.0f} deliveries/s"
            )
            print(summarize(best))
        if args.json:
            json.dump(outcome, sys.stdout, indent=1, default=str)
        return
    result = run(config)
    print(summarize(result))
    if args.json:
        json.dump(result, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
