"""The worker's lifespan: startup joins the hub and publishes the worker; shutdown undoes it all.

Failures to start answer ``lifespan.startup.failed`` with a message saying what to fix, so that
the server stops instead of serving a worker that cannot chat; in a Hypercorn worker process
the worker ends the server itself, with that message as its one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, NoReturn

import pytest
import trio
import trio.testing

from trio_chat import ChatApp, hypercorn_worker
from trio_chat.config import Settings
from trio_chat.fanout import PendingJoin, Queued
from trio_chat.hub.port_claim import Claimant, automatic_chat, claim_ports
from trio_chat.hub_address import HubConfigError, chat_identity
from trio_chat.hub_link import Hub, HubLink, HubListener, HubUnavailable
from trio_chat.hub_link.local import LocalHub
from trio_chat.hub_link.manager.launcher import HubRefused
from trio_chat.hypercorn_worker import ListeningPort
from trio_chat.metrics.figures import WorkerFigures, WorkerReport
from trio_chat.protocol import frame_room
from trio_chat.supervision import ask_holder
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import chat_app, open_lifespan, running_worker
from servers import free_port

Message = dict[str, Any]


class RecordingHub(LocalHub):
    """A LocalHub that records when its ``run`` task starts and ends."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.ended = trio.Event()

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.running = True
        try:
            await super().run(listener, task_status=task_status)
        finally:
            self.running = False
            self.ended.set()


class UnreachableHub(LocalHub):
    """A hub whose ``run`` fails before it has joined."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.lowlevel.checkpoint()
        raise self.error


ROOM = "general"
BODY = '{"room":"general","sender":"a","message":"b"}'


def drain(channel: trio.MemoryReceiveChannel[Queued]) -> list[Queued]:
    """What waits in a subscriber's channel."""
    queued = []
    while True:
        try:
            queued.append(channel.receive_nowait())
        except trio.WouldBlock:
            return queued


