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

from trio_chat.protocol import (
    ChatMessage,
    CloseCode,
    ErrorCode,
    Limits,
    NoticeCode,
    ProtocolError,
    Rename,
    encode_chat_body,
    error_frame,
    notice_frame,
    parse_chat_frame,
    parse_connect_query,
    stamp_chat_frame,
    welcome_frame,
)

LIMITS = Limits()


def parse(text: str, limits: Limits = LIMITS) -> ChatMessage:
    parsed = parse_chat_frame(text, None, limits)
    assert isinstance(parsed, ChatMessage)
    return parsed


def parse_or_error(
    text: str | None, data: bytes | None = None, limits: Limits = LIMITS
) -> ChatMessage | Rename | ProtocolError:
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


def test_chat_body_is_compact_json_with_unicode_kept() -> None:
    body = encode_chat_body(ChatMessage("zoë", 'say "hi"\n'))

    assert body == '{"sender":"zoë","message":"say \\"hi\\"\\n"}'


def test_stamped_frame_puts_type_id_and_ts_before_the_body() -> None:
    stamped = stamp_chat_frame(7, 1_700_000_000_123, encode_chat_body(ChatMessage("a", "b")))

    assert stamped == '{"type":"message","id":7,"ts":1700000000123,"sender":"a","message":"b"}'


def test_welcome_frame() -> None:
    limits = Limits(max_sender_chars=32, max_message_bytes=1000)
    assert json.loads(welcome_frame(4242, limits)) == {
        "type": "welcome",
        "sender": "server",
        "message": "You are connected",
        "worker": 4242,
        "max_message_bytes": 1000,
        "max_sender_chars": 32,
    }


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
# Objects that look like chat frames, so that the rules past "is it an object" get exercised.
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.just("message") | json_values,
        "sender": senders | st.text() | json_values,
        "message": messages | st.text() | json_values,
        "id": json_values,
    },
)


def parse_anything(text: str | None, data: bytes | None = None) -> None:
    """The module's promise: a ChatMessage or a ProtocolError, and a one-line frame either way."""
    result = parse_or_error(text, data)

    if isinstance(result, ProtocolError):
        assert isinstance(result.code, ErrorCode)
        assert_one_line_of_utf8_json(error_frame(result.code, result.message))
    else:
        assert isinstance(result, ChatMessage)
        assert_one_line_of_utf8_json(stamp_chat_frame(1, 2, encode_chat_body(result)))


@given(st.integers(min_value=1), st.integers(min_value=0), senders, messages)
def test_stamped_frame_round_trips(message_id: int, ts_ms: int, sender: str, message: str) -> None:
    emitted = stamp_chat_frame(message_id, ts_ms, encode_chat_body(ChatMessage(sender, message)))

    assert assert_one_line_of_utf8_json(emitted) == {
        "type": "message",
        "id": message_id,
        "ts": ts_ms,
        "sender": sender,
        "message": message,
    }


@given(senders, messages)
def test_encoded_body_parses_back_to_the_same_message(sender: str, message: str) -> None:
    chat = ChatMessage(sender, message)

    assert parse(encode_chat_body(chat)) == chat


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
