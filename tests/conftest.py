"""Fixtures shared by the test modules.

Test helper modules live beside the tests (pytest puts this folder on ``sys.path``):
``asgi_driver`` drives the app in-process over memory channels, ``wsclient`` is a WebSocket
client over real sockets, ``servers`` starts real servers, hubs and redis-servers, and
``browser_support`` drives the page in Chromium.

Tests that start processes of their own carry the ``process`` marker (the end-to-end ones
``e2e`` too): ``pytest -m "not process"`` is the fast loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_chat.hub_link.local import LocalHub

from asgi_driver import StartedWorker, chat_app, running_worker


@pytest.fixture
async def started_worker() -> AsyncIterator[StartedWorker]:
    """A worker with the default settings, started before the test and shut down after it."""
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state:
        yield StartedWorker(app, state, hub)
