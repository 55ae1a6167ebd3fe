"""Hostile clients, fuzzed in-process with hypothesis: whatever arrives, the app holds.

- WebSocket frames from one client: arbitrary text and binary, random JSON, shapes close to a
  chat message (with and without a room, valid or not, joined or not) or to an ``older``
  request (scrollback), huge and deeply nested frames, odd Unicode, control characters,
  JSON-escaped lone surrogates, with valid messages among them. Every invalid frame gets
  exactly one error frame, to its sender alone; every valid message reaches the sender and
  another client, in order, and every valid ``older`` gets one page, to its sender alone; the
  session never dies, the other client keeps working, and the worker shuts down cleanly.
- The handshake: arbitrary query strings (``?room=`` among them), ``Origin`` and ``Host``
  headers. Accepted or refused
  with 1008, never a crash.
- HTTP: arbitrary methods, paths (dot segments, percent-encoded or not, backslashes, NUL,
  symlinks out of the folder) and conditional headers, against a temporary static folder with
  secrets beside it and hidden inside it. Only 200, 304, 404 or 405, a 405 says what is
  allowed, and a 200 body is always one of the folder's own files (or /healthz's JSON).

Each example gets a fresh worker on a fresh ``LocalHub``; the app is driven through
``asgi_driver``, so a session or lifespan that dies with an exception fails the example.
What makes a chat message or an ``older`` frame valid is restated here (``expected_chat``,
``expected_older``) from the protocol's rules rather than imported, so the app is checked
against the rules, not against itself. Nothing sleeps: "nothing else was sent" is read after
``wait_all_tasks_blocked``.

The inputs that crashed the app when these tests were written are pinned at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
import trio
import trio.testing
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trio_chat.asgi_types import Message
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.protocol import CloseCode, ErrorCode, Limits
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import Response, WebSocketClient, chat_app, open_chat, request, running_worker

# The rules of a chat message (docs/protocol.md), restated.

MAX_SENDER_CHARS = 64
MAX_MESSAGE_BYTES = 4096
#: Frames longer than this are refused before they are parsed, whatever they hold.
MAX_FRAME_CHARS = Limits(MAX_SENDER_CHARS, MAX_MESSAGE_BYTES).max_frame_chars
#: Line and paragraph separators, and the bidirectional marks, embeddings, overrides and
#: isolates (Unicode TR9), which would let one name pass for another.
NOT_IN_NAMES = frozenset(
    "\u2028\u2029\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    "\u200b\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"
)
ERROR_CODES = frozenset(code.value for code in ErrorCode)
#: The room every connection of these tests is in (the default; they never join another).
ROOM = "general"
#: What a room name may hold (docs/protocol.md): up to 64 of these, not starting with - or _.
ROOM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
#: Messages an ``older`` frame may ask for at most.
MAX_OLDER_MESSAGES = 100
#: Frame types that answer with something other than an error, a broadcast message or a page
#: of scrollback.
OTHER_TYPES = frozenset({"rename", "join", "leave", "rooms"})
#: So small that a bucket never refills during a test: exactly ``burst`` frames get through.
NEGLIGIBLE_RATE = 1e-9

#: A few seconds per test; deadline off, as a worker's start-up time varies.
FUZZ = settings(max_examples=400, deadline=None)


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs")  # Cs: a lone surrogate


def is_room_name(room: str) -> bool:
    return 0 < len(room) <= 64 and ROOM_CHARS.issuperset(room) and room[0] not in "-_"


def is_other_type(frame: str | bytes) -> bool:
    """Rename, join, leave and rooms frames change presence or rooms, and answer otherwise;
    they are tested in test_protocol, test_session_history and test_app_rooms, and kept out of
    these examples."""
    try:
        document = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    kind = document.get("type") if isinstance(document, dict) else None
    return isinstance(kind, str) and kind in OTHER_TYPES


def decoded_object(frame: str | bytes) -> dict[str, Any] | None:
    """The JSON object a frame holds, if the server reads it as one."""
    if isinstance(frame, bytes) or len(frame) > MAX_FRAME_CHARS:
        return None
    try:
        document = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def expected_chat(frame: str | bytes) -> tuple[str, str] | None:
    """The (sender, message) a frame should broadcast, or None if it should be refused."""
    document = decoded_object(frame)
    if document is None or document.get("type", "message") != "message":
        return None
    # Without a room, the connection's first room; with one, a valid name of a room it is in.
    room = document.get("room", ROOM)
    if not isinstance(room, str) or not is_room_name(room) or room != ROOM:
        return None
    sender, message = document.get("sender"), document.get("message")
    if not isinstance(sender, str) or not isinstance(message, str):
        return None
    sender = sender.strip()
    if not 0 < len(sender) <= MAX_SENDER_CHARS:
        return None
    if any(_is_control(char) or char in NOT_IN_NAMES for char in sender):
        return None
    if not message.strip() or any(_is_control(c) and c not in "\n\t" for c in message):
        return None
    if len(message.encode("utf-8")) > MAX_MESSAGE_BYTES:
        return None
    return sender, message


def _is_integer_within(value: object, low: int, high: float) -> bool:
    # JSON true and false are not numbers, whatever Python makes of them.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def expected_older(frame: str | bytes) -> bool:
    """Whether a frame is an ``older`` request to answer with a page (of ``ROOM``, the only
    room the connection is in)."""
    document = decoded_object(frame)
    if document is None or document.get("type") != "older":
        return False
    if document.get("room", ROOM) != ROOM:
        return False
    limit = document.get("limit", 1)
    return _is_integer_within(document.get("before"), 1, math.inf) and _is_integer_within(
        limit, 1, MAX_OLDER_MESSAGES
    )


# Frames.

#: Unicode that trips up validators: controls, format marks, separators, private use,
#: combining marks, and the characters forbidden in names.
odd_chars = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Mn"]) | st.sampled_from(
    sorted(NOT_IN_NAMES)
)
odd_text = st.text(st.characters() | odd_chars, max_size=80)
name_chars = st.characters(categories=["L", "M", "N", "P", "S"])
valid_senders = st.text(name_chars, min_size=1, max_size=MAX_SENDER_CHARS)
valid_messages = st.text(
    name_chars | st.characters(categories=["Zs"]) | st.sampled_from("\n\t"),
    min_size=1,
    max_size=300,
).filter(str.strip)
valid_documents = st.fixed_dictionaries({"sender": valid_senders, "message": valid_messages})

BOUNDARY_TEXTS = [
    "", " ", " \n\t ", "ann", "  ann  ", "a" * 64, "a" * 65, " " + "a" * 64 + " ",
    "x" * 4096, "x" * 4097, "é" * 2048, "é" * 2048 + "x", "😀" * 1024, "😀" * 1025,
    "\x00", "\x1b[2J", "bell\x07", "\x7f", "\x85", "a\nb", "a\r\nb", "\u202eevil",
    "\u2066ann\u2069", "\u200bzero width", "👩‍👩‍👧", "\ufeff", "\U0010ffff",
]  # fmt: skip
text_fields = st.one_of(
    st.text(),
    odd_text,
    valid_senders,
    valid_messages,
    st.sampled_from(BOUNDARY_TEXTS),
    st.integers(4000, 4200).map(lambda n: "x" * n),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Huge but within the 4300 digits int <-> str allows; longer ones are in huge_frames.
    st.integers(-(10**4000), 10**4000),
    st.floats(),  # NaN and Infinity too: Python's json reads and writes them
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = text_fields | json_values
#: Rooms: the one joined, others (valid names, not joined) and names that break the rule.
room_values = st.one_of(
    st.sampled_from([ROOM, ROOM, "random", "a", "0", "x" * 64, "x" * 65, "", "General", "-a"]),
    st.sampled_from(["_a", "a b", "a/b", "é", "general\n", " general"]),
    st.text(sorted(ROOM_CHARS), min_size=1, max_size=66),
    json_values,
)
near_valid_documents = st.fixed_dictionaries(
    {"sender": field_values, "message": field_values},
    optional={
        "type": st.sampled_from(["message", "typing", "", "MESSAGE", None]) | json_values,
        "room": room_values,
        "id": json_values,
        "ts": json_values,
    },
) | st.fixed_dictionaries(
    {},
    optional={
        "sender": field_values,
        "message": field_values,
        "room": room_values,
        "type": json_values,
    },
)
#: ``older`` requests: numbers around the bounds of ``before`` and ``limit``, and anything.
older_numbers = st.one_of(
    st.integers(-2, MAX_OLDER_MESSAGES + 2), st.integers(), st.integers(2**63 - 2, 2**64)
)
older_documents = st.fixed_dictionaries(
    {"type": st.just("older")},
    optional={
        "room": room_values,
        "before": older_numbers | json_values,
        "limit": older_numbers | json_values,
    },
) | st.fixed_dictionaries(
    {"type": st.just("older"), "before": st.integers(1, 10**6)},
    optional={"room": st.just(ROOM), "limit": st.integers(1, MAX_OLDER_MESSAGES)},
)
#: Valid messages, to the room joined (implicitly or not) or to one that is not.
roomed_documents = st.builds(
    lambda document, room: {**document, "room": room},
    valid_documents,
    st.sampled_from([ROOM, "random", "x" * 64]),
)


def dumps(document: Any, ensure_ascii: bool) -> str:
    return json.dumps(document, ensure_ascii=ensure_ascii)


def encoded(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return st.builds(dumps, documents, st.booleans())


LONE_SURROGATE_FRAMES = [
    '{"sender":"a","message":"\\ud800"}',
    '{"sender":"\\udfff","message":"hi"}',
    '{"sender":"a","message":"ok \\ud83d"}',  # half an emoji
    '{"sender":"a","message":"\\ude00 ok"}',
    '{"sender":"a\\udc80","message":"hi"}',
    '{"type":"\\ud800","sender":"a","message":"hi"}',
    '{"sender\\ud800":"a","message":"hi"}',
    '{"sender":"a","message":"hi","\\ud800":"\\udfff"}',  # valid: unknown fields are ignored
    '{"sender":"a","message":"\\ud83d\\ude00"}',  # valid: a whole pair is 😀
]


#: Every control character, each as likely as the others.
CONTROL_CHARS = [chr(n) for n in [*range(0x20), *range(0x7F, 0xA0)]]
spliced_chars = st.one_of(
    st.sampled_from(CONTROL_CHARS),
    st.sampled_from(sorted(NOT_IN_NAMES)),
    # Lone surrogates: json.dumps sends them as "\\udXXX" escapes, as a client's JSON would.
    st.characters(categories=["Cs"]),
    st.characters(categories=["Cf", "Zl", "Zp", "Zs", "Co", "Mn"]),
)


@st.composite
def with_odd_chars(draw: st.DrawFn) -> str:
    """A valid message with one or two odd characters spliced into its sender or message
    (two surrogates side by side may make a valid pair)."""
    document = draw(valid_documents)
    field = draw(st.sampled_from(["sender", "message"]))
    for _ in range(draw(st.integers(1, 2))):
        text = document[field]
        at = draw(st.integers(0, len(text)))
        document[field] = text[:at] + draw(spliced_chars) + text[at:]
    return json.dumps(document)


@st.composite
def with_raw_control_char(draw: st.DrawFn) -> str:
    """A valid frame with a raw control character spliced in anywhere (JSON allows only tab,
    line feed and carriage return between tokens, and none of them inside strings)."""
    text = draw(encoded(valid_documents))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.characters(categories=["Cc"])) + text[at:]


def padded_to(length: int) -> str:
    """A valid message frame exactly ``length`` characters long, padded by an ignored field."""
    head = '{"sender":"a","message":"b","pad":"'
    return head + " " * (length - len(head) - 2) + '"}'


huge_frames = st.one_of(
    st.integers(1, 100_000).map(lambda n: "x" * n),
    st.just("[" * 50_000),
    st.integers(1, 25_000).map(lambda n: "[" * n),
    st.integers(1, 100_000).map(lambda n: '{"sender":"a","message":"' + "x" * n + '"}'),
    st.sampled_from([MAX_FRAME_CHARS - 1, MAX_FRAME_CHARS, MAX_FRAME_CHARS + 1]).map(padded_to),
    st.integers(4300, 6000).map(lambda n: '{"sender":"a","message":"b","n":' + "9" * n + "}"),
    # Nested right up to and past the recursion limit, where the type is shown in the error.
    st.integers(1, 1200).map(lambda n: '{"type":' + "[" * n + "]" * n + ',"sender":"a"}'),
    st.integers(1, 1200).map(lambda n: '{"type":' + '{"a":' * n + "0" + "}" * n + "}"),
    # Valid with a nested extra field, clear of the depth where parsing starts to fail (which
    # depends on the stack the parser runs on).
    (st.integers(1, 200) | st.integers(1500, 4000)).map(
        lambda n: '{"sender":"a","message":"b","x":' + "[" * n + "]" * n + "}"
    ),
)
any_frames: st.SearchStrategy[str | bytes] = st.one_of(
    st.text(),
    st.text(odd_chars),
    st.binary(max_size=300),
    encoded(valid_documents).map(str.encode),  # valid JSON, but binary
    encoded(json_values),
    encoded(near_valid_documents),
    encoded(valid_documents),
    encoded(valid_documents),
    encoded(roomed_documents),
    encoded(older_documents),
    st.sampled_from(LONE_SURROGATE_FRAMES),
    with_odd_chars(),
    with_odd_chars(),
    with_raw_control_char(),
    huge_frames,
)


# Reading what the app sent.

ERROR = "error"
#: A page of scrollback, for the asker alone.
OLDER = "older"
Outcome = str | tuple[str, str, str]


def decode(message: Message) -> dict[str, Any]:
    """A frame the app sent, which must be one line of UTF-8 JSON holding an object."""
    assert message["type"] == "websocket.send", message
    assert message.get("bytes") is None, message
    text = message["text"]
    assert isinstance(text, str)
    text.encode("utf-8")  # what the server will do with it: must not raise
    assert "\n" not in text
    frame = json.loads(text)
    assert isinstance(frame, dict)
    return frame


def outcome(frame: dict[str, Any], room: str = ROOM) -> Outcome:
    """An error, message or ``older`` frame, checked for shape and reduced to what the test
    compares; a message, or a page, must be of ``room``."""
    if frame["type"] == "error":
        # "room" only when the refused frame named a valid one.
        assert set(frame) - {"room"} == {"type", "code", "message"}, frame
        assert "room" not in frame or is_room_name(frame["room"]), frame
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["message"], str) and frame["message"], frame
        return ERROR
    if frame["type"] == "older":
        assert list(frame) == ["type", "room", "complete", "messages"], frame
        assert frame["room"] == room and isinstance(frame["complete"], bool), frame
        assert len(frame["messages"]) <= MAX_OLDER_MESSAGES
        for message in frame["messages"]:
            assert outcome(message, room) != ERROR
        return OLDER
    assert frame["type"] == "message", frame
    assert list(frame) == ["type", "id", "ts", "room", "sender", "message"], frame
    assert isinstance(frame["id"], int) and isinstance(frame["ts"], int), frame
    assert frame["room"] == room, frame
    return ("message", frame["sender"], frame["message"])


def expected_outcome(frame: str | bytes) -> Outcome:
    if expected_older(frame):
        return OLDER
    chat = expected_chat(frame)
    return ERROR if chat is None else ("message", *chat)


def is_broadcast(result: Outcome) -> bool:
    return result not in (ERROR, OLDER)


def frames_sent(client: WebSocketClient) -> list[dict[str, Any]]:
    """What the client has been sent and not yet read, presence frames aside."""
    return [decode(message) for message in client.received_nowait()]


async def settled(*clients: WebSocketClient) -> list[list[dict[str, Any]]]:
    """Once the app has done all it can, what each client has been sent."""
    await trio.testing.wait_all_tasks_blocked()
    return [frames_sent(client) for client in clients]


async def settled_outcomes(*clients: WebSocketClient) -> list[list[Outcome]]:
    return [[outcome(frame) for frame in frames] for frames in await settled(*clients)]


async def send_frame(client: WebSocketClient, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        await client.send_bytes(frame)
    else:
        await client.send_text(frame)


@asynccontextmanager
async def two_clients(settings: Settings) -> AsyncIterator[tuple[WebSocketClient, WebSocketClient]]:
    """A fresh worker with two open chats; on exit, checks that every session has ended."""
    app = chat_app(LocalHub(), settings)
    async with running_worker(app) as state:
        async with open_chat(app, state) as ann, open_chat(app, state) as bob:
            yield ann, bob
            assert not ann.returned.is_set() and not bob.returned.is_set()
        worker = state[STATE_KEY]
        assert isinstance(worker, Worker)
        assert (worker.open_sessions, len(worker.fanout)) == (0, 0)
    # running_worker has checked that the lifespan shut down cleanly.


# WebSocket frames


@FUZZ
@given(frames=st.lists(any_frames, max_size=12), settle_each=st.booleans())
async def test_any_frame_gets_one_error_or_reaches_everyone_and_others_are_unaffected(
    frames: list[str | bytes], settle_each: bool
) -> None:
    assume(not any(map(is_other_type, frames)))
    expected = [expected_outcome(frame) for frame in frames]
    broadcast = [result for result in expected if is_broadcast(result)]
    async with two_clients(Settings(rate=0)) as (ann, bob):
        seen_by_ann: list[Outcome] = []
        seen_by_bob: list[Outcome] = []
        for frame, result in zip(frames, expected, strict=True):
            await send_frame(ann, frame)
            if settle_each:
                to_ann, to_bob = await settled_outcomes(ann, bob)
                assert to_ann == [result], frame
                assert to_bob == ([result] if is_broadcast(result) else []), frame
                seen_by_ann += to_ann
                seen_by_bob += to_bob
        to_ann, to_bob = await settled_outcomes(ann, bob)
        seen_by_ann += to_ann
        seen_by_bob += to_bob

        assert [result for result in seen_by_ann if is_broadcast(result)] == broadcast
        assert seen_by_ann.count(ERROR) == expected.count(ERROR)
        assert seen_by_ann.count(OLDER) == expected.count(OLDER)
        assert seen_by_bob == broadcast

        await ann.send_json({"sender": "ann", "message": "still there?"})
        last = [await client.receive_json() for client in (ann, bob)]
        assert [frame["id"] for frame in last] == [len(broadcast) + 1] * 2
        assert {outcome(frame) for frame in last} == {("message", "ann", "still there?")}


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(any_frames, min_size=1, max_size=12), burst=st.integers(1, 5))
async def test_frames_past_the_burst_each_get_one_rate_limited_error(
    frames: list[str | bytes], burst: int
) -> None:
    assume(not any(map(is_other_type, frames)))
    async with two_clients(Settings(rate=NEGLIGIBLE_RATE, burst=burst)) as (ann, bob):
        for n, frame in enumerate(frames):
            await send_frame(ann, frame)
            to_ann, to_bob = await settled(ann, bob)
            if n < burst:
                result = expected_outcome(frame)
                assert [outcome(sent) for sent in to_ann] == [result], frame
                assert [outcome(sent) for sent in to_bob] == (
                    [result] if is_broadcast(result) else []
                )
            else:
                assert [(outcome(sent), sent["code"]) for sent in to_ann] == [
                    (ERROR, ErrorCode.RATE_LIMITED)
                ]
                assert to_bob == []


# The handshake


HOST = b"chat.test"
ORIGINS = [
    b"http://chat.test", b"https://chat.test", b"HTTP://Chat.Test", b"http://chat.test:80",
    b"http://evil.example", b"null", b"", b" ", b"http://", b"file://", b"chat.test",
]  # fmt: skip
header_values = st.one_of(
    st.sampled_from(ORIGINS),
    st.binary(max_size=40),
    st.binary(max_size=20).map(lambda host: b"http://" + host),
)
query_strings = st.one_of(
    st.binary(max_size=120),
    st.dictionaries(
        st.sampled_from(["name", "since", "room", "x"]),
        st.text(max_size=70)
        | st.integers().map(str)
        | st.sampled_from(BOUNDARY_TEXTS)
        | st.sampled_from(["general", "random", "x" * 64, "x" * 65, "Random", "-r"]),
    ).map(lambda fields: urlencode(fields).encode()),
)


@FUZZ
@given(
    query_string=query_strings,
    origin=st.none() | header_values,
    host=st.none() | st.just(HOST) | header_values,
)
async def test_any_handshake_is_accepted_or_refused_and_never_crashes(
    query_string: bytes, origin: bytes | None, host: bytes | None
) -> None:
    app = chat_app(LocalHub(), Settings(rate=0))
    async with running_worker(app) as state, trio.open_nursery() as nursery:
        client = WebSocketClient(app, state, "/chat", query_string)
        client.scope["headers"] = [
            (name, value)
            for name, value in [(b"host", host), (b"origin", origin)]
            if value is not None
        ]
        nursery.start_soon(client.run_app)
        await client.connect()
        first = await client.receive()
        own = (host or b"").strip().lower()
        # A host as an origin can carry it: printable, and nothing that ends a URL's host part
        # ("http://" + "/" is an origin with no host at all).
        own_is_a_host = (
            bool(own)
            and all(0x21 <= byte < 0x7F for byte in own)
            and not any(delimiter in own for delimiter in b"/?#")
        )
        if first["type"] == "websocket.close":
            assert origin is not None, "a handshake without Origin is allowed by default"
            same_site = origin.strip().lower() in (b"http://" + own, b"https://" + own)
            assert not (own_is_a_host and same_site)
            assert first == {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}
            await client.wait_returned()
            return
        assert first == {"type": "websocket.accept"}
        # Only the page's own site gets in (cross-site WebSocket hijacking).
        assert origin is None or (own_is_a_host and b"://" + own in origin.strip().lower())
        opening = await client.read_opening()
        assert [frame["type"] for frame in opening[:1] + opening[-2:]] == [
            "welcome",
            "history",
            "presence",
        ]
        for frame in opening[1:-2]:
            assert frame["type"] == "error"
            assert frame["code"] in ("invalid_name", "invalid_resume", "invalid_room")
        # The room asked for (a valid name in the query), else the default room.
        room = opening[-2]["room"]
        assert opening[-1]["room"] == room
        assert room == ROOM or f"room={room}".encode() in query_string
        await client.send_json({"sender": "ann", "message": "hi"})
        assert outcome(await client.receive_json(), room) == ("message", "ann", "hi")
        client.cancel_nowait()


# HTTP


@dataclasses.dataclass(frozen=True)
class StaticTree:
    static_dir: Path
    #: What a 200 may carry: the contents of the folder's own files.
    served: frozenset[bytes]
    #: What no response may ever carry: files beside the folder, and hidden ones inside it.
    secrets: tuple[bytes, ...]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> StaticTree:
    """root/{secret.txt, static-sibling/x.txt, static/...} with links out of static/."""
    root = tmp_path_factory.mktemp("fuzz")
    secrets = tuple(f"SECRET-{n}-{os.urandom(8).hex()}".encode() for n in range(4))
    static = root / "static"
    files = {
        "index.html": b"<!doctype html><title>page</title>",
        "app.js": b"export {};\n",
        "style.css": b"body { margin: 0 }\n",
        "sub/inner.txt": b"inner\n",
        "ü space.txt": b"unicode name\n",
        ".hidden": secrets[0],
        ".private/key.txt": secrets[1],
        "../secret.txt": secrets[2],
        "../static-sibling/x.txt": secrets[3],  # a prefix match of "static" would reach it
    }
    for name, content in files.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_bytes(content)
    links = {
        "alias.js": "app.js",
        "link-to-secret.txt": "../secret.txt",
        "up": "..",
        "sibling": "../static-sibling",
        "abs": str(root),
        "loop": "loop",
    }
    for name, target in links.items():
        (static / name).symlink_to(target)
    served = frozenset(content for name, content in files.items() if not name.startswith("."))
    return StaticTree(static, served, secrets)


#: Path segments: ways out of the folder (links, dot segments), what lies outside it, and
#: tricks; the lists are short so that hypothesis tries their combinations often.
WAYS_OUT = ["up", "sibling", "abs", "link-to-secret.txt", "loop", "..", ".hidden", ".private"]
OUTSIDE = ["secret.txt", "static-sibling", "x.txt", "key.txt", "static", "sub", "inner.txt"]
TRICKS = [
    "", ".", "...", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%2f", "%2f", "%5c", "%00", "%", "/",
    "\\", "\x00", "~", " ", "STATIC", "index.html", "app.js", "alias.js", "ü space.txt",
    "%C3%BC%20space.txt", "healthz", "chat", "x" * 300,
]  # fmt: skip
segments = st.one_of(
    st.sampled_from(WAYS_OUT),
    st.sampled_from(OUTSIDE),
    st.sampled_from(TRICKS),
    st.text(max_size=12),
)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
           "get", "head", "GET ", ""]  # fmt: skip


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path, raw_path): the path decoded, as Hypercorn gives it, from a raw path that may
    have been percent-encoded (so that ``%2e%2e`` may reach the app as ``%2e%2e`` too)."""
    prefix = draw(st.sampled_from(["/static/", "/static/", "/", "/static", "//static/", ""]))
    separator = draw(st.sampled_from(["/", "/", "/", "\\", "//"]))
    count = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))  # short paths mostly
    raw = prefix + separator.join(draw(segments) for _ in range(count))
    if draw(st.booleans()):
        raw = quote(raw, safe="/")
    return unquote(raw), raw.encode("utf-8")


