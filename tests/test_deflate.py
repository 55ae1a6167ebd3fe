"""permessage-deflate as the chat wants it (``trio_chat.deflate``), sans I/O: a wsproto server
connection with the chat's extension, as Hypercorn builds it, against a wsproto client that
offers the extension as Chromium does."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event, Ping, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake

from trio_chat.deflate import (
    UTF8_MAX_BYTES_PER_CHAR,
    WINDOW_BITS,
    BoundedPerMessageDeflate,
    DeclinedPerMessageDeflate,
)

from wsclient import (
    CHROMIUM_EXTENSION_OFFER,
    ChromiumPerMessageDeflate,
    deflated_message,
    text_frame,
)

MIB = 1 << 20
LIMIT = 1000  # characters: the server's websocket_max_message_size in these tests


@dataclass
class Link:
    """Both ends of one negotiated WebSocket connection."""

    client: Connection
    server: Connection
    answer: str | None

    def client_sends(self, *events: Event) -> list[Event]:
        """What the server's wsproto makes of the client's events."""
        for event in events:
            self.server.receive_data(self.client.send(event))
        return list(self.server.events())

    def server_sends(self, *events: Event) -> list[Event]:
        for event in events:
            self.client.receive_data(self.server.send(event))
        return list(self.client.events())


def negotiate(server_extension: Extension, offer: str = CHROMIUM_EXTENSION_OFFER) -> Link:
    """What Hypercorn does with the offer (``Handshake.accept``), and the client's side of it."""
    answer = server_extensions_handshake([offer], [server_extension])
    server = Connection(ConnectionType.SERVER, [server_extension])
    client_extensions: list[Extension] = []
    if answer is not None:
        client_extension = ChromiumPerMessageDeflate()
        client_extension.finalize(answer.decode())
        client_extensions.append(client_extension)
    client = Connection(ConnectionType.CLIENT, client_extensions)
    return Link(client, server, answer.decode() if answer is not None else None)


def texts(events: Sequence[Event]) -> list[str]:
    """Whole text messages in ``events``, their parts joined."""
    messages, parts = [], []
    for event in events:
        if isinstance(event, TextMessage):
            parts.append(event.data)
            if event.message_finished:
                messages.append("".join(parts))
                parts = []
    return messages


def test_declined_extension_answers_a_browser_offer_with_nothing_and_frames_stay_plain() -> None:
    link = negotiate(DeclinedPerMessageDeflate())

    assert link.answer is None
    assert texts(link.client_sends(TextMessage("hello"))) == ["hello"]
    raw = link.server.send(TextMessage("hi there"))
    assert raw[0] & 0x40 == 0  # RSV1 clear: not compressed
    assert b"hi there" in raw


def test_bounded_extension_accepts_with_no_client_context_and_round_trips_both_ways() -> None:
    link = negotiate(BoundedPerMessageDeflate(LIMIT))

    assert link.answer is not None
    assert link.answer.startswith("permessage-deflate")
    assert "client_no_context_takeover" in link.answer.split("; ")
    frames = [f'{{"type":"message","id":{i},"sender":"ann","message":"hi {i}"}}' for i in range(5)]
    assert texts(link.server_sends(*map(TextMessage, frames))) == frames
    assert texts(link.client_sends(*map(TextMessage, frames))) == frames


def test_the_server_keeps_its_context_so_repeated_frames_shrink() -> None:
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    frame = '{"type":"message","id":1,"sender":"ann","message":"the same words again"}'

    first = link.server.send(TextMessage(frame))
    second = link.server.send(TextMessage(frame))

    assert first[0] & 0x40 and second[0] & 0x40  # both compressed
    assert len(second) < len(first) / 2


def test_the_server_compresses_within_a_smaller_window_a_client_asks_for() -> None:
    offer = "permessage-deflate; client_max_window_bits; server_max_window_bits=9"
    link = negotiate(BoundedPerMessageDeflate(LIMIT), offer)
    frames = [f"{i} " + "abcdefghij" * 60 for i in range(3)]  # each longer than 2**9 bytes

    assert "server_max_window_bits=9" in (link.answer or "")
    assert texts(link.server_sends(*map(TextMessage, frames))) == frames


