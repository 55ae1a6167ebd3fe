"""trio_chat: a real-time chat, as a raw Trio ASGI app for ``hypercorn -k trio -w N``.

``app`` (``trio_chat:app``) reads its settings from ``TRIO_CHAT_*`` variables when each worker
starts. The ASGI app behind it (``asgi.ChatApp``) is imported at its first call: the hub process
(``python -m trio_chat.hub``) imports this package too, and loads neither the app nor Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asgi import ChatApp
    from .asgi_types import Receive, Scope, Send

__all__ = ["ChatApp", "app"]

_app: ChatApp | None = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``trio_chat:app``: one ``ChatApp`` per process, made at the first call (the lifespan's,
    under Hypercorn). A plain attribute, not a lazy one: Hypercorn looks the name up in the
    module's namespace."""
    global _app
    if _app is None:
        from .asgi import ChatApp

        _app = ChatApp()
    await _app(scope, receive, send)


def __getattr__(name: str) -> Any:
    # PEP 562: ``from trio_chat import ChatApp`` imports the ASGI app's module then.
    if name == "ChatApp":
        from .asgi import ChatApp

        return ChatApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