ZONES = ["GMT", "UTC", "+0000", "-2359", "+2400", "EST", ""]
zone_offsets = st.sampled_from(ZONES) | st.integers(-(10**25), 10**25).map("{:+05d}".format)
#: Well-formed dates with any zone offset, and dates with any numbers at all.
http_dates = st.one_of(
    st.builds(
        "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
        st.sampled_from(["Mon", "Sun"]),
        st.integers(1, 28),
        st.sampled_from(["Jan", "Feb", "Dec"]),
        st.integers(1900, 2100),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        zone_offsets,
    ),
    st.builds(
        "{}, {} {} {} {}:{}:{} {}".format,
        st.sampled_from(["Mon", "Xyz", ""]),
        st.integers(),
        st.sampled_from(["Jan", "Foo", ""]),
        *[st.integers()] * 4,
        zone_offsets,
    ),
).map(str.encode)
latin1_text = st.text(st.characters(max_codepoint=255), max_size=40).map(
    lambda text: text.encode("latin-1")
)
conditional_headers = st.fixed_dictionaries(
    {},
    optional={
        b"if-none-match": st.sampled_from([b"*", b"W/*", b'"0-0"', b"", b","]) | latin1_text,
        b"if-modified-since": http_dates | latin1_text,
    },
).map(lambda headers: list(headers.items()))
#: Paths to files that exist, so that conditional headers are read too.
FILE_TARGETS = [("/", b"/"), ("/static/app.js", b"/static/app.js")]
methods = st.one_of(
    st.just("GET"), st.just("GET"), st.just("HEAD"), st.sampled_from(METHODS), st.text(max_size=10)
)
http_requests = st.tuples(
    methods,
    st.one_of(targets(), targets(), st.sampled_from(FILE_TARGETS)),
    conditional_headers,
)


