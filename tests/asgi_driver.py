"""Drive the ASGI app in-process, the way Hypercorn's Trio worker does, over memory channels.

- ``open_lifespan`` / ``running_worker``: the worker's lifespan (startup, then shutdown), with the
  ``state`` dict Hypercorn copies into every connection's scope.
- ``request``: one HTTP request, collected into a frozen ``Response``.
- ``connect_websocket`` / ``open_chat``: one WebSocket session, the app running as a task, the
  test playing the client through a ``WebSocketClient``.

Rules: nothing here sleeps; every wait on the app is guarded by ``trio.fail_after`` so that a
hang fails the test instead of the run. Channels towards the test are unbounded, so the app is
never held up by the test unless the test asks for it (``WebSocketClient.stall``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_chat import ChatApp
from trio_chat.asgi_types import Message, Receive, Scope, Send
from trio_chat.config import Settings
from trio_chat.hub_link import Hub, HubLink, HubListener, HubUnavailable, Snapshot
from trio_chat.hub_link.interface import Older
from trio_chat.hub_link.local import LocalHub

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The wall clock of ``fixed_clock_hub``-style hubs: every message is stamped with it.
NOW_MS = 1_700_000_000_123
DEFAULT_ROOM = Settings().default_room


def fixed_clock_hub(history_size: int = 100) -> LocalHub:
    """An in-process hub that stamps every message with ``NOW_MS``."""
    return LocalHub(history_size, clock_ms=lambda: NOW_MS)


def chat_frame(
    message_id: int, sender: str, message: str, room: str = DEFAULT_ROOM, ts: int = NOW_MS
) -> dict[str, Any]:
    """The frame every member of ``room`` is sent for a published message."""
    return {
        "type": "message",
        "id": message_id,
        "ts": ts,
        "room": room,
        "sender": sender,
        "message": message,
    }


#: How long the test waits for the app before calling it a hang.
APP_TIMEOUT_SECONDS = 5.0


def chat_app(hub: Hub, settings: Settings | None = None) -> ChatApp:
    """An app (one "worker") whose lifespan joins ``hub`` instead of opening its own."""
    return ChatApp(settings or Settings(), hub_factory=lambda _settings: hub)


class GatedHub(LocalHub):
    """A LocalHub whose snapshots (a client joining a room) can be held before or after they
    are taken, or have their answer lost, and whose pages of scrollback (``older``) can be
    held before they are read."""

    def __init__(self, history_size: int = 100) -> None:
        super().__init__(history_size, clock_ms=lambda: 1)
        self.before_snapshot: trio.Event | None = None
        self.after_snapshot: trio.Event | None = None
        self.before_older: trio.Event | None = None
        #: Set once an ``older`` call is waiting on ``before_older``.
        self.older_held = trio.Event()
        #: If set, called once a snapshot is taken, which then fails with ``HubUnavailable``
        #: as if the hub's answer had been lost on the way.
        self.lose_answer: Callable[[], None] | None = None

    async def run(
        self,
        listener: HubListener,
        *,
        task_status: trio.TaskStatus[HubLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        hub = self

        class GatedLink:
            def __init__(self, link: HubLink) -> None:
                self._link = link

            def __getattr__(self, name: str) -> Any:
                return getattr(self._link, name)

            async def snapshot(
                self, room: str, since: int | None, epoch: str | None, connection: int, name: str
            ) -> Snapshot:
                if hub.before_snapshot is not None:
                    await hub.before_snapshot.wait()
                snapshot = await self._link.snapshot(room, since, epoch, connection, name)
                if hub.after_snapshot is not None:
                    await hub.after_snapshot.wait()
                if hub.lose_answer is not None:
                    hub.lose_answer()
                    raise HubUnavailable("the answer was lost")
                return snapshot

            async def older(self, room: str, before: int, limit: int) -> Older:
                if hub.before_older is not None:
                    hub.older_held.set()
                    await hub.before_older.wait()
                return await self._link.older(room, before, limit)

        class Status:
            def started(self, link: HubLink) -> None:
                task_status.started(GatedLink(link))

        await super().run(listener, task_status=Status())  # type: ignore[arg-type]


# Lifespan


@dataclasses.dataclass(frozen=True)
class StartedWorker:
    """One worker of the app, started in-process on a ``LocalHub`` of its own."""

    app: ChatApp
    #: Its lifespan state, which every request's scope carries.
    state: dict[str, Any]
    hub: LocalHub


@dataclasses.dataclass
class Lifespan:
    """The server's side of one lifespan call; the app runs as a task meanwhile."""

    state: dict[str, Any]
    to_app: trio.MemorySendChannel[Message]
    from_app: trio.MemoryReceiveChannel[Message]
    #: Set when the app's lifespan call has returned.
    returned: trio.Event

    async def startup(self) -> Message:
        """Send ``lifespan.startup``; the app's answer."""
        await self.to_app.send({"type": "lifespan.startup"})
        return await self._answer()

    async def shutdown(self) -> Message:
        """Send ``lifespan.shutdown``; the app's answer."""
        await self.to_app.send({"type": "lifespan.shutdown"})
        return await self._answer()

    async def wait_returned(self) -> None:
        with trio.fail_after(APP_TIMEOUT_SECONDS):
            await self.returned.wait()

    async def _answer(self) -> Message:
        with trio.fail_after(APP_TIMEOUT_SECONDS):
            return await self.from_app.receive()


