"""The chat protocol, sans I/O: parse and validate what clients send, encode what they receive.

Nothing here touches a socket, a channel or the clock, so every rule is a plain function call in
the tests. Frames are JSON text; docs/protocol.md is the reader's version of this module.

Invariants:
- ``parse_chat_frame`` either returns a valid ``ChatMessage`` or raises ``ProtocolError``; it
  never lets another exception out, whatever the input (deep nesting, huge numbers, lone
  surrogates, binary data).
- A chat message is encoded once (``encode_chat_body``) where it enters the system and stamped
  once (``stamp_chat_frame``) by the hub; every subscriber is sent the very same string.
- Every string we emit is valid UTF-8 JSON on one line, so frames can be joined with ``\\n``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import unicodedata
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs


class CloseCode(enum.IntEnum):
    """WebSocket close codes we send (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    #: The worker is shutting down.
    GOING_AWAY = 1001
    #: The client broke a rule that is not about a single frame (e.g. too many connections).
    POLICY_VIOLATION = 1008
    #: A frame over Hypercorn's ``websocket_max_message_size``; Hypercorn sends this itself.
    MESSAGE_TOO_BIG = 1009
    #: Received, never sent: the peer closed without a code, or the connection just dropped.
    NO_STATUS = 1005
    ABNORMAL = 1006
    INTERNAL_ERROR = 1011
    #: The server is restarting; come back shortly.
    SERVICE_RESTART = 1012
    #: The client fell behind: its buffer filled up, so it was dropped to protect the others.
    TRY_AGAIN_LATER = 1013


class ErrorCode(enum.StrEnum):
    """The ``code`` of an error frame: what was wrong with the frame the client sent."""

    BINARY_FRAME = "binary_frame"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_SENDER = "empty_sender"
    EMPTY_MESSAGE = "empty_message"
    SENDER_TOO_LONG = "sender_too_long"
    MESSAGE_TOO_LONG = "message_too_long"
    INVALID_TEXT = "invalid_text"
    #: The message was valid but could not be published: the hub link is down.
    HUB_UNAVAILABLE = "hub_unavailable"
    #: ``?since=`` was not an id the server gave (garbage, or from the future: ids restarted).
    INVALID_RESUME = "invalid_resume"
    #: ``?name=`` broke the rules of a sender name; the connection goes on without a name.
    INVALID_NAME = "invalid_name"
    #: More frames than ``TRIO_CHAT_RATE`` allows; the frame was dropped, the connection stays.
    RATE_LIMITED = "rate_limited"


class ProtocolError(Exception):
    """A client frame we refuse; answered with an error frame to that client alone."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_sender_chars: int = 64
    max_message_bytes: int = 4096

    @property
    def max_frame_chars(self) -> int:
        """Longest frame text that could hold a valid message.

        JSON escapes cost at most six characters per character (``\\u001f``), so anything longer
        is refused before it is parsed: the parser never sees megabytes of junk.
        """
        return 6 * (self.max_message_bytes + self.max_sender_chars) + 256


@dataclasses.dataclass(frozen=True, slots=True)
class ChatMessage:
    sender: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Rename:
    """The client now goes by ``name`` (in presence); nothing is broadcast."""

    name: str


# Line breaks and tabs are fine in a message; other control characters are not (they only serve
# to confuse terminals and logs). Names are a single line of printable text.
_ALLOWED_CONTROLS_IN_MESSAGE = frozenset("\n\t")
# In names, also no line or paragraph separators, no bidirectional overrides or isolates,
# which would let one name pass for another ("evil" shown as "live"), and no characters that
# show as nothing (zero-width space, word joiner and invisible operators, byte order mark, soft
# hyphen, Mongolian vowel separator), which would let "ann" and "a\u200bnn" look the same. The
# zero-width joiner and non-joiner stay: emoji sequences and some scripts need them.
_FORBIDDEN_IN_NAMES = frozenset("\u2028\u2029\u200e\u200f\u061c\u200b\ufeff\u00ad\u180e") | (
    frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A)]))
)


def parse_chat_frame(text: str | None, data: bytes | None, limits: Limits) -> ChatMessage | Rename:
    """Validate one client frame (the ``text`` or ``bytes`` of an ASGI ``websocket.receive``)."""
    if text is None:
        raise ProtocolError(
            ErrorCode.BINARY_FRAME, "Binary frames are not accepted: send JSON as a text frame."
        )
    if len(text) > limits.max_frame_chars:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"Frame too long: a message may be at most {limits.max_message_bytes} bytes.",
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays; ValueError also covers oversized integers.
        raise ProtocolError(ErrorCode.INVALID_JSON, "The frame is not valid JSON.") from None
    if not isinstance(document, dict):
        raise ProtocolError(
            ErrorCode.NOT_AN_OBJECT, 'Send a JSON object: {"sender": ..., "message": ...}.'
        )
    kind = document.get("type", "message")
    if kind == "rename":
        name = _string_field(document, "name").strip()
        _check_sender(name, limits)
        return Rename(name=name)
    if kind != "message":
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {_clip(kind)}.")
    sender = _string_field(document, "sender").strip()
    message = _string_field(document, "message")
    _check_sender(sender, limits)
    _check_message(message, limits)
    return ChatMessage(sender=sender, message=message)


def _string_field(document: dict[str, Any], name: str) -> str:
    if name not in document:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f'The field "{name}" is missing.')
    value = document[name]
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.WRONG_TYPE, f'The field "{name}" must be a string.')
    return value


def _check_sender(sender: str, limits: Limits) -> None:
    if not sender:
        raise ProtocolError(ErrorCode.EMPTY_SENDER, "The sender name is empty.")
    if len(sender) > limits.max_sender_chars:
        raise ProtocolError(
            ErrorCode.SENDER_TOO_LONG,
            f"The sender name is longer than {limits.max_sender_chars} characters.",
        )
    clean = _is_clean_text(sender, allowed_controls=frozenset())
    if not clean or not _FORBIDDEN_IN_NAMES.isdisjoint(sender):
        raise ProtocolError(
            ErrorCode.INVALID_TEXT, "The sender name has control or invalid characters."
        )


def _check_message(message: str, limits: Limits) -> None:
    if not message.strip():
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, "The message is empty.")
    if not _is_clean_text(message, allowed_controls=_ALLOWED_CONTROLS_IN_MESSAGE):
        raise ProtocolError(
            ErrorCode.INVALID_TEXT, "The message has control or invalid characters."
        )
    if len(message.encode("utf-8")) > limits.max_message_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"The message is longer than {limits.max_message_bytes} bytes.",
        )


def _is_clean_text(text: str, *, allowed_controls: frozenset[str]) -> bool:
    if text.isprintable():  # The fast path: no control, format or surrogate characters at all.
        return True
    for char in text:
        if char in allowed_controls:
            continue
        category = unicodedata.category(char)
        # Cc: control characters; Cs: lone surrogates, which cannot be encoded as UTF-8 and would
        # break the send to every client. Other non-printables (spaces, format marks, private use
        # characters) are legitimate in text.
        if category in ("Cc", "Cs"):
            return False
    return True


def _clip(value: object, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def encode_chat_body(chat: ChatMessage) -> str:
    """The message as it travels to the hub: a JSON object without ``id`` and ``ts`` yet."""
    return _dumps({"sender": chat.sender, "message": chat.message})


def stamp_chat_frame(message_id: int, ts_ms: int, body: str) -> str:
    """Give an encoded body its place in the total order; done once, by the hub.

    ``body`` is a JSON object made by ``encode_chat_body``, so splicing the new keys after its
    opening brace is safe and saves decoding and encoding it again.
    """
    return f'{{"type":"message","id":{message_id},"ts":{ts_ms},{body[1:]}'


def welcome_frame(worker_pid: int, limits: Limits) -> str:
    """The first frame; ``limits`` tell a client what will be refused before it sends it."""
    return _dumps(
        {
            "type": "welcome",
            "sender": "server",
            "message": "You are connected",
            "worker": worker_pid,
            "max_message_bytes": limits.max_message_bytes,
            "max_sender_chars": limits.max_sender_chars,
        }
    )


def error_frame(code: ErrorCode, message: str) -> str:
    return _dumps({"type": "error", "code": code.value, "message": message})


class NoticeCode(enum.StrEnum):
    #: The worker's link to the hub broke; messages published meanwhile did not reach this client.
    MESSAGES_MISSED = "messages_missed"
    #: A resume asked for messages older than the history kept: some could not be replayed.
    RESUME_PARTIAL = "resume_partial"


def notice_frame(code: NoticeCode, message: str, **extra: int | str) -> str:
    return _dumps({"type": "notice", "code": code.value, "message": message, **extra})


_MESSAGES_MISSED_PREFIX = f'{{"type":"notice","code":"{NoticeCode.MESSAGES_MISSED.value}"'


def is_messages_missed(frame: str) -> bool:
    """Whether ``frame`` is a ``messages_missed`` notice made by ``notice_frame``."""
    return frame.startswith(_MESSAGES_MISSED_PREFIX)


def history_frame(messages: Sequence[str], *, resumed: bool, epoch: str) -> str:
    """Message frames, already encoded, wrapped as one history frame without re-encoding.

    ``epoch`` names the run of ids; a client resumes with ``since=<epoch>:<id>``.
    """
    flag = "true" if resumed else "false"
    head = f'{{"type":"history","resumed":{flag},"epoch":{json.dumps(epoch)}'
    return f'{head},"messages":[{",".join(messages)}]}}'


def presence_frame(
    version: int,
    online: int,
    users: Sequence[str],
    joined: Sequence[str],
    left: Sequence[str],
    *,
    truncated: bool = False,
) -> str:
    # "version" comes first so that it can be read without decoding (``presence_version``).
    document: dict[str, Any] = {"type": "presence", "version": version, "online": online}
    document.update(users=list(users), joined=list(joined), left=list(left))
    if truncated:
        document["truncated"] = True
    return _dumps(document)


_MESSAGE_PREFIX = '{"type":"message","id":'
_PRESENCE_PREFIX = '{"type":"presence","version":'


def message_id(frame: str) -> int | None:
    """The id of a chat message frame made by ``stamp_chat_frame``, read without decoding."""
    return _leading_number(frame, _MESSAGE_PREFIX)


def presence_version(frame: str) -> int | None:
    return _leading_number(frame, _PRESENCE_PREFIX)


def _leading_number(frame: str, prefix: str) -> int | None:
    if not frame.startswith(prefix):
        return None
    start = len(prefix)
    return int(frame[start : frame.index(",", start)])


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What a client asked for in its ``/chat`` URL, and what was wrong with it."""

    name: str = ""
    since: int | None = None
    #: The run of ids ``since`` belongs to, when the client said (``since=<epoch>:<id>``).
    since_epoch: str | None = None
    errors: tuple[ProtocolError, ...] = ()


def parse_connect_query(query_string: bytes, limits: Limits) -> ConnectRequest:
    """``?name=<display name>&since=<last id seen>``; both optional, never fatal."""
    try:
        fields = parse_qs(query_string.decode("latin-1"), max_num_fields=8)
    except ValueError:
        fields = {}
    errors: list[ProtocolError] = []
    name = fields.get("name", [""])[-1].strip()
    if name:
        try:
            _check_sender(name, limits)
        except ProtocolError as error:
            errors.append(ProtocolError(ErrorCode.INVALID_NAME, error.message))
            name = ""
    since, since_epoch = None, None
    raw_since = fields.get("since", [""])[-1]
    if raw_since:
        epoch, _, raw_id = raw_since.rpartition(":")
        if raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18 and len(epoch) <= 32:
            since, since_epoch = int(raw_id), epoch if ":" in raw_since else None
        else:
            errors.append(invalid_resume_error())
    return ConnectRequest(name=name, since=since, since_epoch=since_epoch, errors=tuple(errors))


def invalid_resume_error() -> ProtocolError:
    return ProtocolError(
        ErrorCode.INVALID_RESUME,
        "Cannot resume from that id: it is not one this server gave (it may have restarted). "
        "Here is the recent history instead.",
    )
