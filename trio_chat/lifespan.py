"""A worker's life: at startup read the settings, join the hub and start its reader; at
shutdown, leave the hub and stop everything that startup started.

The lifespan call itself owns the worker's nursery, so the hub link and the worker's
supervision (``supervision.py``: the master's shutdown event, SIGTERM, an orphaned worker, the
exit watchdog) cannot outlive the worker.

A failure to start (a bad setting, a hub that cannot start or be joined, another server on the
port or in the data folder, a bug) ends the server with one line saying what to fix, and a
failed exit status. In a Hypercorn worker process that is ``HypercornWorker.fail_startup``,
which ends the server itself (Hypercorn, told, would print a traceback per worker, a "Running
on" line, and exit 0); a configuration error shows no traceback, a bug keeps its own. Under
any other server (or a test) the failure is answered with ``lifespan.startup.failed`` and the
same message, and the server decides.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import trio

from . import hypercorn_hook, hypercorn_worker, logs
from .asgi_types import Receive, Scope, Send
from .config import ConfigError, Settings
from .hub.port_claim import PortClaimed
from .hub_address import AUTOMATIC_HUB, HubConfigError, chat_identity
from .hub_link import Hub, HubUnavailable, open_hub
from .hub_link.manager.launcher import HubRefused
from .hypercorn_worker import HypercornWorker, HypercornWorkerError, ListeningPort
from .logs import log_event
from .supervision import (
    hold_ports,
    in_worker_process,
    supervise,
    tune_worker_process,
)
from .worker import STATE_KEY, Worker

HubFactory = Callable[[Settings], Hub]
#: What the one line a failed startup writes begins with.
FAILURE_PREFIX = "trio_chat"


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
        hypercorn = hypercorn_worker.current()
    except HypercornWorkerError as error:
        await _fail(
            send,
            None,
            f"{FAILURE_PREFIX} cannot run in this Hypercorn: {error}. This Hypercorn is not one "
            "trio_chat was tested with: install the version pyproject.toml asks for.",
        )
        return
    try:
        settings = settings or Settings.from_env()
        logs.configure(settings.log_level)
        compression = _apply_websocket_compression(settings, receive)
        claim = _ports_the_workers_claim(settings, hypercorn)
        hub = hub_factory(settings)
    except (ConfigError, HubConfigError) as error:
        await _fail(send, hypercorn, f"{FAILURE_PREFIX} configuration error: {error}")
        return
    except hypercorn_hook.HookError as error:
        await _fail(
            send,
            hypercorn,
            f"{FAILURE_PREFIX} cannot set WebSocket compression: {error}. This Hypercorn is not "
            "one trio_chat was tested with: install the version pyproject.toml asks for.",
        )
        return
    except Exception as error:
        await _fail_with_traceback(send, hypercorn, error)
        return
    worker = Worker(settings)
    async with trio.open_nursery() as nursery:
        if claim is not None:
            # Before joining the hub: a second server on the port is told about the port.
            try:
                await nursery.start(hold_ports, *claim)
            except PortClaimed as error:
                await _fail(send, hypercorn, f"{FAILURE_PREFIX} cannot start: {error}")
                return
        try:
            worker.link = await nursery.start(hub.run, worker.listener)
        except (HubUnavailable, HubConfigError) as error:
            await _fail(send, hypercorn, _join_failure(error))
            return
        except Exception as error:
            # Whatever it was, the server must hear that startup failed: an exception escaping
            # here makes Hypercorn carry on "without lifespan support", a worker with no hub.
            await _fail_with_traceback(send, hypercorn, error)
            return
        await nursery.start(supervise, worker, hypercorn and hypercorn.shutdown_event)
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


def _ports_the_workers_claim(
    settings: Settings, hypercorn: HypercornWorker | None
) -> tuple[tuple[ListeningPort, ...], int, str] | None:
    """What this worker claims with the other workers of its server (``hold_ports``' arguments:
    the ports its master bound with ``SO_REUSEPORT``, the master, the chat), if its hub is
    shared (Redis, or started by hand): no process of its own holds the claims. The automatic
    hub claims its server's ports itself."""
    if hypercorn is None or settings.hub in AUTOMATIC_HUB:
        return None
    ports = hypercorn.shared_ports
    if not ports:
        return None
    return ports, hypercorn.master_pid, chat_identity(settings, hypercorn.master_pid)


def _join_failure(error: HubUnavailable | HubConfigError) -> str:
    """What to say when the first join failed: the hub's own reason if it refused to start
    (another server has the port or the data folder), or what to check."""
    if isinstance(error.__cause__, HubRefused):  # The bridge's join raises from it.
        return f"{FAILURE_PREFIX} cannot start: {error.__cause__}"
    return (
        f"{FAILURE_PREFIX} could not join its hub: {error}. With TRIO_CHAT_HUB unset the hub "
        "starts by itself; for a hub started by hand, check that it runs and that "
        "TRIO_CHAT_HUB and TRIO_CHAT_HUB_SECRET_FILE match it."
    )


def _apply_websocket_compression(settings: Settings, receive: Receive) -> str:
    """Hook Hypercorn's handshake as ``TRIO_CHAT_WEBSOCKET_COMPRESSION`` says; returns what the
    worker's log line says of it."""
    config = hypercorn_hook.hypercorn_config(receive)
    if config is None:
        # Another server (or a test driving the app directly): its own settings decide.
        return "server"
    hypercorn_hook.install(settings.websocket_compression, config.websocket_max_message_size)
    return "on" if settings.websocket_compression else "off"


async def _fail_with_traceback(
    send: Send, hypercorn: HypercornWorker | None, error: Exception
) -> None:
    await _fail(
        send,
        hypercorn,
        f"{FAILURE_PREFIX} failed to start: {type(error).__name__}: {error} (a bug: the "
        "traceback is in the log above; please report it)",
        error,
    )


async def _fail(
    send: Send, hypercorn: HypercornWorker | None, message: str, bug: Exception | None = None
) -> None:
    """Fail the startup with ``message``; ``bug``: the unexpected error, logged with its
    traceback first."""
    if hypercorn is not None:
        hypercorn.fail_startup(lambda: _report(message, bug))
    if bug is not None:
        logs.logger.error("event=startup_error", exc_info=bug)
    log_event("startup_failed", logging.ERROR, reason=message)
    await send({"type": "lifespan.startup.failed", "message": message})


def _report(message: str, bug: Exception | None) -> None:
    """The server's last word: a bug's traceback in the log, then the reason as one plain line
    on standard error, whatever the logging configuration."""
    if bug is not None:
        logs.logger.error("event=startup_error", exc_info=bug)
    print(" ".join(message.split()), file=sys.stderr, flush=True)