@asynccontextmanager
async def open_lifespan(app: ASGIApp) -> AsyncIterator[Lifespan]:
    """Run the app's lifespan call as a task; cancelled on exit if it has not returned."""
    state: dict[str, Any] = {}
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    to_app, app_receive = trio.open_memory_channel[Message](math.inf)
    app_send, from_app = trio.open_memory_channel[Message](math.inf)
    lifespan = Lifespan(state, to_app, from_app, trio.Event())

    async def run() -> None:
        try:
            await app(scope, app_receive.receive, app_send.send)
        finally:
            lifespan.returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield lifespan
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_worker(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """A started worker: yields its lifespan ``state``; shuts it down cleanly on exit."""
    async with open_lifespan(app) as lifespan:
        answer = await lifespan.startup()
        assert answer == {"type": "lifespan.startup.complete"}, answer
        yield lifespan.state
        answer = await lifespan.shutdown()
        assert answer == {"type": "lifespan.shutdown.complete"}, answer
        await lifespan.wait_returned()


# HTTP


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    #: Lower-case names; the driver fails if the app sends a header twice.
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


async def request(
    app: ASGIApp,
    state: dict[str, Any] | None,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    raw_path: bytes | None = None,
) -> Response:
    """One HTTP/1.1 request without a body; ``path`` is the decoded path, as Hypercorn gives it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape") if raw_path is None else raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    if state is not None:
        scope["state"] = dict(state)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    with trio.fail_after(APP_TIMEOUT_SECONDS):
        await app(scope, receive, send)
    return _collect_response(sent)


def _collect_response(sent: list[Message]) -> Response:
    assert sent, "the app sent no response"
    start, *bodies = sent
    assert start["type"] == "http.response.start", start
    assert bodies, "the app sent no http.response.body"
    assert all(message["type"] == "http.response.body" for message in bodies), bodies
    assert not bodies[-1].get("more_body", False), "the response body never ended"
    names = [name.decode("latin-1").lower() for name, _ in start["headers"]]
    assert len(names) == len(set(names)), f"a header was sent twice: {names}"
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in start["headers"]
    }
    body = b"".join(message.get("body", b"") for message in bodies)
    return Response(start["status"], headers, body)


# WebSocket


class WebSocketClient:
    """The test's end of one WebSocket session; the app runs in a task of its own."""

    def __init__(
        self,
        app: ASGIApp,
        state: dict[str, Any] | None,
        path: str,
        query_string: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._app = app
        #: The frames the session opened with (welcome, history, presence), once read.
        self.opening: list[dict[str, Any]] = []
        self.scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query_string,
            "root_path": "",
            "headers": headers or [],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
        }
        if state is not None:
            self.scope["state"] = dict(state)
        self._to_app, self._app_receive = trio.open_memory_channel[Message](math.inf)
        self._app_send, self._from_app = trio.open_memory_channel[Message](math.inf)
        #: Set when the app's call has returned.
        self.returned = trio.Event()
        self._cancel_scope = trio.CancelScope()
        self._stalled: set[str] = set()
        self._reading_again = trio.Event()
        self._gone = False
        #: Set once the app is blocked in a stalled ``send``.
        self.send_stalled = trio.Event()
        #: The frames of a batched text frame (one JSON object per line) not read yet.
        self._batched: collections.deque[str] = collections.deque()
        #: The text of every frame the app has sent (read or not), in order.
        self.texts_sent: list[str] = []

    async def run_app(self) -> None:
        try:
            with self._cancel_scope:
                await self._app(self.scope, self._app_receive.receive, self._send_from_app)
        finally:
            self.returned.set()

    async def _send_from_app(self, message: Message) -> None:
        if message["type"] in self._stalled:
            # Like a client that stopped reading: Hypercorn's send waits, shielded from
            # cancellation, until the client reads again (``unstall``) or its connection goes.
            self.send_stalled.set()
            with trio.CancelScope(shield=True):
                await self._reading_again.wait()
            if self._gone:
                return  # Hypercorn drops what is sent to a closed connection.
        if message["type"] == "websocket.send" and message.get("text") is not None:
            self.texts_sent.append(message["text"])
        self._app_send.send_nowait(message)

    # What the client does.

    async def connect(self) -> None:
        await self._to_app.send({"type": "websocket.connect"})

    async def send_text(self, text: str) -> None:
        await self._to_app.send({"type": "websocket.receive", "bytes": None, "text": text})

    async def send_json(self, document: Any) -> None:
        await self.send_text(json.dumps(document))

    async def send_bytes(self, data: bytes) -> None:
        await self._to_app.send({"type": "websocket.receive", "bytes": data, "text": None})

    async def disconnect(self, code: int = 1000) -> None:
        """Leave, and wait for the app's session to end."""
        self._gone = True
        self._reading_again.set()  # A send to a peer that is gone fails at once.
        await self._to_app.send({"type": "websocket.disconnect", "code": code})
        await self.wait_returned()

    def stall(self, *message_types: str) -> None:
        """From now on the app's ``send`` of these message types waits until ``unstall``."""
        self._stalled.update(message_types or ("websocket.send",))
        self._reading_again = trio.Event()

    def unstall(self) -> None:
        """The client reads again: stalled sends complete."""
        self._stalled.clear()
        self._reading_again.set()

    def cancel_nowait(self) -> None:
        """Cancel the session task, as Hypercorn does at shutdown."""
        self._cancel_scope.cancel()

    async def cancel(self) -> None:
        """Cancel the session task and wait for it to end."""
        self.cancel_nowait()
        await self.wait_returned()

    # What the client sees.

    async def receive(self) -> Message:
        """The next ASGI message the app sent."""
        with trio.fail_after(APP_TIMEOUT_SECONDS):
            return await self._from_app.receive()

    async def receive_json(self, *, presence: bool = False) -> Any:
        """The next frame the app sent, which must be a text frame, decoded.

        Presence frames come whenever someone joins or leaves; they are skipped unless asked for.
        """
        while True:
            if not self._batched:
                message = await self.receive()
                assert message["type"] == "websocket.send", message
                assert message.get("bytes") is None, message
                # Batch mode sends several frames in one, a line each; JSON has no raw "\n".
                self._batched.extend(message["text"].split("\n"))
            frame = json.loads(self._batched.popleft())
            if presence or frame.get("type") != "presence":
                return frame

    async def read_opening(self) -> list[dict[str, Any]]:
        """Read the opening frames, up to and including the first presence frame."""
        while not self.opening or self.opening[-1]["type"] != "presence":
            self.opening.append(await self.receive_json(presence=True))
        return self.opening

    @property
    def history(self) -> dict[str, Any]:
        [history] = [frame for frame in self.opening if frame["type"] == "history"]
        return history

    def received_nowait(self) -> list[Message]:
        """Everything the app has sent and the test has not read yet, presence frames aside."""
        messages: list[Message] = []
        while True:
            try:
                message = self._from_app.receive_nowait()
            except trio.WouldBlock:
                return messages
            if not message.get("text", "").startswith('{"type":"presence"'):
                messages.append(message)

    def frames_nowait(self) -> list[dict[str, Any]]:
        """Every frame the app has sent and the test has not read yet, presence frames
        included, decoded (the lines of a batched frame one by one)."""
        frames = [json.loads(line) for line in self._batched]
        self._batched.clear()
        while True:
            try:
                message = self._from_app.receive_nowait()
            except trio.WouldBlock:
                return frames
            assert message["type"] == "websocket.send", message
            assert message.get("bytes") is None, message
            frames.extend(json.loads(line) for line in message["text"].split("\n"))

    async def join(self, room: str, **fields: Any) -> list[dict[str, Any]]:
        """Send a ``join`` frame (with ``fields``: ``since``) and read its answer up to the
        room's presence frame."""
        await self.send_json({"type": "join", "room": room, **fields})
        return await self.read_join(room)

    async def read_join(self, room: str) -> list[dict[str, Any]]:
        """The frames up to and including the next presence frame of ``room``."""
        frames = [await self.receive_json(presence=True)]
        while frames[-1]["type"] != "presence" or frames[-1]["room"] != room:
            frames.append(await self.receive_json(presence=True))
        return frames

    async def wait_returned(self) -> None:
        with trio.fail_after(APP_TIMEOUT_SECONDS):
            await self.returned.wait()


@asynccontextmanager
async def connect_websocket(
    app: ASGIApp,
    state: dict[str, Any] | None,
    path: str = "/chat",
    query_string: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: Sequence[str] = (),
) -> AsyncIterator[WebSocketClient]:
    """Start a session and send ``websocket.connect``; the session is cancelled on exit."""
    client = WebSocketClient(app, state, path, query_string, headers)
    client.scope["subprotocols"] = list(subprotocols)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run_app)
        try:
            await client.connect()
            yield client
        finally:
            # Like a server shutdown; the nursery then waits for the session to end.
            client.cancel_nowait()


