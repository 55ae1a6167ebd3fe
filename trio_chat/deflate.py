"""WebSocket compression (permessage-deflate, RFC 7692) as the chat wants it: wsproto
extensions, no I/O.

Every browser offers permessage-deflate, and Hypercorn accepts whatever extension object it is
given for the offer (``hypercorn_hook`` hands it one of these):

- ``DeclinedPerMessageDeflate`` (the default, ``TRIO_CHAT_WEBSOCKET_COMPRESSION=off``) answers
  the offer with nothing, so the connection carries plain frames. Chat frames are small (a
  message is at most 4 KiB, most are a few hundred bytes): compression saves little on them,
  while a zlib compressor and decompressor per connection cost several times a connection's
  memory, and compressing every delivery once per recipient costs CPU.
- ``BoundedPerMessageDeflate`` (``on``) accepts it, with two differences from wsproto's own
  ``PerMessageDeflate``:

  * **Inflation is bounded.** wsproto inflates whatever a frame holds, however far it expands,
    before Hypercorn checks ``websocket_max_message_size``: a few KiB on the wire can become
    hundreds of MiB in the worker. Here a message is never inflated past
    ``UTF8_MAX_BYTES_PER_CHAR`` bytes per character of the limit (the most that a text message
    within the limit can take), and a message that goes past it hands Hypercorn just enough to
    trip its own limit check, so the client is closed with 1009 (message too big), exactly as
    for a plain frame over the limit. A compressed message is thus held to the very limit of a
    plain one, and no message costs more than ``4 x websocket_max_message_size`` bytes of
    inflated data (256 KiB with the shipped hypercorn.toml).
  * **Its compressor is sized for chat frames.** What the server sends is compressed at zlib's
    fastest level in a 4 KiB window (a whole maximal message): on a sample of chat frames that
    took 3.4 µs a frame instead of 6.3 µs and left 28 % of the bytes instead of 21 %, with a
    compressor of 38 KiB per connection instead of 262 KiB (zlib's defaults, which wsproto
    uses). Deflate data made with a smaller window than the one negotiated is valid for any
    peer, so this needs no negotiation. The context is kept between messages: the JSON keys
    and names that every frame repeats are what compresses best (compressing each frame on
    its own left 81 % of the bytes, at twice the CPU). What clients send is inflated without
    context (``client_no_context_takeover``, which a server may always ask for): client
    messages are few and small, so the decompressor is freed after each message instead of
    living as long as the connection.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

#: The extension's name in ``Sec-WebSocket-Extensions``.
EXTENSION_NAME = "permessage-deflate"
#: zlib's fastest level: half the CPU of the default level on chat frames.
COMPRESSION_LEVEL = 1
#: 4 KiB of window (2**12): a whole maximal chat message, and the frames just before it.
WINDOW_BITS = 12
#: zlib's hash memory level (1-9, default 8): 16 KiB of hash table for a 4 KiB window.
MEMORY_LEVEL = 5
#: The longest a character can be in UTF-8: Hypercorn counts a text message's limit in
#: characters, inflation is counted in bytes.
UTF8_MAX_BYTES_PER_CHAR = 4
#: The flush marker a sender strips from the end of every compressed message (RFC 7692, 7.2.2).
_MESSAGE_TAIL = b"\x00\x00\xff\xff"


class DeclinedPerMessageDeflate(Extension):
    """permessage-deflate, declined: the handshake answers the offer with nothing."""

    name = EXTENSION_NAME

    def offer(self) -> bool:
        return False  # A server's extension: it never offers.

    def accept(self, offer: str) -> None:
        return None

    def enabled(self) -> bool:
        return False


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate with inflation bounded by ``max_message_chars`` (Hypercorn's
    ``websocket_max_message_size``) and a compressor sized for chat frames."""

    def __init__(self, max_message_chars: int) -> None:
        super().__init__(client_no_context_takeover=True)
        #: Inflating stops one byte past this; see ``_over_limit_payload``.
        self.max_inflated_bytes = UTF8_MAX_BYTES_PER_CHAR * (max_message_chars + 2)
        self._inflated = 0
        self._over_limit = False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            # A ping, pong or close may come between two frames of a message (wsproto's own
            # extension forgets then that the message is compressed): it leaves the message's
            # state alone, and is never inflated.
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        if self._inbound_compressed is None:  # The first frame of a message.
            self._inflated = 0
            self._over_limit = False
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible:
            return None  # More of the message to come, or a control frame.
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            return None
        tail = self._inflate(_MESSAGE_TAIL)
        # No context is kept between client messages (client_no_context_takeover).
        self._decompressor = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        if self._over_limit:
            return b""  # The rest of a message already refused: not inflated at all.
        assert self._decompressor is not None
        budget = self.max_inflated_bytes - self._inflated
        try:
            # One byte past the budget says the message is over it; the rest of the input stays
            # in ``unconsumed_tail``, never inflated.
            inflated = self._decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if self._inflated > self.max_inflated_bytes:
            self._over_limit = True
            self._decompressor = None
        return inflated

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and self._compressible_opcode(opcode):
            # Made here, wsproto's own code uses it as it would its own (which has zlib's
            # default level and the largest window the client allows).
            window_bits = min(WINDOW_BITS, self.server_max_window_bits)
            self._compressor = zlib.compressobj(
                COMPRESSION_LEVEL, zlib.DEFLATED, -window_bits, MEMORY_LEVEL
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)