class Frames:
    """A listener that keeps what it is delivered."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.figures = WorkerFigures()

    def report(self) -> WorkerReport:
        return self.figures.report(pid=0, connections=0, hub_up=True)

    def deliver(self, frames: Sequence[str]) -> None:
        self.frames.extend(frames)

    def messages_missed(self, epoch: str) -> None:
        raise AssertionError("a LocalHub never loses messages")


async def test_startup_completes_and_puts_the_worker_in_the_state() -> None:
    hub = RecordingHub()
    settings = Settings(subscriber_buffer=7)
    async with running_worker(chat_app(hub, settings)) as state:
        worker = state[STATE_KEY]
        running = hub.running

    assert isinstance(worker, Worker)
    assert worker.link.connected
    assert worker.settings is settings
    assert running


async def test_startup_joins_the_hub_so_published_messages_reach_the_worker() -> None:
    hub = LocalHub(clock_ms=lambda: 5)
    async with running_worker(chat_app(hub)) as state:
        worker = state[STATE_KEY]
        assert isinstance(worker, Worker)
        with worker.fanout.subscribe(lambda code: None) as subscriber:
            # The hub sends a worker the frames of its members' rooms only.
            pending = worker.fanout.enter(subscriber, ROOM)
            worker.link.present(1, ROOM, "ann")
            await hub.publish(BODY)
            queued = drain(subscriber.receive_channel)

    assert queued[0] is pending
    assert len(queued) == 3  # The pending join, then the presence and message batches.
    presence, message = [f for batch in queued if not isinstance(batch, PendingJoin) for f in batch]
    assert presence.startswith('{"type":"presence","version":1,"room":"general",')
    assert message == '{"type":"message","id":1,"ts":5,"room":"general","sender":"a","message":"b"}'


async def test_shutdown_completes_and_ends_the_hub_task() -> None:
    hub = RecordingHub()
    async with open_lifespan(chat_app(hub)) as lifespan:
        assert await lifespan.startup() == {"type": "lifespan.startup.complete"}
        assert not hub.ended.is_set()

        assert await lifespan.shutdown() == {"type": "lifespan.shutdown.complete"}
        await lifespan.wait_returned()

    assert hub.ended.is_set()


async def test_after_shutdown_the_hub_no_longer_delivers_to_the_worker() -> None:
    hub = LocalHub()
    other = Frames()
    async with running_worker(chat_app(hub)) as state:
        worker = state[STATE_KEY]
        assert isinstance(worker, Worker)
        worker.link.present(1, ROOM, "ann")  # A member: the hub sent it the room's frames.

    async with trio.open_nursery() as nursery:
        link = await nursery.start(hub.run, other)
        link.present(1, ROOM, "bob")
        with worker.fanout.subscribe(lambda code: None) as subscriber:
            pending = worker.fanout.enter(subscriber, ROOM)
            await hub.publish(BODY)
            assert drain(subscriber.receive_channel) == [pending]
        nursery.cancel_scope.cancel()

    # The hub itself still works: the other worker got the message.
    assert [frame_room(frame) for frame in other.frames] == [ROOM, ROOM]
    assert other.frames[-1].startswith('{"type":"message","id":1,')


@pytest.mark.parametrize(
    "error",
    [
        HubUnavailable("cannot reach the hub at unix:/run/hub.sock: connection refused"),
        HubConfigError("'ftp://x': expected unix:PATH or tcp://HOST:PORT"),
    ],
)
async def test_hub_that_cannot_be_joined_fails_startup_saying_what_to_check(
    error: Exception,
) -> None:
    app = chat_app(UnreachableHub(error))
    async with open_lifespan(app) as lifespan:
        answer = await lifespan.startup()
        await lifespan.wait_returned()

    assert answer["type"] == "lifespan.startup.failed"
    assert str(error) in answer["message"]
    assert re.search(r"\bTRIO_CHAT_HUB\b", answer["message"])  # the variable, not only its kin
    assert STATE_KEY not in lifespan.state


async def test_an_unexpected_error_at_startup_fails_startup_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = chat_app(UnreachableHub(RuntimeError("boom")))
    async with open_lifespan(app) as lifespan:
        answer = await lifespan.startup()
        await lifespan.wait_returned()

    # Not an exception out of the lifespan: Hypercorn would carry on without a hub.
    assert answer["type"] == "lifespan.startup.failed"
    assert "RuntimeError: boom" in answer["message"]
    [logged] = [r for r in caplog.records if r.getMessage() == "event=startup_error"]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
    assert STATE_KEY not in lifespan.state


async def test_hub_factory_config_error_fails_startup_with_its_message() -> None:
    def factory(settings: Settings) -> Hub:
        raise HubConfigError("TRIO_CHAT_HUB=tcp://h:1 needs TRIO_CHAT_HUB_SECRET_FILE")

    async with open_lifespan(ChatApp(Settings(), hub_factory=factory)) as lifespan:
        answer = await lifespan.startup()
        await lifespan.wait_returned()

    assert answer["type"] == "lifespan.startup.failed"
    assert "TRIO_CHAT_HUB_SECRET_FILE" in answer["message"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRIO_CHAT_MAX_MESSAGE_BYTES", "abc"),
        ("TRIO_CHAT_SUBSCRIBER_BUFFER", "0"),
        ("TRIO_CHAT_LOG_LEVEL", "chatty"),
    ],
)
async def test_bad_environment_setting_fails_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    hubs: list[Hub] = []

    def factory(settings: Settings) -> Hub:
        hubs.append(LocalHub())
        return hubs[-1]

    async with open_lifespan(ChatApp(hub_factory=factory)) as lifespan:
        answer = await lifespan.startup()
        await lifespan.wait_returned()

    assert answer["type"] == "lifespan.startup.failed"
    assert name in answer["message"]
    assert value in answer["message"]
    assert hubs == []  # no hub was opened for a worker that cannot start


async def test_settings_come_from_the_environment_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = ChatApp()  # made before the variables are set, like the module-level ``app``
    monkeypatch.setenv("TRIO_CHAT_HUB", "local")
    monkeypatch.setenv("TRIO_CHAT_SUBSCRIBER_BUFFER", "3")
    async with running_worker(app) as state:
        worker = state[STATE_KEY]

    assert isinstance(worker, Worker)
    assert worker.settings.subscriber_buffer == 3
    assert type(worker.link).__name__ == "_LocalLink"  # TRIO_CHAT_HUB=local: no hub process


# In a Hypercorn worker process: the worker ends the server itself (fail_startup), saying why
# in one line; the real one, end to end: test_e2e_lifecycle.py.


class WorkerEnded(BaseException):
    """Stands for the end of the worker process (``os._exit``)."""


class FakeShutdownEvent:
    def __init__(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag


class FakeHypercornWorker:
    """This process as a Hypercorn worker: its master's event, its ports, and its end."""

    def __init__(self, ports: tuple[ListeningPort, ...] = ()) -> None:
        self.master_pid = os.getppid()
        self.shutdown_event = FakeShutdownEvent()
        self.tcp_ports = ports
        self.failed = 0

    @property
    def shared_ports(self) -> tuple[ListeningPort, ...]:
        return tuple(listening for listening in self.tcp_ports if listening.shared)

    def fail_startup(self, report: Callable[[], None]) -> NoReturn:
        self.failed += 1
        report()
        raise WorkerEnded


