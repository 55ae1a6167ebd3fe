"""The chat protocol, sans I/O: parse and validate what clients send, encode what they receive.

Nothing here touches a socket, a channel or the clock, so every rule is a plain function call in
the tests. Frames are JSON text; docs/protocol.md is the reader's version of this module.

Invariants:
- ``parse_chat_frame`` either returns a valid client frame (``ClientFrame``) or raises
  ``ProtocolError``; it never lets another exception out, whatever the input (deep nesting,
  huge numbers, lone surrogates, binary data).
- A chat message is encoded once (``encode_chat_body``) where it enters the system and stamped
  once (``stamp_chat_frame``) by the hub; every subscriber is sent the very same string, and
  the ``history`` and ``older`` frames wrap it as it is.
- Every string we emit is valid UTF-8 JSON on one line, so frames can be joined with ``\\n``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import unicodedata
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from .hub_link.interface import MAX_OLDER_MESSAGES


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


class HandshakeRefusal(enum.StrEnum):
    """Why a WebSocket handshake was refused (403): the ``reason`` of its log line and of
    ``trio_chat_handshakes_refused_total``."""

    UNKNOWN_PATH = "unknown_path"
    #: No worker, or one shutting down.
    NOT_SERVING = "not_serving"
    #: A page of another site (cross-site WebSocket hijacking).
    ORIGIN = "origin"
    #: The client's address holds ``TRIO_CHAT_MAX_CONNECTIONS_PER_ADDRESS`` already.
    TOO_MANY_CONNECTIONS = "too_many_connections"


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
    #: A room name that breaks ``ROOM_NAME_RULE`` (in a frame or in ``?room=``).
    INVALID_ROOM = "invalid_room"
    #: A message to, or a leave of, a room the connection is not in.
    NOT_JOINED = "not_joined"
    #: A join past ``TRIO_CHAT_MAX_ROOMS_PER_CONNECTION``.
    TOO_MANY_ROOMS = "too_many_rooms"
    #: A join of a room the connection is in already: harmless, nothing changes.
    ALREADY_JOINED = "already_joined"
    #: The hub holds ``TRIO_CHAT_MAX_ROOMS`` rooms and none can be forgotten: no new room now.
    ROOM_LIMIT = "room_limit"
    #: A number outside the range its field allows (an ``older`` frame's ``before`` or
    #: ``limit``).
    OUT_OF_RANGE = "out_of_range"


class ProtocolError(Exception):
    """A client frame we refuse; answered with an error frame to that client alone.

    ``room``: the room the refused frame was about, when it names a valid one.
    """

    def __init__(self, code: ErrorCode, message: str, room: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.room = room

    def frame(self) -> str:
        return error_frame(self.code, self.message, room=self.room)


#: What a room name may be: short, and needing no escaping anywhere (JSON, URLs, Redis keys,
#: the page's ``#room`` links), so that the hub reads a frame's room without decoding it.
ROOM_NAME_RULE = (
    "1 to 64 lower-case letters a-z, digits, '-' or '_', starting with a letter or digit"
)
_ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def is_room_name(value: object) -> bool:
    return isinstance(value, str) and _ROOM_NAME.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_sender_chars: int = 64
    max_message_bytes: int = 4096
    #: Rooms one connection may be in at once.
    max_rooms: int = 32

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
    #: ``None``: the connection's first room (what clients of the one-room protocol send).
    room: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rename:
    """The client now goes by ``name`` (in presence, in all its rooms); nothing is broadcast."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Join:
    """Enter ``room``, resuming after ``since`` (an id of ``since_epoch``) if given."""

    room: str
    since: int | None = None
    since_epoch: str | None = None
    #: ``since`` was given but is not an id this server could have given: a fresh join, told.
    since_invalid: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class ListRooms:
    """Asks for the busiest rooms (a ``rooms`` frame)."""


#: Messages an ``older`` frame asks for when it gives no ``limit``; it may ask for up to
#: ``MAX_OLDER_MESSAGES``.
DEFAULT_OLDER_MESSAGES = 50
#: The largest id there can be: ids are 64-bit signed integers in the hub's stores (SQLite,
#: Redis stream ids). A larger ``before`` asks for the same page (the newest messages), so it
#: is read as this one, and no store is handed a number it cannot hold.
MAX_MESSAGE_ID = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Older:
    """Asks for a page of a room's scrollback: up to ``limit`` of its messages with ids below
    ``before`` (an ``older`` frame answers)."""

    #: ``None``: the connection's first room, as for a ``ChatMessage``.
    room: str | None
    before: int
    limit: int = DEFAULT_OLDER_MESSAGES


ClientFrame = ChatMessage | Rename | Join | Leave | ListRooms | Older


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


