"""A worker's life: at startup read the settings, join the hub and start its reader; at
shutdown, leave the hub and stop everything that startup started.

The lifespan call itself owns the worker's nursery, so the hub link cannot outlive the worker,
and a failure to start is reported with ``lifespan.startup.failed`` and a message saying what to
fix (Hypercorn then stops the server instead of serving a deaf worker).

Termination: Hypercorn's master stops the remaining workers with SIGTERM as soon as the first
one exits (and again from its exit handler), which would cut every open WebSocket without a
close frame. So the worker handles SIGTERM itself, for its whole life: the first one closes
every session with 1001 (going away), which lets Hypercorn's own graceful shutdown finish at
once; later ones are ignored. A watchdog bounds the wait: a send to a client that stopped
reading cannot be cancelled in Hypercorn, so if the worker is still there ``EXIT_GRACE_SECONDS``
after shutdown began (SIGTERM, or Hypercorn cancelling sessions once its ``graceful_timeout``
is over), it exits by itself.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

import trio

from . import hypercorn_hook, logs
from .asgi_types import Receive, Scope, Send
from .config import ConfigError, Settings
from .hub import Hub, HubUnavailable, open_hub
from .hub.address import HubConfigError
from .hub.server import wait_for_exit
from .logs import log_event
from .worker import STATE_KEY, Worker

HubFactory = Callable[[Settings], Hub]

#: After closing every session on SIGTERM, how long Hypercorn has to shut the worker down (the
#: ``graceful_timeout`` of hypercorn.toml).
EXIT_GRACE_SECONDS = 5.0
#: Cyclic garbage collector thresholds of a serving worker (Python's defaults: 700, 10, 10). See
#: ``tune_worker_process``.
GC_THRESHOLDS = (50_000, 20, 100)
#: How long a thread waiting for the GIL lets the worker's Trio thread keep it (Python's
#: default: 5 ms). See ``tune_worker_process``.
SWITCH_INTERVAL_SECONDS = 0.0005


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
            worker.link = await nursery.start(hub.run, worker)
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
        nursery.start_soon(_close_sessions_on_sigterm, worker)
        nursery.start_soon(_exit_if_stuck, worker)
        master = multiprocessing.parent_process()
        if master is not None and master.pid is not None:
            nursery.start_soon(_shut_down_when_orphaned, worker, master.pid)
        if "state" in scope:
            scope["state"][STATE_KEY] = worker
        if multiprocessing.parent_process() is not None:
            # A worker process of its own (Hypercorn's): its interpreter is ours to tune. (In
            # any other process, e.g. a test run, it is not.)
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


def tune_worker_process() -> None:
    """Tune the interpreter for a long-running worker with many connections.

    The hub bridge's threads get the GIL back quickly: a hub thread whose round trip has
    returned (a fetched batch for every client of this worker, or the outcome of a publish)
    needs the GIL to hand it over, and with Python's default switch interval it may wait up to
    5 ms per step while the Trio thread is busy sending. Under load that is added to every
    delivery; at 0.5 ms it is not. (Measured side by side, 200 clients at 100 msg/s over 4
    workers, nine runs each: median p99 13 ms instead of 20 ms, at the same CPU per delivery.)

    The cyclic garbage collector is made cheap. Almost everything a worker frees goes by
    reference counting; the collector is for cycles (tracebacks of cancelled tasks, mostly).
    With its defaults it runs every 700 allocations and keeps scanning every object the worker
    holds: the modules and classes loaded at startup, and every connection's objects. Measured
    on the baseline server with 10,000 connections, it took 42-55 % of the CPU. So the objects
    alive after startup, which live as long as the process, are frozen out of every collection
    (``gc.freeze``), and collections run far less often; the garbage cycles that wait longer for
    one are small and few.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


async def _close_sessions_on_sigterm(worker: Worker) -> None:
    try:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                if worker.closing:
                    continue  # The master's second SIGTERM: already on our way out.
                log_event("terminating", pid=worker.pid, connections=len(worker.room))
                worker.close_all_sessions()
                worker.shutting_down.set()
    except RuntimeError:
        return  # Not in the main thread (an embedding server): termination is its business.


async def _shut_down_when_orphaned(worker: Worker, master_pid: int) -> None:
    """Hypercorn's workers outlive a master that was killed (SIGKILL): they would serve on with
    no hub (it ends with the master, and no new one may start for a server that is gone) and
    nobody to stop them. So a worker whose master has gone says goodbye to its clients (1001)
    and ends (``_exit_if_stuck`` sees to it)."""
    # The thread blocks until the exit itself (a pidfd); it is abandoned at shutdown.
    await trio.to_thread.run_sync(wait_for_exit, master_pid, abandon_on_cancel=True)
    log_event("master_gone", logging.WARNING, pid=worker.pid, master=master_pid)
    worker.close_all_sessions()
    worker.shutting_down.set()


async def _exit_if_stuck(worker: Worker) -> None:
    """Once shutdown has begun (SIGTERM, or Hypercorn cancelling sessions at the end of its
    graceful period), make sure the worker process does end."""
    await worker.shutting_down.wait()
    await trio.sleep(EXIT_GRACE_SECONDS)
    # Still here: sessions are stuck sending to clients that stopped reading, or nobody is
    # left to end the process (an orphaned worker).
    log_event("forced_exit", logging.WARNING, pid=worker.pid, open_sessions=worker.open_sessions)
    if multiprocessing.parent_process() is not None:
        # A worker of a multi-process server, whose master is waiting for it to exit. (In any
        # other process, e.g. a test run, ending the process is not ours to do.)
        logging.shutdown()
        os._exit(0)


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