@pytest.fixture
def in_hypercorn(monkeypatch: pytest.MonkeyPatch) -> FakeHypercornWorker:
    worker = FakeHypercornWorker()
    monkeypatch.setattr(hypercorn_worker, "current", lambda: worker)
    return worker


async def start_until_the_worker_ends(app: ChatApp) -> list[Message]:
    """Run the lifespan's startup until the worker ends; what it sent Hypercorn meanwhile."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    # The nursery wraps the end when it comes from inside it.
    with pytest.RaisesGroup(WorkerEnded, allow_unwrapped=True, flatten_subgroups=True):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def test_in_a_hypercorn_worker_a_bad_setting_ends_it_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    in_hypercorn: FakeHypercornWorker,
) -> None:
    monkeypatch.setenv("TRIO_CHAT_MAX_MESSAGE_BYTES", "lots")

    sent = await start_until_the_worker_ends(ChatApp())

    assert sent == []  # Not lifespan.startup.failed: Hypercorn would print a traceback.
    assert in_hypercorn.failed == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trio_chat configuration error: TRIO_CHAT_MAX_MESSAGE_BYTES='lots'")
    assert not [record for record in caplog.records if record.exc_info]


async def test_in_a_hypercorn_worker_a_bug_keeps_its_traceback_and_its_line(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    in_hypercorn: FakeHypercornWorker,
) -> None:
    sent = await start_until_the_worker_ends(chat_app(UnreachableHub(RuntimeError("boom"))))

    assert sent == []
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trio_chat failed to start: RuntimeError: boom (a bug")
    [logged] = [r for r in caplog.records if r.getMessage() == "event=startup_error"]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError


async def test_in_a_hypercorn_worker_a_hub_that_refused_to_start_gives_its_own_reason(
    capsys: pytest.CaptureFixture[str], in_hypercorn: FakeHypercornWorker
) -> None:
    reason = "port 8000 (to serve 127.0.0.1:8000) is taken by another trio_chat server"
    error = HubUnavailable(f"cannot reach the hub at unix:/run/hub.sock: {reason}")
    error.__cause__ = HubRefused(reason)

    await start_until_the_worker_ends(chat_app(UnreachableHub(error)))

    assert capsys.readouterr().err.splitlines() == [f"trio_chat cannot start: {reason}"]


async def test_a_server_of_a_shared_hub_will_not_start_on_a_port_another_chat_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    worker = FakeHypercornWorker((ListeningPort(port, f"127.0.0.1:{port}", shared=True),))
    monkeypatch.setattr(hypercorn_worker, "current", lambda: worker)
    claims = claim_ports(os.getpid(), {port: f"0.0.0.0:{port}"}, automatic_chat(os.getpid()))
    claims.answer_in_background()
    try:
        await start_until_the_worker_ends(ChatApp(Settings(hub="local")))
    finally:
        claims.close()

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"trio_chat cannot start: port {port} (to serve 127.0.0.1:{port})")
    assert f"Hypercorn master pid {os.getpid()}, serving 0.0.0.0:{port}" in line


async def test_workers_of_a_shared_hub_hold_their_port_for_their_chat_until_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    listening = ListeningPort(port, f"127.0.0.1:{port}", shared=True)
    monkeypatch.setattr(hypercorn_worker, "current", lambda: FakeHypercornWorker((listening,)))
    hub = LocalHub()
    settings = Settings(hub="unix:/run/trio-chat/hub.sock")
    chat = chat_identity(settings, os.getppid())

    async with running_worker(chat_app(hub, settings)), running_worker(chat_app(hub, settings)):
        holder = await ask_holder(port)  # One of the two; the other shares its claim.
        assert holder is not None
        assert holder.claimant == Claimant(os.getppid(), f"127.0.0.1:{port}", chat)

    assert await ask_holder(port) is None


async def test_in_a_hypercorn_worker_the_masters_event_closes_the_sessions(
    in_hypercorn: FakeHypercornWorker, autojump_clock: trio.testing.MockClock
) -> None:
    async with running_worker(chat_app(LocalHub())) as state:
        worker = state[STATE_KEY]
        assert isinstance(worker, Worker)
        assert not worker.closing

        in_hypercorn.shutdown_event.flag = True
        await worker.shutting_down.wait()

        assert worker.closing
