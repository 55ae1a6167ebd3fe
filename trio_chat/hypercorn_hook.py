"""The one hook trio_chat puts into Hypercorn: which permessage-deflate its WebSocket handshake
accepts.

Hypercorn 0.18 accepts permessage-deflate whenever a client offers it (every browser does),
and gives neither the app nor its configuration a say: ``Handshake.accept`` in
``hypercorn/protocol/ws_stream.py`` answers the offer with a fresh ``PerMessageDeflate()``,
looked up by that name in its module at every handshake. So the hook rebinds that one name, in
that one module, to a factory of the extension ``TRIO_CHAT_WEBSOCKET_COMPRESSION`` asks for
(``deflate.py``): one that declines the offer (``off``) or one with bounded inflation (``on``).
Nothing else of Hypercorn's is touched, and the app's own code never sees the difference.

A setting for this is requested upstream (pgjones/hypercorn#307). Once Hypercorn has one, use
it instead and delete this module.

It is installed at every worker's lifespan startup, before the worker takes a connection, and
checked there: if Hypercorn's handshake is no longer shaped as expected, ``install`` raises
``HookError`` saying what changed, and startup fails; it is never a silent no-op.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from wsproto.extensions import Extension, PerMessageDeflate

from .deflate import EXTENSION_NAME, BoundedPerMessageDeflate, DeclinedPerMessageDeflate

#: The name ``Handshake.accept`` looks up for the extension it offers.
HOOKED_NAME = "PerMessageDeflate"
#: What Chromium offers on every handshake; the check after installing answers it.
BROWSER_OFFER = b"permessage-deflate; client_max_window_bits"


class HookError(Exception):
    """Hypercorn's WebSocket handshake is not shaped as the hook expects."""


@dataclasses.dataclass(frozen=True)
class ExtensionFactory:
    """What ``Handshake.accept`` calls instead of ``PerMessageDeflate()``."""

    compress: bool
    max_message_size: int

    def __call__(self) -> Extension:
        if self.compress:
            return BoundedPerMessageDeflate(self.max_message_size)
        return DeclinedPerMessageDeflate()


def hypercorn_config(receive: Any) -> Config | None:
    """The configuration of the Hypercorn worker running this lifespan, or None under another
    server. (Hypercorn hands the lifespan its ``Lifespan.asgi_receive``, a method of the object
    that holds the worker's config: nowhere else can the app read the worker's
    ``websocket_max_message_size``, which bounds inflation.)"""
    config = getattr(getattr(receive, "__self__", None), "config", None)
    return config if isinstance(config, Config) else None


def install(compress: bool, max_message_size: int) -> None:
    """Make this process's Hypercorn answer permessage-deflate offers as ``compress`` says,
    then check that a browser's offer is answered so; ``HookError`` if not."""
    handshake = getattr(ws_stream, "Handshake", None)
    accept = getattr(handshake, "accept", None)
    if HOOKED_NAME not in getattr(getattr(accept, "__code__", None), "co_names", ()):
        raise HookError(
            "hypercorn.protocol.ws_stream.Handshake.accept no longer makes its "
            f"{HOOKED_NAME}() by name, so TRIO_CHAT_WEBSOCKET_COMPRESSION cannot be applied"
        )
    current = getattr(ws_stream, HOOKED_NAME, None)
    if current is not PerMessageDeflate and not isinstance(current, ExtensionFactory):
        raise HookError(
            f"hypercorn.protocol.ws_stream.{HOOKED_NAME} is {current!r}, not wsproto's "
            "PerMessageDeflate, so TRIO_CHAT_WEBSOCKET_COMPRESSION cannot be applied"
        )
    setattr(ws_stream, HOOKED_NAME, ExtensionFactory(compress, max_message_size))
    _check_browser_offer(compress)


def _check_browser_offer(compress: bool) -> None:
    """Answer a browser's handshake the way Hypercorn will, and compare with the setting."""
    key = base64.b64encode(b"trio_chat hook 0")
    request = [
        (b"host", b"localhost"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-extensions", BROWSER_OFFER),
    ]
    try:
        _, headers, _ = ws_stream.Handshake(request, "1.1").accept(None, [])
    except Exception as error:
        raise HookError(f"Hypercorn's WebSocket handshake failed its check: {error!r}") from None
    answer = b", ".join(value for name, value in headers if name == b"sec-websocket-extensions")
    accepted = answer.startswith(EXTENSION_NAME.encode())
    ours = b"client_no_context_takeover" in answer
    if accepted != compress or (compress and not ours):
        raise HookError(
            f"Hypercorn's WebSocket handshake answers a browser's {BROWSER_OFFER.decode()!r} "
            f"with {answer.decode() or 'no extension'!r} despite the hook; expected "
            + ("trio_chat's bounded permessage-deflate" if compress else "no extension")
        )
