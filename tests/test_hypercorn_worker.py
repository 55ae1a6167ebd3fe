"""hypercorn_worker.py: what Hypercorn hands its worker process, read back and checked; and how a
worker whose startup failed picks the one of its server to say so.

The Process objects here are fakes shaped as Hypercorn 0.18's master makes them
(``ctx.Process(target=trio_worker, kwargs={"config", "shutdown_event", "sockets"})``); a real
worker of a real ``hypercorn -k trio -w 4``: test_e2e_lifecycle.py."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import trio_worker

from trio_chat import hypercorn_worker, process_watch
from trio_chat.hypercorn_worker import (
    HypercornWorker,
    HypercornWorkerError,
    ListeningPort,
    current,
    listening_port,
)

MASTER_PID = 4242


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """A listening TCP socket bound as Hypercorn binds for several workers (SO_REUSEPORT),
    one without, and a Unix socket."""
    shared = socket.socket()
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    shared.bind(("127.0.0.1", 0))
    shared.listen()
    alone = socket.socket(socket.AF_INET6)
    alone.bind(("::1", 0))
    unix = socket.socket(socket.AF_UNIX)
    made = [shared, alone, unix]
    yield made
    for sock in made:
        sock.close()


def as_hypercorn_worker(
    monkeypatch: pytest.MonkeyPatch, target: Any = trio_worker, kwargs: Any = None
) -> None:
    """Make this process look like a worker Hypercorn's master started with ``kwargs``."""
    if kwargs is None:
        kwargs = {"config": Config(), "shutdown_event": multiprocessing.Event(), "sockets": None}
    process = SimpleNamespace(_target=target, _kwargs=kwargs)
    monkeypatch.setattr(multiprocessing, "current_process", lambda: process)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: SimpleNamespace(pid=MASTER_PID))


def test_outside_a_hypercorn_worker_there_is_none() -> None:
    assert multiprocessing.parent_process() is None  # pytest itself
    assert current() is None


def test_a_child_process_of_something_else_is_no_hypercorn_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_hypercorn_worker(monkeypatch, target=print)

    assert current() is None


def test_a_hypercorn_worker_has_its_masters_event_and_sockets(
    monkeypatch: pytest.MonkeyPatch, sockets: list[socket.socket]
) -> None:
    event = multiprocessing.Event()
    shared, alone, unix = sockets
    kwargs = {
        "config": Config(),
        "shutdown_event": event,
        "sockets": Sockets(
            secure_sockets=[], insecure_sockets=[shared, alone, unix], quic_sockets=[]
        ),
    }
    as_hypercorn_worker(monkeypatch, kwargs=kwargs)

    worker = current()

    assert worker is not None
    assert worker.master_pid == MASTER_PID
    assert worker.shutdown_event is event
    shared_port, alone_port = shared.getsockname()[1], alone.getsockname()[1]
    assert set(worker.tcp_ports) == {
        ListeningPort(shared_port, f"127.0.0.1:{shared_port}", shared=True),
        ListeningPort(alone_port, f"[::1]:{alone_port}", shared=False),
    }


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"config": None, "sockets": None}, "['config', 'sockets']"),
        ((), "tuple"),
        ({"config": None, "shutdown_event": object(), "sockets": None}, "shutdown_event is object"),
        (
            {"config": None, "shutdown_event": multiprocessing.Event(), "sockets": [1]},
            "sockets are list",
        ),
    ],
)
def test_a_hypercorn_worker_started_otherwise_fails_saying_what_changed(
    monkeypatch: pytest.MonkeyPatch, kwargs: Any, names: str
) -> None:
    as_hypercorn_worker(monkeypatch, kwargs=kwargs)

    with pytest.raises(HypercornWorkerError, match=names.replace("[", r"\[").replace("]", r"\]")):
        current()


def test_unix_and_closed_sockets_have_no_port() -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        assert listening_port(unix) is None
    closed = socket.socket()
    closed.close()
    assert listening_port(closed) is None


def test_shutting_the_sockets_stops_new_connections_for_every_process_sharing_them(
    sockets: list[socket.socket],
) -> None:
    shared = sockets[0]
    address = shared.getsockname()
    worker = HypercornWorker(MASTER_PID, multiprocessing.Event(), tuple(sockets))

    worker.shut_listening_sockets()  # Not listening (alone) or unbound (unix): no matter.

    with pytest.raises(ConnectionRefusedError), socket.create_connection(address):
        pass


def test_one_worker_of_a_master_reports_a_failed_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first to ask while the master is there; the others (here: this process asking
    again, as another worker would) stay quiet; another master's workers have their own."""
    monkeypatch.setattr(hypercorn_worker, "_reporter_name_holder", None)
    worker = HypercornWorker(os.getpid(), multiprocessing.Event(), ())
    other_server = HypercornWorker(os.getppid(), multiprocessing.Event(), ())
    try:
        assert worker._elected_to_report()
        first_holder = hypercorn_worker._reporter_name_holder

        assert not worker._elected_to_report()
        assert other_server._elected_to_report()
    finally:
        for holder in (first_holder, hypercorn_worker._reporter_name_holder):
            if holder is not None:
                holder.close()


def test_a_worker_failing_after_its_master_is_gone_stays_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hypercorn_worker, "_reporter_name_holder", None)
    monkeypatch.setattr(process_watch, "has_exited", lambda pid: True)
    worker = HypercornWorker(MASTER_PID, multiprocessing.Event(), ())
    try:
        assert not worker._elected_to_report()
    finally:
        if hypercorn_worker._reporter_name_holder is not None:
            hypercorn_worker._reporter_name_holder.close()


async def test_in_the_graceful_wait_only_connections_left_with_their_pinger_are_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task tree shaped as Hypercorn 0.18's Trio worker: ``worker_serve`` holds the lifespan's
    nursery and the connections' one, whose deadline is set once its graceful wait begins;
    each connection handler holds a nursery of its tasks."""
    ended: list[str] = []
    found: list[int] = []

    async def _send_pings() -> None:
        await trio.sleep_forever()

    async def request() -> None:
        await trio.sleep(3)  # Ends before the graceful deadline (5 s).

    async def connection(name: str, *tasks: Any) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for task in tasks:
                    nursery.start_soon(task)
        finally:
            ended.append(name)

    async def lifespan(graceful_wait_begun: trio.Event) -> None:
        found.append(hypercorn_worker.end_closed_websockets())  # Serving: nothing to end.
        await graceful_wait_begun.wait()
        await trio.testing.wait_all_tasks_blocked()
        found.append(hypercorn_worker.end_closed_websockets())

    async def worker_serve() -> None:
        graceful_wait_begun = trio.Event()
        async with trio.open_nursery() as lifespan_nursery:
            lifespan_nursery.start_soon(lifespan, graceful_wait_begun)
            async with trio.open_nursery() as connections:
                connections.start_soon(connection, "closed websocket", _send_pings)
                connections.start_soon(connection, "open websocket", _send_pings, request)
                connections.start_soon(connection, "request", request)
                await trio.testing.wait_all_tasks_blocked()
                connections.cancel_scope.deadline = trio.current_time() + 5
                graceful_wait_begun.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker_serve)  # Its own task, as Hypercorn's is: trio.run's.

    assert found == [0, 1]
    assert ended == ["closed websocket", "request", "open websocket"]