def test_a_message_at_the_limit_passes_even_in_four_byte_characters() -> None:
    """A compressed message is held to the same limit as a plain one: LIMIT characters."""
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    widest = "\U0001f600" * LIMIT  # LIMIT characters, UTF8_MAX_BYTES_PER_CHAR * LIMIT bytes

    assert len(widest.encode()) == UTF8_MAX_BYTES_PER_CHAR * LIMIT
    assert texts(link.client_sends(TextMessage(widest))) == [widest]


@pytest.mark.parametrize("inflated_mib", [1, 32])
def test_a_message_over_the_limit_is_inflated_no_further_than_its_bound(
    inflated_mib: int,
) -> None:
    """Hypercorn counts what it is handed and closes with 1009 past its limit: it is handed
    more than LIMIT characters, and nothing past the extension's bound is ever inflated."""
    extension = BoundedPerMessageDeflate(LIMIT)
    link = negotiate(extension)
    bomb = deflated_message(*[b" " * MIB] * inflated_mib)  # a thousandth of that on the wire

    link.server.receive_data(text_frame(bomb, compressed=True))
    handed = "".join(event.data for event in link.server.events() if isinstance(event, TextMessage))

    assert len(handed) > LIMIT
    assert len(handed.encode()) == extension.max_inflated_bytes + 1


def test_the_rest_of_a_message_over_the_limit_is_not_inflated_and_the_next_one_is() -> None:
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    head = deflated_message(b"x" * (2 * UTF8_MAX_BYTES_PER_CHAR * LIMIT))

    link.server.receive_data(text_frame(head, compressed=True, fin=False))
    link.server.receive_data(text_frame(deflated_message(b"y" * 10_000), first=False))
    handed = [event for event in link.server.events() if isinstance(event, TextMessage)]

    assert "y" not in "".join(event.data for event in handed)
    assert handed[-1].message_finished
    # No context is kept between client messages, so the next one inflates from scratch.
    assert texts(link.client_sends(TextMessage("next"))) == ["next"]


def test_a_control_frame_between_two_frames_of_a_compressed_message_leaves_it_whole() -> None:
    """wsproto's own extension forgets that the message is compressed after a ping (and,
    after a ping between two messages, that the next one is)."""
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(b"hello, ") + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = (compressor.compress(b"world") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    ping = bytes([0x89, 0x80]) + b"\x00\x00\x00\x00"

    link.server.receive_data(ping)
    link.server.receive_data(text_frame(first, compressed=True, fin=False))
    link.server.receive_data(ping)
    link.server.receive_data(text_frame(second, first=False))
    events = list(link.server.events())

    assert texts(events) == ["hello, world"]
    assert sum(isinstance(event, Ping) for event in events) == 2


def test_corrupt_deflate_data_is_refused_as_invalid_payload() -> None:
    link = negotiate(BoundedPerMessageDeflate(LIMIT))

    link.server.receive_data(text_frame(b"\xff\xff\xff\xff", compressed=True))
    [closing] = list(link.server.events())

    assert getattr(closing, "code", None) == CloseReason.INVALID_FRAME_PAYLOAD_DATA


def test_the_compressor_uses_the_small_window() -> None:
    """What the server sends inflates with a 2**WINDOW_BITS window: it never refers further
    back (a larger window would fail with 'invalid distance too far back')."""
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    inflater = zlib.decompressobj(-WINDOW_BITS)
    text = "".join(f"{i:05d}" for i in range(4000)) * 2  # repeats 20,000 characters apart

    raw = link.server.send(TextMessage(text))
    short_length = raw[1] & 0x7F
    payload = raw[{126: 4, 127: 10}.get(short_length, 2) :]

    assert inflater.decompress(payload + b"\x00\x00\xff\xff").decode() == text


@given(
    st.lists(
        st.tuples(st.text(max_size=300), st.integers(min_value=1, max_value=3), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_what_either_side_sends_arrives_unchanged(
    messages: list[tuple[str, int, bool]],
) -> None:
    """Whole or in fragments, with pings between fragments and messages or not, in both
    directions."""
    link = negotiate(BoundedPerMessageDeflate(LIMIT))
    sent = [text for text, _, _ in messages]
    to_server: list[Event] = []
    for text, fragments, with_ping in messages:
        size = -(-len(text) // fragments) or 1
        parts = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        for index, part in enumerate(parts):
            if with_ping:
                to_server.append(Ping(b"p"))
            to_server.append(TextMessage(part, message_finished=index == len(parts) - 1))

    assert texts(link.client_sends(*to_server)) == sent
    assert texts(link.server_sends(*map(TextMessage, sent))) == sent
