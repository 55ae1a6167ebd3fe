"""Structured log lines: one ``key=value`` line per event (connect, disconnect, error).

Nothing is logged per chat message at the default level: at thousands of messages a second the
log would cost more than the chat.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("trio_chat")


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event}"]
    parts.extend(f"{key}={_format(value)}" for key, value in fields.items())
    logger.log(level, " ".join(parts))


def _format(value: object) -> str:
    """The value as it is, or quoted when it has spaces, quotes, ``=`` or anything unprintable.

    Values can come from clients (a path, a name): a line break, a carriage return, an escape
    sequence or a bidirectional override in them must not forge a log line or rewrite the
    terminal, so every character that is not printable is written as its escape.
    """
    text = str(value)
    if text and text.isprintable() and not any(char in text for char in ' "=\\'):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable():
        return char
    return char.encode("unicode_escape").decode("ascii")


def configure(level: str) -> None:
    """Send trio_chat's lines to stderr unless the host application set up logging itself."""
    logger.setLevel(level)
    hub_logger = logging.getLogger("trio_chat.hub")
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s %(message)s")
        )
        logger.addHandler(handler)
    hub_logger.setLevel(level)