@asynccontextmanager
async def open_chat(
    app: ASGIApp,
    state: dict[str, Any],
    query_string: bytes = b"",
    subprotocols: Sequence[str] = (),
) -> AsyncIterator[WebSocketClient]:
    """A session on ``/chat`` that has been accepted and has read its opening frames
    (welcome, history, presence); in batch mode if ``subprotocols`` asks for it."""
    async with connect_websocket(
        app, state, query_string=query_string, subprotocols=subprotocols
    ) as client:
        accept = await client.receive()
        expected: Message = {"type": "websocket.accept"}
        if subprotocols:
            expected["subprotocol"] = subprotocols[0]
        assert accept == expected, accept
        opening = await client.read_opening()
        assert opening[0]["type"] == "welcome", opening
        yield client


# Shared by the tests of rooms and of scrollback.

#: Most tests send faster than the default rate allows; the rate limit has a test of its own.
NO_RATE_LIMIT = Settings(rate=0)
#: So small that a bucket never refills during a test: exactly ``burst`` frames get through.
NEGLIGIBLE_RATE = 1e-9
#: A message frame's keys, in order.
MESSAGE_KEYS = ["type", "id", "ts", "room", "sender", "message"]


@asynccontextmanager
async def worker(
    hub: LocalHub, settings: Settings = NO_RATE_LIMIT
) -> AsyncIterator[tuple[ChatApp, dict[str, Any]]]:
    """A started worker on ``hub``: its app and lifespan state."""
    app = chat_app(hub, settings)
    async with running_worker(app) as state:
        yield app, state


async def settled(client: WebSocketClient) -> list[dict[str, Any]]:
    """Once the app has done all it can: every frame sent to ``client`` not read yet,
    presence frames included."""
    await trio.testing.wait_all_tasks_blocked()
    return client.frames_nowait()


async def assert_nothing_more(*clients: WebSocketClient) -> None:
    await trio.testing.wait_all_tasks_blocked()
    for client in clients:
        assert client.frames_nowait() == []


def assert_error(frame: dict[str, Any], code: str, room: str | None = None) -> None:
    """An error frame with ``code``, with ``"room"`` last exactly when it is about one."""
    keys = ["type", "code", "message"] + (["room"] if room is not None else [])
    assert list(frame) == keys, frame
    assert (frame["type"], frame["code"], frame.get("room")) == ("error", code, room)
    assert isinstance(frame["message"], str) and frame["message"]
