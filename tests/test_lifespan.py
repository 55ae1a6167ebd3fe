"""The worker's lifespan: startup joins the hub and publishes the worker; shutdown undoes it all.

Failures to start answer ``lifespan.startup.failed`` with a message saying what to fix, so that
Hypercorn stops instead of serving a worker that cannot chat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
import trio

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.fanout import PendingJoin, Queued
from trio_chat.hub_address import HubConfigError
from trio_chat.hub_link import Hub, HubLink, HubListener, HubUnavailable
from trio_chat.hub_link.local import LocalHub
from trio_chat.protocol import frame_room
from trio_chat.worker import STATE_KEY, Worker

from asgi_driver import chat_app, open_lifespan, running_worker


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
