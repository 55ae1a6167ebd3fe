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
    text = str(value)
    if text and not any(char in text for char in ' "=\n') and text.isprintable():
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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