def check_response(tree: StaticTree, method: str, path: str, response: Response) -> None:
    for secret in tree.secrets:
        assert secret not in response.body
    if path == "/healthz":
        assert response.status in (200, 405)
    else:
        assert response.status in (200, 304, 404, 405)
    if response.status == 405:
        assert response.headers["allow"] == "GET, HEAD"
    if method == "HEAD" or response.status == 304:
        assert response.body == b""
    elif response.status == 200 and path != "/healthz":
        assert response.body in tree.served


@settings(max_examples=500, deadline=None)
@given(requests=st.lists(http_requests, min_size=1, max_size=5))
async def test_any_request_gets_a_static_file_or_an_error_and_never_a_secret(
    tree: StaticTree, requests: list[tuple[str, tuple[str, bytes], list[tuple[bytes, bytes]]]]
) -> None:
    app = chat_app(LocalHub(), Settings(static_dir=tree.static_dir))
    async with running_worker(app) as state:
        for method, (path, raw_path), headers in requests:
            response = await request(app, state, method, path, headers=headers, raw_path=raw_path)
            check_response(tree, method, path, response)


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/", 200, b"<!doctype html><title>page</title>"),
        ("/static/alias.js", 200, b"export {};\n"),
        ("/static/sub/inner.txt", 200, b"inner\n"),
        ("/static/ü space.txt", 200, b"unicode name\n"),
        ("/static/link-to-secret.txt", 404, None),
        ("/static/up/secret.txt", 404, None),
        ("/static/sibling/x.txt", 404, None),
        ("/static/.hidden", 404, None),
    ],
)
async def test_the_fuzzed_tree_serves_its_own_files_and_hides_the_rest(
    tree: StaticTree, path: str, status: int, body: bytes | None
) -> None:
    """The fuzz test's folder works as intended: it has something to find, and to hide."""
    app = chat_app(LocalHub(), Settings(static_dir=tree.static_dir))
    async with running_worker(app) as state:
        response = await request(app, state, "GET", path)
    assert response.status == status
    if body is not None:
        assert response.body == body
    check_response(tree, "GET", path, response)


# Inputs the fuzz tests found crashing the app, now fixed


@pytest.mark.parametrize("origin", [b"http://[", b"http://[::1", b"http://a]", b"http://[zz]"])
async def test_origin_that_is_not_a_url_is_refused_without_a_crash(origin: bytes) -> None:
    app = chat_app(LocalHub())
    async with running_worker(app) as state, trio.open_nursery() as nursery:
        client = WebSocketClient(app, state, "/chat")
        client.scope["headers"] = [(b"host", HOST), (b"origin", origin)]
        nursery.start_soon(client.run_app)
        await client.connect()
        first = await client.receive()
        await client.wait_returned()
    assert first == {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}


async def test_if_modified_since_with_an_absurd_offset_is_ignored_without_a_crash(
    tree: StaticTree,
) -> None:
    app = chat_app(LocalHub(), Settings(static_dir=tree.static_dir))
    header = (b"if-modified-since", b"Mon, 01 Jan 2000 00:00:00 +99999999999999999999")
    async with running_worker(app) as state:
        response = await request(app, state, "GET", "/static/app.js", headers=[header])
    assert (response.status, response.body) == (200, b"export {};\n")
