"""protocol.py, sans I/O: parsing and validation rules, the exact frames we emit, and properties.

The invariants of the module docstring are checked with hypothesis: ``parse_chat_frame`` returns
a ``ChatMessage`` or raises ``ProtocolError`` whatever it is given, encoding round-trips, and
every frame we emit is one line of valid UTF-8 JSON.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.hub_link.interface import MAX_OLDER_MESSAGES
from trio_chat.protocol import (
    DEFAULT_OLDER_MESSAGES,
    MAX_MESSAGE_ID,
    ROOM_NAME_RULE,
    ChatMessage,
    ClientFrame,
    CloseCode,
    ErrorCode,
    Join,
    Leave,
    Limits,
    ListRooms,
    NoticeCode,
    Older,
    ProtocolError,
    Rename,
    body_room,
    encode_chat_body,
    error_frame,
    frame_room,
    history_frame,
    invalid_resume_error,
    is_messages_missed,
    is_room_name,
    left_frame,
    message_id,
    message_time_ms,
    notice_frame,
    older_frame,
    parse_chat_frame,
    parse_connect_query,
    parse_since,
    presence_frame,
    presence_version,
    rooms_frame,
    rooms_listing,
    stamp_chat_frame,
    welcome_frame,
)

LIMITS = Limits()
ROOM = "general"


def parse(text: str, limits: Limits = LIMITS) -> ChatMessage:
    parsed = parse_chat_frame(text, None, limits)
    assert isinstance(parsed, ChatMessage)
    return parsed


def parse_or_error(
    text: str | None, data: bytes | None = None, limits: Limits = LIMITS
) -> ClientFrame | ProtocolError:
    """What parsing gives: the message, or the error it raised (any other exception escapes)."""
    try:
        return parse_chat_frame(text, data, limits)
    except ProtocolError as error:
        return error


def refusal(text: str | None, data: bytes | None = None, limits: Limits = LIMITS) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        parse_chat_frame(text, data, limits)
    assert caught.value.message == str(caught.value)
    return caught.value.code


def frame(sender: Any, message: Any, **extra: Any) -> str:
    return json.dumps({"sender": sender, "message": message, **extra})


def assert_one_line_of_utf8_json(emitted: str) -> Any:
    assert "\n" not in emitted
    assert "\r" not in emitted
    emitted.encode("utf-8")  # raises on a lone surrogate
    return json.loads(emitted)


# Parsing


def test_valid_frame_parses_to_a_chat_message_with_the_sender_trimmed() -> None:
    assert parse(frame("  ann ", " hi\n")) == ChatMessage(sender="ann", message=" hi\n")


def test_explicit_message_type_and_unknown_extra_fields_are_accepted() -> None:
    assert parse(frame("ann", "hi", type="message", id=9, color="red")) == ChatMessage("ann", "hi")


@pytest.mark.parametrize("data", [b"", b"{}", frame("a", "b").encode()])
def test_binary_frame_is_refused(data: bytes) -> None:
    assert refusal(None, data) == ErrorCode.BINARY_FRAME


@pytest.mark.parametrize(
    ("sender", "code"),
    [
        ("a\tb", ErrorCode.INVALID_TEXT),  # a name is one line: not even a tab
        ("a\x7f", ErrorCode.INVALID_TEXT),  # DEL is a control character
        ("a\x85b", ErrorCode.INVALID_TEXT),  # so is the C1 "next line"
        ("\ud83d", ErrorCode.INVALID_TEXT),  # half of a surrogate pair
        ("\u3000", ErrorCode.EMPTY_SENDER),  # ideographic space trims to nothing
        ("", ErrorCode.EMPTY_SENDER),
    ],
)
def test_sender_rules(sender: str, code: ErrorCode) -> None:
    assert refusal(frame(sender, "hi")) == code


@pytest.mark.parametrize(
    "message",
    ["line\nbreak", "tab\there", "zero\u200bwidth", "private\ue000use", "para\u2029sep", "😀"],
)
def test_message_may_hold_line_breaks_tabs_and_non_control_unicode(message: str) -> None:
    assert parse(frame("a", message)).message == message


@pytest.mark.parametrize("message", ["\x00", "a\rb", "esc\x1b[0m", "\x7f", "\x9b", "\udc00"])
def test_message_with_other_control_characters_or_surrogates_is_refused(message: str) -> None:
    assert refusal(frame("a", message)) == ErrorCode.INVALID_TEXT


@pytest.mark.parametrize(
    ("sender", "message", "accepted"),
    [
        ("abc", "12345", True),
        ("abcd", "1", False),
        (" abc ", "1", True),  # the limit applies to the trimmed name
        ("a", "123456", False),
        ("a", "éé", True),  # 4 bytes
        ("a", "ééé", False),  # 6 bytes, 3 characters: the limit is in bytes
        ("a", "€1", True),  # 4 bytes
        ("a", "😀", True),  # 4 bytes
        ("a", "😀12", False),
    ],
)
def test_limits_are_characters_for_names_and_utf8_bytes_for_messages(
    sender: str, message: str, accepted: bool
) -> None:
    limits = Limits(max_sender_chars=3, max_message_bytes=5)
    text = frame(sender, message)

    if accepted:
        assert parse(text, limits) == ChatMessage(sender.strip(), message)
    else:
        assert refusal(text, limits=limits) in (
            ErrorCode.SENDER_TOO_LONG,
            ErrorCode.MESSAGE_TOO_LONG,
        )


def test_frame_longer_than_any_valid_message_is_refused_before_parsing() -> None:
    junk = "x" * (LIMITS.max_frame_chars + 1)  # not JSON: never parsed, so not invalid_json

    assert refusal(junk) == ErrorCode.MESSAGE_TOO_LONG


def test_largest_valid_message_fits_the_frame_limit_even_fully_escaped() -> None:
    escaped_a = "\\u0061"
    text = (
        '{"type": "message", "sender": "'
        + escaped_a * LIMITS.max_sender_chars
        + '", "message": "'
        + escaped_a * LIMITS.max_message_bytes
        + '"}'
    )

    assert len(text) <= LIMITS.max_frame_chars
    assert parse(text) == ChatMessage("a" * 64, "a" * 4096)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[" * 20_000, ErrorCode.INVALID_JSON),
        ('{"type": ' + "[" * 990 + "]" * 990 + ', "sender": "a", "message": "b"}', None),
        ("1" * 5000, ErrorCode.INVALID_JSON),  # over Python's int digit limit
        ('{"sender": "a", "message": "b", "n": NaN}', None),
        ('{"sender": "a", "message": "b", "sender": "c"}', None),  # the last duplicate wins
    ],
)
def test_pathological_json_never_escapes_as_another_exception(
    text: str, code: ErrorCode | None
) -> None:
    result = parse_or_error(text)

    if code is None:
        assert isinstance(result, ChatMessage | ProtocolError)
    else:
        assert isinstance(result, ProtocolError)
        assert result.code == code


def test_unknown_type_error_shows_a_clipped_value() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(json.dumps({"type": "x" * 1000, "sender": "a", "message": "b"}))

    assert caught.value.code == ErrorCode.UNKNOWN_TYPE
    assert len(caught.value.message) < 100


# Encoding


def test_chat_body_is_compact_json_with_the_room_first_and_unicode_kept() -> None:
    body = encode_chat_body("general", ChatMessage("zoë", 'say "hi"\n'))

    assert body == '{"room":"general","sender":"zoë","message":"say \\"hi\\"\\n"}'


def test_the_body_takes_the_room_given_not_the_one_the_client_named() -> None:
    # A message without a room goes to the connection's first room: the session says which.
    body = encode_chat_body("lobby", ChatMessage("a", "b", room="other"))

    assert json.loads(body) == {"room": "lobby", "sender": "a", "message": "b"}


def test_stamped_frame_puts_type_id_and_ts_before_the_body() -> None:
    stamped = stamp_chat_frame(7, 1_700_000_000_123, encode_chat_body(ROOM, ChatMessage("a", "b")))

    assert stamped == (
        '{"type":"message","id":7,"ts":1700000000123,"room":"general","sender":"a","message":"b"}'
    )


def test_welcome_frame() -> None:
    limits = Limits(max_sender_chars=32, max_message_bytes=1000)
    assert json.loads(welcome_frame(4242, limits)) == {
        "type": "welcome",
        "sender": "server",
        "message": "You are connected",
        "worker": 4242,
        "max_message_bytes": 1000,
        "max_sender_chars": 32,
        "max_rooms": 32,
    }
    assert json.loads(welcome_frame(1, Limits(max_rooms=5)))["max_rooms"] == 5


def test_error_frame_is_one_line_whatever_the_message() -> None:
    emitted = error_frame(ErrorCode.INVALID_JSON, "two\nlines")

    assert assert_one_line_of_utf8_json(emitted) == {
        "type": "error",
        "code": "invalid_json",
        "message": "two\nlines",
    }


def test_notice_frame() -> None:
    emitted = notice_frame(NoticeCode.MESSAGES_MISSED, "gap")

    assert assert_one_line_of_utf8_json(emitted) == {
        "type": "notice",
        "code": "messages_missed",
        "message": "gap",
    }


def test_close_codes_are_the_rfc_6455_numbers() -> None:
    assert (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.POLICY_VIOLATION) == (
        1000,
        1001,
        1008,
    )
    assert (CloseCode.MESSAGE_TOO_BIG, CloseCode.INTERNAL_ERROR) == (1009, 1011)
    assert (CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER) == (1012, 1013)


def test_error_codes_clients_see_are_stable() -> None:
    assert {code.value for code in ErrorCode} == {
        "binary_frame",
        "invalid_json",
        "not_an_object",
        "unknown_type",
        "missing_field",
        "wrong_type",
        "empty_sender",
        "empty_message",
        "sender_too_long",
        "message_too_long",
        "invalid_text",
        "invalid_resume",
        "invalid_name",
        "rate_limited",
        "hub_unavailable",
        "invalid_room",
        "not_joined",
        "too_many_rooms",
        "already_joined",
        "room_limit",
        "out_of_range",
    }


# Properties

_printable = st.characters(exclude_categories=("Cc", "Cs"))
# Format characters and line separators are refused in names in part (bidirectional controls,
# invisible ones: see the tests above); valid names are drawn without them.
_printable_in_names = st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"))
senders = st.text(_printable_in_names, min_size=1, max_size=64).map(str.strip).filter(bool)
# At most 4 bytes a character, so 1024 characters are within the 4096-byte limit.
messages = st.text(_printable | st.sampled_from("\n\t"), min_size=1, max_size=1024).filter(
    str.strip
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
rooms = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
# Texts a client may choose that look like the field ``frame_room`` and ``body_room`` look for.
_room_lookalike = st.sampled_from([',"room":"x"', '{"room":"x"}', '"room":"', ',"room":"'])
tricky_messages = messages | st.builds(
    lambda a, b, c: a + b + c, messages, _room_lookalike, messages
)
tricky_senders = senders | st.builds(lambda a, b: a + b, senders, _room_lookalike)
# Numbers around the bounds of ``older``'s fields, and past any id.
_numbers = st.integers(-2, MAX_OLDER_MESSAGES + 2) | st.integers() | st.integers(2**63 - 2, 2**64)
# Objects that look like client frames, so that the rules past "is it an object" get exercised.
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "rename", "join", "leave", "rooms", "older"])
        | json_values,
        "sender": senders | st.text() | json_values,
        "message": messages | st.text() | json_values,
        "name": senders | json_values,
        "room": rooms | st.text() | json_values,
        "since": st.from_regex(r"[0-9a-f]{0,8}:?[0-9]{1,4}", fullmatch=True) | json_values,
        "id": json_values,
        "before": _numbers | json_values,
        "limit": _numbers | json_values,
    },
)


def parse_anything(text: str | None, data: bytes | None = None) -> None:
    """The module's promise: a client frame or a ProtocolError, and a one-line frame either
    way."""
    result = parse_or_error(text, data)

    if isinstance(result, ProtocolError):
        assert isinstance(result.code, ErrorCode)
        assert result.room is None or is_room_name(result.room)
        assert_one_line_of_utf8_json(result.frame())
    elif isinstance(result, ChatMessage):
        assert result.room is None or is_room_name(result.room)
        body = encode_chat_body(result.room or ROOM, result)
        assert_one_line_of_utf8_json(stamp_chat_frame(1, 2, body))
    elif isinstance(result, Join | Leave):
        assert is_room_name(result.room)
        assert_one_line_of_utf8_json(left_frame(result.room))
    elif isinstance(result, Older):
        assert result.room is None or is_room_name(result.room)
        assert 1 <= result.before <= MAX_MESSAGE_ID
        assert 1 <= result.limit <= MAX_OLDER_MESSAGES
    else:
        assert isinstance(result, Rename | ListRooms)


@given(st.integers(min_value=1), st.integers(min_value=0), rooms, senders, messages)
def test_stamped_frame_round_trips(
    message_id: int, ts_ms: int, room: str, sender: str, message: str
) -> None:
    body = encode_chat_body(room, ChatMessage(sender, message))
    emitted = stamp_chat_frame(message_id, ts_ms, body)

    assert assert_one_line_of_utf8_json(emitted) == {
        "type": "message",
        "id": message_id,
        "ts": ts_ms,
        "room": room,
        "sender": sender,
        "message": message,
    }


@given(rooms, senders, messages)
def test_encoded_body_parses_back_to_the_same_message_in_its_room(
    room: str, sender: str, message: str
) -> None:
    chat = ChatMessage(sender, message)

    assert parse(encode_chat_body(room, chat)) == ChatMessage(sender, message, room)


@given(st.integers(min_value=1, max_value=64), messages)
def test_message_is_accepted_exactly_when_it_fits_the_byte_limit(
    max_bytes: int, message: str
) -> None:
    limits = Limits(max_message_bytes=max_bytes)
    fits = len(message.encode("utf-8")) <= max_bytes

    result = parse_or_error(frame("a", message), limits=limits)

    if fits:
        assert result == ChatMessage("a", message)
    else:
        assert isinstance(result, ProtocolError)
        assert result.code == ErrorCode.MESSAGE_TOO_LONG


@given(st.text())
def test_any_text_parses_or_is_refused(text: str) -> None:
    parse_anything(text)


@given(st.binary())
def test_any_bytes_are_refused_as_binary(data: bytes) -> None:
    assert refusal(None, data) == ErrorCode.BINARY_FRAME


@given(json_values | frame_like)
def test_any_json_value_parses_or_is_refused(value: Any) -> None:
    parse_anything(json.dumps(value))
    parse_anything(json.dumps(value, ensure_ascii=False))


@given(st.sampled_from(ErrorCode), st.text())
def test_any_error_frame_is_one_line_of_json(code: ErrorCode, message: str) -> None:
    emitted = error_frame(code, message)

    assert "\n" not in emitted
    assert json.loads(emitted) == {"type": "error", "code": code.value, "message": message}


@pytest.mark.parametrize(
    "name",
    [
        "ann\u2028bob",
        "evil\u202eevil",
        "a\u2066b\u2069",
        "x\u200fy",
        "line\u2029break",
        "a\u200bnn",  # Shows as "ann".
        "a\u2060nn",
        "\ufeffann",
        "an\u00adn",
    ],
)
def test_names_cannot_hide_line_breaks_reorder_text_or_hide_characters(name: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_chat_frame(json.dumps({"sender": name, "message": "hi"}), None, Limits())
    assert refused.value.code == ErrorCode.INVALID_TEXT


def test_names_keep_emoji_sequences_with_joiners() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert parse(json.dumps({"sender": family, "message": "hi"})).sender == family


def test_a_rename_frame_carries_a_checked_name() -> None:
    frame = json.dumps({"type": "rename", "name": "  bob  "})
    assert parse_chat_frame(frame, None, Limits()) == Rename(name="bob")
    with pytest.raises(ProtocolError) as refused:
        parse_chat_frame(json.dumps({"type": "rename", "name": "b" * 65}), None, Limits())
    assert refused.value.code == ErrorCode.SENDER_TOO_LONG


@pytest.mark.parametrize(
    ("query", "since", "epoch", "errors"),
    [
        (b"since=12", 12, None, []),
        (b"since=ab12cd34:12", 12, "ab12cd34", []),
        (b"since=:12", 12, "", []),
        (b"since=ab:x", None, None, ["invalid_resume"]),
        (b"since=" + b"e" * 40 + b":1", None, None, ["invalid_resume"]),
    ],
)
def test_since_may_name_its_epoch(
    query: bytes, since: int | None, epoch: str | None, errors: list[str]
) -> None:
    request = parse_connect_query(query, Limits())
    assert (request.since, request.since_epoch) == (since, epoch)
    assert [error.code.value for error in request.errors] == errors


# Rooms: names


@pytest.mark.parametrize(
    "name", ["general", "a", "0", "9lives", "team-a", "team_a", "a-", "a_", "x" * 64, "a1-b2_c3"]
)
def test_valid_room_names(name: str) -> None:
    assert is_room_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "General",  # Upper case: names are compared as they are, so only one spelling.
        "A",
        "-a",  # A leading '-' or '_' would read as an option, or hide in a list.
        "_a",
        "x" * 65,
        "café",
        "\uff41",  # Fullwidth a.
        "\u0131",  # Dotless i: lower case, not ASCII.
        "a b",
        "a.b",
        "a/b",
        "a:b",
        'a"b',
        "a\\b",
        "a\n",  # A trailing line break, which ``$`` would let through.
        "\na",
        "\u0661",  # Arabic-Indic digit one: a digit, not ASCII.
    ],
)
def test_invalid_room_names(name: str) -> None:
    assert not is_room_name(name)


@pytest.mark.parametrize("value", [None, 1, b"general", ["general"]])
def test_only_strings_are_room_names(value: object) -> None:
    assert not is_room_name(value)


def test_the_rule_is_stated_for_people() -> None:
    assert "64" in ROOM_NAME_RULE
    assert "lower-case" in ROOM_NAME_RULE


@given(rooms)
def test_a_room_name_needs_no_escaping_in_json(room: str) -> None:
    assert is_room_name(room)
    assert json.dumps(room) == f'"{room}"'


@given(st.text(max_size=70))
def test_a_room_name_is_lower_case_ascii_letters_digits_dash_and_underscore(text: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
    expected = 1 <= len(text) <= 64 and set(text) <= allowed and text[0] not in "-_"

    assert is_room_name(text) == expected


# Rooms: client frames


def refused(document: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_chat_frame(json.dumps(document), None, LIMITS)
    return caught.value


def test_a_message_may_name_its_room() -> None:
    chat = parse(frame("ann", "hi", type="message", room="lobby"))

    assert chat == ChatMessage("ann", "hi", room="lobby")


def test_a_message_without_a_room_goes_to_the_first_room() -> None:
    assert parse(frame("ann", "hi")).room is None
    assert parse(frame("ann", "hi", type="message")).room is None


@pytest.mark.parametrize("kind", ["message", "join", "leave", "older"])
@pytest.mark.parametrize(
    ("room", "code"),
    [
        ("Lobby", ErrorCode.INVALID_ROOM),
        ("-lobby", ErrorCode.INVALID_ROOM),
        ("x" * 65, ErrorCode.INVALID_ROOM),
        ("", ErrorCode.INVALID_ROOM),
        ("lobby\u00e9", ErrorCode.INVALID_ROOM),
        (7, ErrorCode.WRONG_TYPE),
        (None, ErrorCode.WRONG_TYPE),
        (["lobby"], ErrorCode.WRONG_TYPE),
    ],
)
def test_a_bad_room_is_refused_in_every_frame_that_names_one(
    kind: str, room: Any, code: ErrorCode
) -> None:
    error = refused({"type": kind, "room": room, "sender": "ann", "message": "hi"})

    assert error.code == code
    assert error.room is None  # Not a room to name in the error frame.
    if code == ErrorCode.INVALID_ROOM:
        assert ROOM_NAME_RULE in error.message
        assert "room" not in json.loads(error.frame())


@pytest.mark.parametrize("kind", ["join", "leave"])
def test_join_and_leave_need_a_room(kind: str) -> None:
    error = refused({"type": kind})

    assert error.code == ErrorCode.MISSING_FIELD
    assert '"room"' in error.message


def test_an_invalid_room_name_is_clipped_in_the_error() -> None:
    error = refused({"type": "join", "room": "X" * 1000})

    assert error.code == ErrorCode.INVALID_ROOM
    assert len(error.message) < 200


def test_a_message_to_a_bad_room_is_refused_before_its_text_is_checked() -> None:
    # The room is read first: the client learns about the room, not about the empty text.
    error = refused({"room": "Bad", "sender": "ann", "message": ""})

    assert error.code == ErrorCode.INVALID_ROOM


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"type": "join", "room": "lobby"}, Join("lobby")),
        ({"type": "join", "room": "lobby", "since": "ab12cd34:57"}, Join("lobby", 57, "ab12cd34")),
        ({"type": "join", "room": "lobby", "since": "57"}, Join("lobby", 57, None)),
        ({"type": "join", "room": "lobby", "since": ":57"}, Join("lobby", 57, "")),
        ({"type": "join", "room": "lobby", "since": "0"}, Join("lobby", 0, None)),
        ({"type": "join", "room": "lobby", "since": "garbage"}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": "ab:x"}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": ""}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": "-1"}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": "1" * 19}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": 57}, Join("lobby", since_invalid=True)),
        ({"type": "join", "room": "lobby", "since": None}, Join("lobby", since_invalid=True)),
        ({"type": "leave", "room": "lobby"}, Leave("lobby")),
        ({"type": "leave", "room": "lobby", "since": "garbage"}, Leave("lobby")),
        ({"type": "rooms"}, ListRooms()),
        ({"type": "rooms", "room": "Bad!"}, ListRooms()),  # Nothing else is read.
    ],
)
def test_join_leave_and_rooms_frames(document: dict[str, Any], expected: ClientFrame) -> None:
    assert parse_chat_frame(json.dumps(document), None, LIMITS) == expected


def test_a_join_is_not_a_message_whatever_else_it_carries() -> None:
    document = {"type": "join", "room": "lobby", "sender": "ann", "message": "hi"}

    assert parse_chat_frame(json.dumps(document), None, LIMITS) == Join("lobby")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12", (12, None)),
        ("ab12cd34:12", (12, "ab12cd34")),
        (":12", (12, "")),
        ("a:b:12", (12, "a:b")),  # The id is after the last colon.
        ("9" * 18, (10**18 - 1, None)),
        ("9" * 19, None),
        ("e" * 32 + ":1", (1, "e" * 32)),
        ("e" * 33 + ":1", None),
        ("", None),
        ("12:", None),
        ("x", None),
        ("1.5", None),
        ("+1", None),
        (" 1", None),
        ("\u0661\u0662", None),  # Digits, but not ASCII ones.
    ],
)
def test_parse_since(raw: str, expected: tuple[int, str | None] | None) -> None:
    assert parse_since(raw) == expected


# Rooms: the /chat query


@pytest.mark.parametrize(
    ("query", "room", "errors"),
    [
        (b"", None, []),
        (b"room=", None, []),  # Empty: the default room, nothing to complain about.
        (b"room=lobby", "lobby", []),
        (b"room=team-a_1", "team-a_1", []),
        (b"room=Lobby", None, ["invalid_room"]),
        (b"room=-lobby", None, ["invalid_room"]),
        (b"room=" + b"x" * 65, None, ["invalid_room"]),
        (b"room=caf%C3%A9", None, ["invalid_room"]),
        (b"room=a%20b", None, ["invalid_room"]),
        (b"room=bad&room=lobby", "lobby", []),  # The last one counts, as for the others.
    ],
)
def test_the_query_may_name_the_first_room(
    query: bytes, room: str | None, errors: list[str]
) -> None:
    request = parse_connect_query(query, LIMITS)

    assert request.room == room
    assert [error.code.value for error in request.errors] == errors


def test_an_invalid_room_in_the_query_says_the_rule_and_keeps_the_rest() -> None:
    request = parse_connect_query(b"room=Lobby&name=ann&since=ab:3", LIMITS)

    assert (request.room, request.name, request.since, request.since_epoch) == (
        None,
        "ann",
        3,
        "ab",
    )
    [error] = request.errors
    assert error.code == ErrorCode.INVALID_ROOM
    assert ROOM_NAME_RULE in error.message
    assert error.room is None


def test_a_resume_in_the_query_belongs_to_the_first_room() -> None:
    request = parse_connect_query(b"room=lobby&since=ab:x", LIMITS)

    [error] = request.errors
    assert error.code == ErrorCode.INVALID_RESUME
    assert error.room == "lobby"
    assert json.loads(error.frame())["room"] == "lobby"


# Rooms: frames we emit


def test_error_frame_names_the_room_only_when_given() -> None:
    assert json.loads(error_frame(ErrorCode.NOT_JOINED, "no", room="lobby")) == {
        "type": "error",
        "code": "not_joined",
        "message": "no",
        "room": "lobby",
    }
    assert "room" not in json.loads(error_frame(ErrorCode.NOT_JOINED, "no"))


def test_protocol_error_frame_carries_its_room() -> None:
    error = ProtocolError(ErrorCode.ALREADY_JOINED, "already", room="lobby")

    assert json.loads(error.frame())["room"] == "lobby"
    assert json.loads(invalid_resume_error("lobby").frame())["code"] == "invalid_resume"
    assert "room" not in json.loads(invalid_resume_error().frame())


def test_left_frame() -> None:
    assert left_frame("lobby") == '{"type":"left","room":"lobby"}'


def test_rooms_frame_lists_rooms_in_the_order_given() -> None:
    counts = [("general", 3), ("lobby", 1), ("a", 0)]

    assert json.loads(rooms_frame(counts)) == {
        "type": "rooms",
        "rooms": [
            {"room": "general", "online": 3},
            {"room": "lobby", "online": 1},
            {"room": "a", "online": 0},
        ],
    }
    assert rooms_listing([]) == []
    assert json.loads(rooms_frame([])) == {"type": "rooms", "rooms": []}


@pytest.mark.parametrize("complete", [True, False])
def test_history_frame_names_its_room_and_whether_anything_older_is_kept(complete: bool) -> None:
    message = stamp_chat_frame(5, 0, encode_chat_body("lobby", ChatMessage("a", "b")))

    emitted = history_frame("lobby", [message], resumed=True, epoch="e1", complete=complete)

    assert json.loads(emitted) == {
        "type": "history",
        "room": "lobby",
        "resumed": True,
        "epoch": "e1",
        "complete": complete,
        "messages": [json.loads(message)],
    }


def test_presence_frame_puts_version_then_room_first() -> None:
    emitted = presence_frame("lobby", 4, 3, ["ann", "bob"], ["bob"], [])

    assert emitted.startswith('{"type":"presence","version":4,"room":"lobby",')
    assert presence_version(emitted) == 4
    assert json.loads(emitted) == {
        "type": "presence",
        "version": 4,
        "room": "lobby",
        "online": 3,
        "users": ["ann", "bob"],
        "joined": ["bob"],
        "left": [],
    }


def test_a_resume_partial_notice_names_its_room_a_messages_missed_notice_none() -> None:
    partial = notice_frame(NoticeCode.RESUME_PARTIAL, "some", room="lobby", first_available=9)
    missed = notice_frame(NoticeCode.MESSAGES_MISSED, "gap", epoch="e2")

    assert json.loads(partial)["room"] == "lobby"
    assert frame_room(missed) is None
    assert is_messages_missed(missed)
    assert not is_messages_missed(partial)


# Rooms: reading a frame's room without decoding it


@given(rooms, tricky_senders, tricky_messages)
def test_body_room_reads_the_room_of_any_body(room: str, sender: str, message: str) -> None:
    assert body_room(encode_chat_body(room, ChatMessage(sender, message))) == room


@given(st.integers(min_value=1), st.integers(min_value=0), rooms, tricky_senders, tricky_messages)
def test_frame_room_reads_the_room_of_any_message_frame(
    given_id: int, ts_ms: int, room: str, sender: str, message: str
) -> None:
    emitted = stamp_chat_frame(
        given_id, ts_ms, encode_chat_body(room, ChatMessage(sender, message))
    )

    assert frame_room(emitted) == room
    assert json.loads(emitted)["room"] == room
    assert message_id(emitted) == given_id


@given(st.integers(min_value=1), st.integers(min_value=0), rooms, tricky_senders, tricky_messages)
def test_message_time_reads_the_hub_time_of_any_message_frame(
    given_id: int, ts_ms: int, room: str, sender: str, message: str
) -> None:
    emitted = stamp_chat_frame(
        given_id, ts_ms, encode_chat_body(room, ChatMessage(sender, message))
    )

    assert message_time_ms(emitted) == ts_ms
    assert message_time_ms(left_frame(room)) is None


user_lists = st.lists(tricky_senders, max_size=5)


@given(rooms, st.integers(min_value=0), st.integers(min_value=0), user_lists, user_lists)
def test_frame_room_reads_the_room_of_any_presence_frame(
    room: str, version: int, online: int, users: list[str], left: list[str]
) -> None:
    emitted = presence_frame(room, version, online, users, users, left, truncated=bool(left))

    assert frame_room(emitted) == room
    assert presence_version(emitted) == version


@given(st.text())
def test_frame_room_of_a_messages_missed_notice_is_none_whatever_it_says(text: str) -> None:
    assert frame_room(notice_frame(NoticeCode.MESSAGES_MISSED, text, epoch=text)) is None


@pytest.mark.parametrize(
    "not_a_body",
    [
        '{"sender":"a","message":"b"}',  # A body from before rooms.
        '{"sender":"a","room":"lobby","message":"b"}',  # The room not first.
        '{"room":"Lobby","sender":"a","message":"b"}',
        '{"room":"","sender":"a","message":"b"}',
        '{"room":"lobby',  # Cut short.
        '{"room":"lobby\\"x","sender":"a"}',
        "",
        "lobby",
    ],
)
def test_body_room_refuses_what_is_not_a_chat_body(not_a_body: str) -> None:
    with pytest.raises(ValueError, match=r"not a chat body|not a room name|substring not found"):
        body_room(not_a_body)


# Scrollback: the older frame


def older(**fields: Any) -> str:
    return json.dumps({"type": "older", **fields})


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"room": "lobby", "before": 42, "limit": 10}, Older("lobby", 42, 10)),
        ({"before": 42, "limit": 10}, Older(None, 42, 10)),  # The connection's first room.
        ({"room": "lobby", "before": 42}, Older("lobby", 42, DEFAULT_OLDER_MESSAGES)),
        ({"room": "lobby", "before": 1, "limit": 1}, Older("lobby", 1, 1)),
        ({"before": 7, "limit": MAX_OLDER_MESSAGES}, Older(None, 7, MAX_OLDER_MESSAGES)),
        ({"before": 7, "sender": "ann", "message": "hi"}, Older(None, 7)),  # Nothing else read.
        # Past any id the server can give: the newest messages, as for the largest id.
        ({"before": MAX_MESSAGE_ID}, Older(None, MAX_MESSAGE_ID)),
        ({"before": MAX_MESSAGE_ID + 1}, Older(None, MAX_MESSAGE_ID)),
        ({"before": 10**4000}, Older(None, MAX_MESSAGE_ID)),
    ],
)
def test_older_frames(document: dict[str, Any], expected: Older) -> None:
    assert parse_chat_frame(older(**document), None, LIMITS) == expected


def test_older_limits_are_those_of_the_hub_interface() -> None:
    assert (DEFAULT_OLDER_MESSAGES, MAX_OLDER_MESSAGES) == (50, 100)


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        ({"room": "lobby"}, ErrorCode.MISSING_FIELD, "before"),
        ({"room": "lobby", "before": None}, ErrorCode.WRONG_TYPE, "before"),
        ({"room": "lobby", "before": "42"}, ErrorCode.WRONG_TYPE, "before"),
        ({"room": "lobby", "before": 42.0}, ErrorCode.WRONG_TYPE, "before"),
        ({"room": "lobby", "before": True}, ErrorCode.WRONG_TYPE, "before"),  # Not a number.
        ({"room": "lobby", "before": [42]}, ErrorCode.WRONG_TYPE, "before"),
        ({"room": "lobby", "before": 0}, ErrorCode.OUT_OF_RANGE, "before"),
        ({"room": "lobby", "before": -1}, ErrorCode.OUT_OF_RANGE, "before"),
        ({"room": "lobby", "before": -(10**4000)}, ErrorCode.OUT_OF_RANGE, "before"),
        ({"room": "lobby", "before": 5, "limit": None}, ErrorCode.WRONG_TYPE, "limit"),
        ({"room": "lobby", "before": 5, "limit": "10"}, ErrorCode.WRONG_TYPE, "limit"),
        ({"room": "lobby", "before": 5, "limit": 1.5}, ErrorCode.WRONG_TYPE, "limit"),
        ({"room": "lobby", "before": 5, "limit": False}, ErrorCode.WRONG_TYPE, "limit"),
        ({"room": "lobby", "before": 5, "limit": 0}, ErrorCode.OUT_OF_RANGE, "limit"),
        ({"room": "lobby", "before": 5, "limit": -3}, ErrorCode.OUT_OF_RANGE, "limit"),
        (
            {"room": "lobby", "before": 5, "limit": MAX_OLDER_MESSAGES + 1},
            ErrorCode.OUT_OF_RANGE,
            "limit",
        ),
        ({"room": "lobby", "before": 5, "limit": 10**4000}, ErrorCode.OUT_OF_RANGE, "limit"),
    ],
)
def test_a_bad_before_or_limit_is_refused_and_the_error_names_the_field_and_room(
    document: dict[str, Any], code: ErrorCode, field: str
) -> None:
    error = refused({"type": "older", **document})

    assert error.code == code
    assert f'"{field}"' in error.message
    assert error.room == "lobby"  # The frame named a valid room: its error says which.
    assert json.loads(error.frame())["room"] == "lobby"


def test_an_older_frame_out_of_range_says_what_is_allowed() -> None:
    assert "at least 1" in refused({"type": "older", "before": 0}).message
    limit = refused({"type": "older", "before": 5, "limit": 101})
    assert f"from 1 to {MAX_OLDER_MESSAGES}" in limit.message
    assert limit.room is None  # No room named: the session's first room is not known here.


@pytest.mark.parametrize(
    ("room", "code"),
    [
        ("Lobby", ErrorCode.INVALID_ROOM),
        ("", ErrorCode.INVALID_ROOM),
        ("x" * 65, ErrorCode.INVALID_ROOM),
        (None, ErrorCode.WRONG_TYPE),
        (7, ErrorCode.WRONG_TYPE),
    ],
)
def test_an_older_frame_with_a_bad_room_is_refused_before_its_numbers_are_read(
    room: Any, code: ErrorCode
) -> None:
    error = refused({"type": "older", "room": room, "before": 0, "limit": "x"})

    assert error.code == code
    assert error.room is None


def test_an_older_number_too_long_for_python_is_invalid_json() -> None:
    # Over the 4300 digits int <-> str allows: refused by the parser, never an escaped error.
    text = '{"type":"older","before":' + "9" * 5000 + "}"

    assert refusal(text) == ErrorCode.INVALID_JSON


def test_older_frame_wraps_the_message_frames_as_they_are() -> None:
    messages = [
        stamp_chat_frame(3, 10, encode_chat_body("lobby", ChatMessage("ann", 'say "hi"'))),
        stamp_chat_frame(9, 20, encode_chat_body("lobby", ChatMessage("zoë", "a\nb"))),
    ]

    emitted = older_frame("lobby", messages, complete=False)

    assert emitted == (
        '{"type":"older","room":"lobby","complete":false,"messages":[' + ",".join(messages) + "]}"
    )
    assert assert_one_line_of_utf8_json(emitted) == {
        "type": "older",
        "room": "lobby",
        "complete": False,
        "messages": [json.loads(message) for message in messages],
    }
    assert frame_room(emitted) == "lobby"  # What the writer's catch-up reads.
    assert message_id(emitted) is None and presence_version(emitted) is None


def test_an_empty_complete_older_frame() -> None:
    assert json.loads(older_frame("general", [], complete=True)) == {
        "type": "older",
        "room": "general",
        "complete": True,
        "messages": [],
    }


@given(
    rooms,
    st.lists(st.tuples(st.integers(min_value=1), tricky_senders, tricky_messages), max_size=5),
    st.booleans(),
)
def test_older_frame_round_trips(
    room: str, stamped: list[tuple[int, str, str]], complete: bool
) -> None:
    messages = [
        stamp_chat_frame(given_id, 0, encode_chat_body(room, ChatMessage(sender, text)))
        for given_id, sender, text in stamped
    ]

    decoded = assert_one_line_of_utf8_json(older_frame(room, messages, complete=complete))

    assert decoded == {
        "type": "older",
        "room": room,
        "complete": complete,
        "messages": [json.loads(message) for message in messages],
    }
    assert frame_room(older_frame(room, messages, complete=complete)) == room


@given(
    st.one_of(st.none(), rooms),
    st.integers(min_value=1, max_value=MAX_MESSAGE_ID),
    st.integers(min_value=1, max_value=MAX_OLDER_MESSAGES),
)
def test_any_valid_older_request_parses_back_to_itself(
    room: str | None, before: int, limit: int
) -> None:
    document: dict[str, Any] = {"type": "older", "before": before, "limit": limit}
    if room is not None:
        document["room"] = room

    assert parse_chat_frame(json.dumps(document), None, LIMITS) == Older(room, before, limit)


@given(st.integers(), st.integers() | st.none())
def test_older_numbers_are_accepted_exactly_within_their_range(
    before: int, limit: int | None
) -> None:
    document: dict[str, Any] = {"type": "older", "room": "lobby", "before": before}
    if limit is not None:
        document["limit"] = limit

    result = parse_or_error(json.dumps(document))

    if before >= 1 and (limit is None or 1 <= limit <= MAX_OLDER_MESSAGES):
        expected_limit = DEFAULT_OLDER_MESSAGES if limit is None else limit
        assert result == Older("lobby", min(before, MAX_MESSAGE_ID), expected_limit)
    else:
        assert isinstance(result, ProtocolError)
        assert result.code == ErrorCode.OUT_OF_RANGE
        assert result.room == "lobby"
