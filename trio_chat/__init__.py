"""trio_chat: a real-time chat, as a raw Trio ASGI app for ``hypercorn -k trio -w N``.

``app`` reads its settings from ``TRIO_CHAT_*`` variables when each worker starts.
"""

from __future__ import annotations

from .app import ChatApp

app = ChatApp()

__all__ = ["ChatApp", "app"]
