"""The hook into Hypercorn's WebSocket handshake (``trio_chat.hypercorn_hook``): a browser's
offer is answered as ``TRIO_CHAT_WEBSOCKET_COMPRESSION`` says, and a Hypercorn whose handshake
is shaped otherwise fails the worker's startup with a message saying so.

The handshakes here are Hypercorn's own ``Handshake`` objects, and the lifespan is Hypercorn's
own ``Lifespan`` (as its Trio worker runs it); end to end, through real connections:
test_e2e_compression.py."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import wsproto.extensions
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.utils import LifespanFailureError
from wsproto.extensions import Extension
from wsproto.handshake import server_extensions_handshake

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.hypercorn_hook import (
    BROWSER_OFFER,
    HOOKED_NAME,
    ExtensionFactory,
    HookError,
    hypercorn_config,
    install,
)

from asgi_driver import chat_app

MAX_MESSAGE_SIZE = 12_345


@pytest.fixture(autouse=True)
def hypercorn_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test installs or breaks in Hypercorn is put back after it."""
    monkeypatch.setattr(ws_stream, HOOKED_NAME, getattr(ws_stream, HOOKED_NAME))
    monkeypatch.setattr(ws_stream.Handshake, "accept", ws_stream.Handshake.accept)


def answer_to_a_browser() -> str | None:
    """What Hypercorn puts in ``Sec-WebSocket-Extensions`` for Chromium's handshake."""
    request = [
        (b"host", b"localhost"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-extensions", BROWSER_OFFER),
    ]
    _, headers, _ = ws_stream.Handshake(request, "1.1").accept(None, [])
    answers = [value.decode() for name, value in headers if name == b"sec-websocket-extensions"]
    return ", ".join(answers) or None


def hypercorn_lifespan(app: ChatApp, config: Config) -> Lifespan:
    """Hypercorn's own lifespan driver for ``app`` (typed for Hypercorn's ASGI TypedDicts)."""
    return Lifespan(ASGIWrapper(cast(Any, app)), config, {})


async def start_as_hypercorn_does(settings: Settings, config: Config) -> None:
    """Start and stop the app's lifespan under Hypercorn's own Lifespan, as its Trio worker
    does; raises what that raises."""
    lifespan = hypercorn_lifespan(chat_app(LocalHub(), settings), config)
    async with trio.open_nursery() as nursery:
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        if not lifespan.shutdown.is_set():  # A failed startup has ended the lifespan.
            await lifespan.wait_for_shutdown()


def test_hypercorn_as_shipped_accepts_every_browser_offer() -> None:
    """What the hook is for: without it, Hypercorn compresses for every browser."""
    assert (answer_to_a_browser() or "").startswith("permessage-deflate")


def test_off_answers_a_browser_offer_with_no_extension() -> None:
    install(compress=False, max_message_size=MAX_MESSAGE_SIZE)

    assert answer_to_a_browser() is None


def test_on_answers_with_the_bounded_extension() -> None:
    install(compress=True, max_message_size=MAX_MESSAGE_SIZE)

    answer = answer_to_a_browser()
    assert answer is not None
    assert answer.split("; ")[0] == "permessage-deflate"
    assert "client_no_context_takeover" in answer.split("; ")


def test_installing_again_follows_the_latest_setting() -> None:
    install(compress=True, max_message_size=MAX_MESSAGE_SIZE)
    install(compress=False, max_message_size=MAX_MESSAGE_SIZE)

    assert answer_to_a_browser() is None


def test_a_handshake_that_no_longer_makes_its_extension_by_name_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def accept(self: Any, subprotocol: str | None, headers: Any) -> Any:
        raise AssertionError("not to be called")

    monkeypatch.setattr(ws_stream.Handshake, "accept", accept)

    with pytest.raises(HookError, match="no longer makes its PerMessageDeflate"):
        install(compress=False, max_message_size=MAX_MESSAGE_SIZE)


def test_a_handshake_module_with_another_extension_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SomethingElse:
        pass

    monkeypatch.setattr(ws_stream, "PerMessageDeflate", SomethingElse)

    with pytest.raises(HookError, match="not wsproto's PerMessageDeflate"):
        install(compress=False, max_message_size=MAX_MESSAGE_SIZE)


@pytest.mark.parametrize("compress", [False, True])
def test_a_handshake_that_ignores_the_hook_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, compress: bool
) -> None:
    """Named as expected, but it makes wsproto's extension by another way: caught by
    answering a browser's offer after installing."""
    shipped = ws_stream.Handshake.accept

    def accept(self: Any, subprotocol: str | None, headers: Any) -> Any:
        status, response, connection = shipped(self, subprotocol, headers)
        response = [
            (name, value) for name, value in response if name != b"sec-websocket-extensions"
        ]
        offer: list[Extension] = [wsproto.extensions.PerMessageDeflate()]
        accepted = server_extensions_handshake(self.extensions or [], offer)
        if accepted is not None:
            response.append((b"sec-websocket-extensions", accepted))
        return status, response, connection

    monkeypatch.setattr(ws_stream.Handshake, "accept", accept)

    with pytest.raises(HookError, match="despite the hook"):
        install(compress=compress, max_message_size=MAX_MESSAGE_SIZE)


def test_only_hypercorns_lifespan_has_a_config_to_read() -> None:
    config = Config()
    lifespan = hypercorn_lifespan(chat_app(LocalHub()), config)

    assert hypercorn_config(lifespan.asgi_receive) is config
    assert hypercorn_config(trio.open_memory_channel[Any](1)[1].receive) is None


async def test_a_worker_started_by_hypercorn_hooks_its_handshake_with_its_own_limit() -> None:
    config = Config()
    config.websocket_max_message_size = MAX_MESSAGE_SIZE

    await start_as_hypercorn_does(Settings(websocket_compression=True), config)

    assert getattr(ws_stream, HOOKED_NAME) == ExtensionFactory(True, MAX_MESSAGE_SIZE)


async def test_a_hypercorn_shaped_otherwise_fails_the_worker_startup_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def accept(self: Any, subprotocol: str | None, headers: Any) -> Any:
        raise AssertionError("not to be called")

    monkeypatch.setattr(ws_stream.Handshake, "accept", accept)

    with pytest.raises(ExceptionGroup) as failure:
        await start_as_hypercorn_does(Settings(), Config())

    assert failure.group_contains(
        LifespanFailureError,
        match="trio_chat cannot set WebSocket compression: .*no longer makes its "
        "PerMessageDeflate.* install the version pyproject.toml asks for",
    )
