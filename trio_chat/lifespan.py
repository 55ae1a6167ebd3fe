"""A worker's life: at startup read the settings, join the hub and start its reader; at
shutdown, leave the hub and stop everything that startup started.

The lifespan call itself owns the worker's nursery, so the hub link and the worker's
supervision (``supervision.py``: SIGTERM, an orphaned worker, the exit watchdog) cannot outlive
the worker, and a failure to start is reported with ``lifespan.startup.failed`` and a message
saying what to fix (Hypercorn then stops the server instead of serving a deaf worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from . import hypercorn_hook, logs
from .asgi_types import Receive, Scope, Send
from .config import ConfigError, Settings
from .hub_address import HubConfigError
from .hub_link import Hub, HubUnavailable, open_hub
from .logs import log_event
from .supervision import (
    in_worker_process,
    supervise,
    tune_worker_process,
)
from .worker import STATE_KEY, Worker

HubFactory = Callable[[Settings], Hub]


async def run_lifespan(
    scope: Scope,
    receive: Receive,
    send: Send,
    settings: Settings | None,
    hub_factory: HubFactory = open_hub,
) -> None:
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    try:
        settings = settings or Settings.from_env()
        logs.configure(settings.log_level)
        compression = _apply_websocket_compression(settings, receive)
        hub = hub_factory(settings)
    except (ConfigError, HubConfigError) as error:
        await _fail(send, f"trio_chat configuration error: {error}")
        return
    except hypercorn_hook.HookError as error:
        await _fail(
            send,
            f"trio_chat cannot set WebSocket compression: {error}. This Hypercorn is not one "
            "trio_chat was tested with: install the version pyproject.toml asks for.",
        )
        return
    except Exception as error:
        await _fail_with_traceback(send, error)
        return
    worker = Worker(settings)
    async with trio.open_nursery() as nursery:
        try:
            worker.link = await nursery.start(hub.run, worker.listener)
        except (HubUnavailable, HubConfigError) as error:
            await _fail(
                send,
                f"trio_chat could not join its hub: {error}. With TRIO_CHAT_HUB unset the hub "
                "starts by itself; for a hub started by hand, check that it runs and that "
                "TRIO_CHAT_HUB and TRIO_CHAT_HUB_SECRET_FILE match it.",
            )
            return
        except Exception as error:
            # Whatever it was, Hypercorn must hear that startup failed: an exception escaping
            # here makes it carry on "without lifespan support", a worker with no hub, deaf.
            await _fail_with_traceback(send, error)
            return
        await nursery.start(supervise, worker)
        if "state" in scope:
            scope["state"][STATE_KEY] = worker
        if in_worker_process():
            tune_worker_process()
        log_event(
            "worker_started",
            pid=worker.pid,
            hub=type(hub).__name__,
            websocket_compression=compression,
        )
        await send({"type": "lifespan.startup.complete"})

        message = await receive()  # lifespan.shutdown: every connection has ended by now.
        nursery.cancel_scope.cancel()
    log_event("worker_stopped", pid=worker.pid)
    await send({"type": "lifespan.shutdown.complete"})


def _apply_websocket_compression(settings: Settings, receive: Receive) -> str:
    """Hook Hypercorn's handshake as ``TRIO_CHAT_WEBSOCKET_COMPRESSION`` says; returns what the
    worker's log line says of it."""
    config = hypercorn_hook.hypercorn_config(receive)
    if config is None:
        # Another server (or a test driving the app directly): its own settings decide.
        return "server"
    hypercorn_hook.install(settings.websocket_compression, config.websocket_max_message_size)
    return "on" if settings.websocket_compression else "off"


async def _fail_with_traceback(send: Send, error: Exception) -> None:
    logs.logger.error("event=startup_error", exc_info=error)
    await _fail(
        send,
        f"trio_chat failed to start: {type(error).__name__}: {error} (a bug: the traceback is "
        "in the log above; please report it)",
    )


async def _fail(send: Send, message: str) -> None:
    log_event("startup_failed", logging.ERROR, reason=message)
    await send({"type": "lifespan.startup.failed", "message": message})
