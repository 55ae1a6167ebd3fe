"""config.py: defaults, every TRIO_CHAT_* variable, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from trio_chat.config import ConfigError, Settings
from trio_chat.hub.state import DEFAULT_MAX_ROOMS
from trio_chat.metrics.access import ANYONE, MetricsAccess
from trio_chat.protocol import ROOM_NAME_RULE, Limits


def test_defaults() -> None:
    settings = Settings()

    assert settings == Settings(
        hub="",
        hub_secret_file=None,
        max_message_bytes=4096,
        max_sender_chars=64,
        subscriber_buffer=1024,
        outbox_size=1024,
        mailbox_size=65536,
        history_size=100,
        default_room="general",
        max_rooms=1000,
        max_rooms_per_connection=32,
        store="sqlite",
        data_dir=Path("data"),
        retention_days=30.0,
        retention_messages=10_000,
        redis_prefix="trio_chat",
        rate=5.0,
        burst=10,
        allowed_origins=frozenset(),
        require_origin=False,
        max_connections_per_address=0,  # Off: proxies and NAT put many people behind one.
        log_level="INFO",
        websocket_compression=False,  # Off: browsers' deflate costs memory and CPU per client.
        static_dir=None,
        metrics=ANYONE,  # On: counts only, like /healthz.
    )
    # Every field is pinned above, not compared with its own default.
    assert {f.name for f in dataclasses.fields(Settings)} == {
        "hub",
        "hub_secret_file",
        "redis_prefix",
        "max_message_bytes",
        "max_sender_chars",
        "subscriber_buffer",
        "outbox_size",
        "history_size",
        "default_room",
        "max_rooms",
        "max_rooms_per_connection",
        "store",
        "data_dir",
        "retention_days",
        "retention_messages",
        "mailbox_size",
        "rate",
        "burst",
        "allowed_origins",
        "require_origin",
        "max_connections_per_address",
        "log_level",
        "websocket_compression",
        "static_dir",
        "metrics",
    }


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"MAX_MESSAGE_BYTES": "1", "TRIO_CHAT": "x"}) == Settings()


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("TRIO_CHAT_HUB", "local", "hub", "local"),
        ("TRIO_CHAT_HUB", " tcp://10.0.0.1:9000 ", "hub", "tcp://10.0.0.1:9000"),
        ("TRIO_CHAT_HUB", "redis://10.0.0.2:6379/1", "hub", "redis://10.0.0.2:6379/1"),
        ("TRIO_CHAT_HUB_SECRET_FILE", "/run/secret", "hub_secret_file", Path("/run/secret")),
        ("TRIO_CHAT_REDIS_PREFIX", "chat:team-a", "redis_prefix", "chat:team-a"),
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "8192", "max_message_bytes", 8192),
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", " 100 ", "max_message_bytes", 100),
        ("TRIO_CHAT_MAX_SENDER_CHARS", "32", "max_sender_chars", 32),
        ("TRIO_CHAT_SUBSCRIBER_BUFFER", "1", "subscriber_buffer", 1),
        ("TRIO_CHAT_OUTBOX_SIZE", "10", "outbox_size", 10),
        ("TRIO_CHAT_MAILBOX_SIZE", "100000", "mailbox_size", 100_000),
        ("TRIO_CHAT_HISTORY_SIZE", "500", "history_size", 500),
        ("TRIO_CHAT_DEFAULT_ROOM", "lobby", "default_room", "lobby"),
        ("TRIO_CHAT_DEFAULT_ROOM", " team-a_1 ", "default_room", "team-a_1"),
        ("TRIO_CHAT_MAX_ROOMS", "5", "max_rooms", 5),
        ("TRIO_CHAT_MAX_ROOMS_PER_CONNECTION", "1", "max_rooms_per_connection", 1),
        ("TRIO_CHAT_STORE", "memory", "store", "memory"),
        ("TRIO_CHAT_STORE", "SQLite", "store", "sqlite"),
        ("TRIO_CHAT_DATA_DIR", "/var/lib/trio-chat", "data_dir", Path("/var/lib/trio-chat")),
        ("TRIO_CHAT_RETENTION_DAYS", "0.5", "retention_days", 0.5),
        ("TRIO_CHAT_RETENTION_MESSAGES", "200", "retention_messages", 200),
        ("TRIO_CHAT_RATE", "0", "rate", 0.0),
        ("TRIO_CHAT_RATE", "2.5", "rate", 2.5),
        ("TRIO_CHAT_BURST", "3", "burst", 3),
        (
            "TRIO_CHAT_ALLOWED_ORIGINS",
            "https://chat.example.com, HTTP://localhost:8080/",
            "allowed_origins",
            frozenset({"https://chat.example.com", "http://localhost:8080"}),
        ),
        ("TRIO_CHAT_REQUIRE_ORIGIN", "1", "require_origin", True),
        ("TRIO_CHAT_REQUIRE_ORIGIN", "no", "require_origin", False),
        ("TRIO_CHAT_MAX_CONNECTIONS_PER_ADDRESS", "20", "max_connections_per_address", 20),
        ("TRIO_CHAT_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("TRIO_CHAT_LOG_LEVEL", "WARNING", "log_level", "WARNING"),
        ("TRIO_CHAT_STATIC_DIR", "/srv/chat", "static_dir", Path("/srv/chat")),
        ("TRIO_CHAT_WEBSOCKET_COMPRESSION", "on", "websocket_compression", True),
        ("TRIO_CHAT_WEBSOCKET_COMPRESSION", "OFF", "websocket_compression", False),
        ("TRIO_CHAT_METRICS", "on", "metrics", MetricsAccess()),
        ("TRIO_CHAT_METRICS", "Off", "metrics", MetricsAccess(enabled=False)),
        (
            "TRIO_CHAT_METRICS",
            "127.0.0.1, 10.0.0.0/8,::1",
            "metrics",
            MetricsAccess(
                allowed=(
                    ipaddress.ip_network("127.0.0.1/32"),
                    ipaddress.ip_network("10.0.0.0/8"),
                    ipaddress.ip_network("::1/128"),
                )
            ),
        ),
    ],
)
def test_each_variable_is_parsed(variable: str, raw: str, field: str, value: Any) -> None:
    settings = Settings.from_env({variable: raw})

    assert getattr(settings, field) == value
    others = {f.name for f in dataclasses.fields(Settings)} - {field}
    assert all(getattr(settings, name) == getattr(Settings(), name) for name in others)


@pytest.mark.parametrize("raw", ["", "   "])
def test_blank_value_means_the_default(raw: str) -> None:
    assert Settings.from_env({"TRIO_CHAT_MAX_MESSAGE_BYTES": raw, "TRIO_CHAT_HUB": raw}) == (
        Settings()
    )


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "abc"),
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "4k"),
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "1.5"),
        ("TRIO_CHAT_STORE", "postgres"),
        ("TRIO_CHAT_RETENTION_DAYS", "0"),
        ("TRIO_CHAT_RETENTION_DAYS", "inf"),
        ("TRIO_CHAT_RETENTION_MESSAGES", "-1"),
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "0"),
        ("TRIO_CHAT_MAX_SENDER_CHARS", "-1"),
        ("TRIO_CHAT_SUBSCRIBER_BUFFER", "0"),
        ("TRIO_CHAT_OUTBOX_SIZE", "none"),
        ("TRIO_CHAT_MAILBOX_SIZE", "-5"),
        ("TRIO_CHAT_HISTORY_SIZE", "0"),
        ("TRIO_CHAT_DEFAULT_ROOM", "Lobby"),
        ("TRIO_CHAT_DEFAULT_ROOM", "-lobby"),
        ("TRIO_CHAT_DEFAULT_ROOM", "x" * 65),
        ("TRIO_CHAT_DEFAULT_ROOM", "café"),
        ("TRIO_CHAT_MAX_ROOMS", "0"),
        ("TRIO_CHAT_MAX_ROOMS", "many"),
        ("TRIO_CHAT_MAX_ROOMS_PER_CONNECTION", "0"),
        ("TRIO_CHAT_MAX_ROOMS_PER_CONNECTION", "-3"),
        ("TRIO_CHAT_RATE", "-1"),
        ("TRIO_CHAT_RATE", "inf"),
        ("TRIO_CHAT_RATE", "nan"),
        ("TRIO_CHAT_BURST", "0"),
        ("TRIO_CHAT_ALLOWED_ORIGINS", "chat.example.com"),
        ("TRIO_CHAT_ALLOWED_ORIGINS", "https://chat.example.com/path"),
        ("TRIO_CHAT_REQUIRE_ORIGIN", "maybe"),
        ("TRIO_CHAT_MAX_CONNECTIONS_PER_ADDRESS", "-1"),
        ("TRIO_CHAT_LOG_LEVEL", "chatty"),
        ("TRIO_CHAT_LOG_LEVEL", "10"),
        ("TRIO_CHAT_REDIS_PREFIX", "chat room"),
        ("TRIO_CHAT_REDIS_PREFIX", "x" * 65),
        ("TRIO_CHAT_REDIS_PREFIX", "{chat}"),
        ("TRIO_CHAT_WEBSOCKET_COMPRESSION", "yes please"),
        ("TRIO_CHAT_WEBSOCKET_COMPRESSION", "deflate"),
        ("TRIO_CHAT_METRICS", "yes"),
        ("TRIO_CHAT_METRICS", "127.0.0.1,localhost"),
        ("TRIO_CHAT_METRICS", "10.0.0.0/33"),
        ("TRIO_CHAT_METRICS", ",,"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})

    assert variable in str(caught.value)
    assert repr(raw) in str(caught.value)


def test_room_limits_agree_with_the_defaults_of_the_parts_that_enforce_them() -> None:
    # The hub and the protocol have defaults of their own for when no Settings are at hand.
    assert Settings().max_rooms == DEFAULT_MAX_ROOMS
    assert Settings().max_rooms_per_connection == Limits().max_rooms


def test_an_invalid_default_room_is_refused_with_the_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TRIO_CHAT_DEFAULT_ROOM": "Main Hall"})

    assert "TRIO_CHAT_DEFAULT_ROOM='Main Hall'" in str(caught.value)
    assert ROOM_NAME_RULE in str(caught.value)


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_CHAT_SUBSCRIBER_BUFFER", "9")

    assert Settings.from_env().subscriber_buffer == 9


def test_settings_are_immutable() -> None:
    settings = Settings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.hub = "local"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "entry"),
    [("127.0.0.1,localhost", "'localhost'"), ("::1, 10.0.0.300 ,10.0.0.0/8", "'10.0.0.300'")],
)
def test_a_bad_metrics_allowlist_entry_is_named(raw: str, entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TRIO_CHAT_METRICS": raw})

    message = str(caught.value)
    assert message.startswith(f"TRIO_CHAT_METRICS={raw!r}: {entry} is not an address or network")