def parse_chat_frame(text: str | None, data: bytes | None, limits: Limits) -> ClientFrame:
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
    if kind == "message":
        room = _room_field(document) if "room" in document else None
        sender = _string_field(document, "sender").strip()
        message = _string_field(document, "message")
        _check_sender(sender, limits)
        _check_message(message, limits)
        return ChatMessage(sender=sender, message=message, room=room)
    if kind == "rename":
        name = _string_field(document, "name").strip()
        _check_sender(name, limits)
        return Rename(name=name)
    if kind == "join":
        return _parse_join(document)
    if kind == "leave":
        return Leave(_room_field(document))
    if kind == "rooms":
        return ListRooms()
    if kind == "older":
        return _parse_older(document)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {_clip(kind)}.")


def _parse_join(document: dict[str, Any]) -> Join:
    room = _room_field(document)
    if "since" not in document:
        return Join(room)
    since = document["since"]
    parsed = parse_since(since) if isinstance(since, str) else None
    if parsed is None:
        return Join(room, since_invalid=True)
    return Join(room, *parsed)


def _parse_older(document: dict[str, Any]) -> Older:
    room = _room_field(document) if "room" in document else None
    before = _integer_field(document, "before", 1, None, room)
    limit = DEFAULT_OLDER_MESSAGES
    if "limit" in document:
        limit = _integer_field(document, "limit", 1, MAX_OLDER_MESSAGES, room)
    return Older(room, min(before, MAX_MESSAGE_ID), limit)


def _integer_field(
    document: dict[str, Any], name: str, low: int, high: int | None, room: str | None
) -> int:
    """A JSON integer (not a bool, not a float) from ``low`` to ``high`` (``None``: no bound);
    errors name ``room``, when the frame named a valid one."""
    if name not in document:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f'The field "{name}" is missing.', room)
    value = document[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(ErrorCode.WRONG_TYPE, f'The field "{name}" must be an integer.', room)
    if value < low or (high is not None and value > high):
        allowed = f"at least {low}" if high is None else f"from {low} to {high}"
        raise ProtocolError(ErrorCode.OUT_OF_RANGE, f'The field "{name}" must be {allowed}.', room)
    return value


def _room_field(document: dict[str, Any]) -> str:
    room = _string_field(document, "room")
    if not is_room_name(room):
        raise ProtocolError(
            ErrorCode.INVALID_ROOM, f"Invalid room name {_clip(room)}: {ROOM_NAME_RULE}."
        )
    return room


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


_BODY_PREFIX = '{"room":"'


def encode_chat_body(room: str, chat: ChatMessage) -> str:
    """The message as it travels to the hub: a JSON object without ``id`` and ``ts`` yet.

    The room comes first, so that the hub reads it without decoding the body (``body_room``).
    """
    return _dumps({"room": room, "sender": chat.sender, "message": chat.message})


def body_room(body: str) -> str:
    """The room of a body made by ``encode_chat_body``; ``ValueError`` for anything else."""
    if not body.startswith(_BODY_PREFIX):
        raise ValueError("not a chat body")
    start = len(_BODY_PREFIX)
    room = body[start : body.index('"', start)]
    if not is_room_name(room):
        raise ValueError("not a room name")
    return room


def stamp_chat_frame(message_id: int, ts_ms: int, body: str) -> str:
    """Give an encoded body its place in the total order; done once, by the hub.

    ``body`` is a JSON object made by ``encode_chat_body``, so splicing the new keys after its
    opening brace is safe and saves decoding and encoding it again. The frame's ``room``
    follows ``ts``: ``frame_room`` finds it there.
    """
    return f'{{"type":"message","id":{message_id},"ts":{ts_ms},{body[1:]}'


_ROOM_KEY = ',"room":"'


def frame_room(frame: str) -> str | None:
    """The room of a message or presence frame made here, read without decoding; ``None`` for
    frames of no room (a ``messages_missed`` notice).

    Both kinds put ``room`` right after their leading number, before any text a client chose,
    and a room name needs no escaping, so the first ``"room":"`` is the frame's own.
    """
    start = frame.find(_ROOM_KEY)
    if start < 0:
        return None
    start += len(_ROOM_KEY)
    return frame[start : frame.index('"', start)]


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
            "max_rooms": limits.max_rooms,
        }
    )


def error_frame(code: ErrorCode, message: str, *, room: str | None = None) -> str:
    document = {"type": "error", "code": code.value, "message": message}
    if room is not None:
        document["room"] = room
    return _dumps(document)


def left_frame(room: str) -> str:
    """Answers a ``leave``: nothing of ``room`` comes after it."""
    return _dumps({"type": "left", "room": room})


def rooms_frame(rooms: Sequence[tuple[str, int]]) -> str:
    return _dumps({"type": "rooms", "rooms": rooms_listing(rooms)})


def rooms_listing(rooms: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """``(room, online)`` pairs as the ``rooms`` frame and ``GET /rooms`` list them."""
    return [{"room": room, "online": online} for room, online in rooms]


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


def history_frame(
    room: str, messages: Sequence[str], *, resumed: bool, epoch: str, complete: bool = False
) -> str:
    """A room's message frames, already encoded, wrapped as one history frame without
    re-encoding them.

    ``epoch`` names the run of ids; a client resumes with ``since=<epoch>:<id>``.
    ``complete``: nothing of the room older than these is kept (``Snapshot.complete``).
    """
    head = (
        f'{{"type":"history","room":"{room}","resumed":{_json_bool(resumed)},'
        f'"epoch":{json.dumps(epoch)},"complete":{_json_bool(complete)}'
    )
    return f'{head},"messages":[{",".join(messages)}]}}'


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


def older_frame(room: str, messages: Sequence[str], *, complete: bool) -> str:
    """A page of a room's scrollback, answering an ``older`` frame: its message frames,
    already encoded, wrapped without re-encoding them (as ``history_frame`` does).

    ``complete``: the server keeps nothing of the room older than these.
    """
    head = f'{{"type":"older","room":"{room}","complete":{_json_bool(complete)}'
    return f'{head},"messages":[{",".join(messages)}]}}'


def presence_frame(
    room: str,
    version: int,
    online: int,
    users: Sequence[str],
    joined: Sequence[str],
    left: Sequence[str],
    *,
    truncated: bool = False,
) -> str:
    # "version" comes first so that it can be read without decoding (``presence_version``),
    # and "room" next (``frame_room``).
    document: dict[str, Any] = {"type": "presence", "version": version, "room": room}
    document.update(online=online, users=list(users), joined=list(joined), left=list(left))
    if truncated:
        document["truncated"] = True
    return _dumps(document)


_MESSAGE_PREFIX = '{"type":"message","id":'
_PRESENCE_PREFIX = '{"type":"presence","version":'


def message_id(frame: str) -> int | None:
    """The id of a chat message frame made by ``stamp_chat_frame``, read without decoding."""
    return _leading_number(frame, _MESSAGE_PREFIX)


#: What follows a message frame's id: its hub time (``stamp_chat_frame``).
_TIME_KEY = ',"ts":'


def message_time_ms(frame: str) -> int | None:
    """The hub's time (ms) of a chat message frame made by ``stamp_chat_frame``, read without
    decoding; None for any other frame."""
    if not frame.startswith(_MESSAGE_PREFIX):
        return None
    start = frame.index(_TIME_KEY, len(_MESSAGE_PREFIX)) + len(_TIME_KEY)
    return int(frame[start : frame.index(",", start)])


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
    #: The room the connection starts in; ``None``: the server's default room.
    room: str | None = None
    since: int | None = None
    #: The run of ids ``since`` belongs to, when the client said (``since=<epoch>:<id>``).
    since_epoch: str | None = None
    errors: tuple[ProtocolError, ...] = ()


def parse_connect_query(query_string: bytes, limits: Limits) -> ConnectRequest:
    """``?room=<room>&name=<display name>&since=<last id seen>``; all optional, never fatal."""
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
    room: str | None = fields.get("room", [""])[-1]
    if not is_room_name(room):
        if room:
            message = f"Invalid room name {_clip(room)}: {ROOM_NAME_RULE}."
            errors.append(
                ProtocolError(ErrorCode.INVALID_ROOM, f"{message} You are in the default room.")
            )
        room = None
    since, since_epoch = None, None
    raw_since = fields.get("since", [""])[-1]
    if raw_since:
        parsed = parse_since(raw_since)
        if parsed is None:
            errors.append(invalid_resume_error(room))
        else:
            since, since_epoch = parsed
    return ConnectRequest(
        name=name, room=room, since=since, since_epoch=since_epoch, errors=tuple(errors)
    )


def parse_since(raw: str) -> tuple[int, str | None] | None:
    """``<epoch>:<id>`` or ``<id>``: the id and its epoch (``None`` if not given); ``None``
    for anything else."""
    epoch, colon, raw_id = raw.rpartition(":")
    if raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18 and len(epoch) <= 32:
        return int(raw_id), epoch if colon else None
    return None


def invalid_resume_error(room: str | None = None) -> ProtocolError:
    return ProtocolError(
        ErrorCode.INVALID_RESUME,
        "Cannot resume from that id: it is not one this server gave (it may have restarted). "
        "Here is the recent history instead.",
        room,
    )
