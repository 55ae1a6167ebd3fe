"""For the browser tests: a real server driven without Trio, and a page that records what it does.

Playwright's async API needs asyncio and this suite runs under pytest-trio, so the browser tests
are synchronous: Playwright's sync API, and a server whose output a thread reads. As in
``servers.py``, every wait is on a condition (an output line, a process exit) with a deadline,
never a fixed delay, and whatever is started is stopped, the hub included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    WebError,
    WebSocket,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from servers import (
    ROOT,
    STARTUP_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    assert_nothing_left_behind,
    free_port,
    hypercorn_command,
)

CHROMIUM = Path(os.environ.get("TRIO_CHAT_CHROMIUM", "/usr/bin/chromium"))
# Headless Chromium as root in a container needs --no-sandbox; the others keep a test browser
# quiet and quick to start: no GPU, no update or field-trial requests, no first-run pages.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INSTALL_HINT = (
    f"Chromium is needed for the browser tests and was not found at {CHROMIUM}: install it "
    "with `apt-get install -y chromium` (Debian/Ubuntu), or point TRIO_CHAT_CHROMIUM at a "
    "Chromium binary"
)
NAME_KEY = "trio_chat.name"  # static/names.js
#: The log of the room shown: every room has its own (static/message-log.js), one shown at once.
SHOWN_LOG = "#messages .room-log:not([hidden])"
#: How long a page may take to show something the server sent.
UI_TIMEOUT_MS = 10_000
#: How long a page may take to reconnect by itself: its backoff (0.5 s, 1 s, 2 s, 4 s, ...)
#: while the server is away, plus a server start.
RECONNECT_TIMEOUT_MS = 30_000
GOING_AWAY = 1001
EXTENSIONS_HEADER = "sec-websocket-extensions"
HUB_STARTED = re.compile(r"started the hub \(pid (\d+)\)")

expect.set_options(timeout=UI_TIMEOUT_MS)


def token() -> str:
    """A marker that keeps one test's messages apart from another's on a shared server."""
    return uuid.uuid4().hex[:6]


def chromium_browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, for a module fixture; skips, saying how to install
    it, where it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(INSTALL_HINT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class ServerProcess:
    """``hypercorn -c hypercorn.toml -k trio -w N trio_chat:app`` on one loopback port.

    It can be stopped and started again on the same port, as a deploy would. A reader thread
    keeps draining the output, so the server never blocks on a full pipe. ``env`` adds to the
    environment it runs in (``TRIO_CHAT_*`` settings).
    """

    def __init__(self, port: int, workers: int = 4, env: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.workers = workers
        self.env = dict(env or {})
        self.output: list[str] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._first_line = 0  # where the current run's output starts

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_pids(self) -> list[int]:
        lines = self.output[self._first_line :]
        return [int(match[1]) for line in lines if (match := HUB_STARTED.search(line))]

    def start(self) -> None:
        with self._changed:
            self._first_line = len(self.output)
        self._process = subprocess.Popen(
            hypercorn_command(self.port, self.workers),
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()
        self.wait_for_output("Running on", count=self.workers)

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            with self._changed:
                self.output.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        process.stdout.close()
        with self._changed:
            self._changed.notify_all()

    def wait_for_output(
        self, text: str, count: int = 1, timeout: float = STARTUP_TIMEOUT_SECONDS
    ) -> None:
        """Wait until this run has printed ``count`` lines containing ``text``."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in self.output[self._first_line :]) < count:
                if self._process.poll() is not None:
                    raise AssertionError("the server exited:\n" + "\n".join(self.output))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {count} x {text!r} in:\n" + "\n".join(self.output))
                self._changed.wait(remaining)

    def stop(self) -> None:
        """SIGTERM, as a process manager would; then wait for the server and its hub to end."""
        process, self._process = self._process, None
        if process is None:
            return
        hubs = self.hub_pids
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(
                "hypercorn did not stop on SIGTERM:\n" + "\n".join(self.output)
            ) from None
        finally:
            assert self._reader is not None
            self._reader.join(STOP_TIMEOUT_SECONDS)
        for pid in hubs:
            wait_gone(pid)
        assert_nothing_left_behind(process.pid)


def wait_gone(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Wait until process ``pid`` has exited (a zombie awaiting its reaper counts as gone).

    It is not our child, so there is nothing to block on: poll, under a deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def running_server(**options: Any) -> Iterator[ServerProcess]:
    """A started ServerProcess (``options`` as for it, but the port), stopped after use, with a
    store of its own that its restarts keep (unless ``env`` names one)."""
    with tempfile.TemporaryDirectory(prefix="trio-chat-") as data_dir:
        env = {"TRIO_CHAT_DATA_DIR": data_dir, **(options.pop("env", None) or {})}
        server = ServerProcess(free_port(), env=env, **options)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@dataclass
class ChatPage:
    """One tab of the chat, in its own browser context, and everything it did.

    What is recorded is recorded on the context, so that whatever else the page might open
    (a popup, a worker) is covered too. The locators follow the page's DOM contract (see the
    module docstring of test_browser.py).
    """

    context: BrowserContext
    page: Page = field(init=False)
    requests: list[str] = field(default_factory=list)
    socket_urls: list[str] = field(default_factory=list)
    #: Every frame the page sent on its chat WebSockets, parsed, in order.
    sent_frames: list[dict[str, Any]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        browser: Browser,
        origin: str,
        name: str | None = None,
        before_load: Callable[[Page], object] | None = None,
        path: str = "/",
        **context_options: Any,
    ) -> ChatPage:
        """Open the page at ``path`` (``"/#dev"``: a link to a room); ``name`` is put where the
        page keeps it, as if chosen on an earlier visit. ``before_load(page)`` runs before the
        page loads (to add routes, listeners)."""
        context = browser.new_context(**context_options)
        context.set_default_timeout(UI_TIMEOUT_MS)
        if name is not None:
            key, value, own = json.dumps(NAME_KEY), json.dumps(name), json.dumps(origin)
            # Only in the chat's own documents: the first about:blank has no localStorage.
            context.add_init_script(
                f"if (location.origin === {own} && localStorage.getItem({key}) === null) "
                f"localStorage.setItem({key}, {value})"
            )
        chat = cls(context)
        chat._record()
        chat.page = context.new_page()
        if before_load is not None:
            before_load(chat.page)
        chat.page.goto(origin + path)
        return chat

    def _record(self) -> None:
        context = self.context
        context.on("request", lambda request: self.requests.append(request.url))
        # WebSockets are reported per page only: watch every page the context opens.
        context.on("page", lambda page: page.on("websocket", self._watch_socket))

        def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        context.on("dialog", on_dialog)

        def on_error(error: WebError) -> None:
            self.errors.append(f"page error: {error.error}")

        context.on("weberror", on_error)

        def on_console(message: ConsoleMessage) -> None:
            # Chromium logs each failed WebSocket attempt: that is the network, not the page.
            if message.type == "error" and not message.text.startswith("WebSocket connection"):
                self.errors.append(message.text)

        context.on("console", on_console)

    def _watch_socket(self, socket: WebSocket) -> None:
        self.socket_urls.append(socket.url)

        def sent(payload: str | bytes) -> None:
            if isinstance(payload, str):
                self.sent_frames.append(json.loads(payload))

        socket.on("framesent", sent)

    def close(self) -> None:
        self.context.close()

    # What the page shows

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def log(self) -> Locator:
        """The log of the room shown."""
        return self.page.locator(SHOWN_LOG)

    def room_log(self, room: str) -> Locator:
        """The log of ``room``, shown or not."""
        return self.page.locator(f"#messages .room-log[data-room={room!r}]")

    @property
    def messages(self) -> Locator:
        """The messages of the room shown."""
        return self.log.locator(".message")

    def message(self, text: str, room: str | None = None) -> Locator:
        """The rendered messages whose text is exactly ``text``, in the room shown or ``room``."""
        exactly = re.compile(f"^{re.escape(text)}$")
        messages = self.messages if room is None else self.room_log(room).locator(".message")
        return messages.filter(has=self.page.locator(".text", has_text=exactly))

    def system(self, kind: str) -> Locator:
        return self.log.locator(f".system[data-kind={kind!r}]")

    def texts(self, room: str | None = None) -> list[str]:
        log = self.log if room is None else self.room_log(room)
        return log.locator(".message .text").all_text_contents()

    def room_button(self, room: str) -> Locator:
        """The button of a room joined, in the room list."""
        return self.page.locator(f"#joined-rooms .room-button[data-room={room!r}]")

    def unread(self, room: str) -> Locator:
        """The unread count of a room joined ("" when none: hidden)."""
        return self.room_button(room).locator(".unread-badge")

    def join_room(self, room: str) -> None:
        """Join (or show) ``room`` by name, as a person would with the form, and wait until its
        history is shown."""
        box = self.page.locator("#join-input")
        box.fill(room)
        box.press("Enter")
        self.wait_in_room(room)

    def show_room(self, room: str) -> None:
        self.room_button(room).click()
        expect(self.log).to_have_attribute("data-room", room)

    def wait_in_room(self, room: str, timeout: float = UI_TIMEOUT_MS) -> None:
        """Wait until ``room`` is shown and its history has arrived."""
        expect(self.log).to_have_attribute("data-room", room, timeout=timeout)
        expect(self.log).to_have_attribute("data-history", re.compile("^(fresh|resumed)$"))

    def wait_online(self, timeout: float = UI_TIMEOUT_MS) -> int:
        """Wait for the page to be connected; returns the pid of the worker it is on."""
        expect(self.status).to_have_attribute("data-worker", re.compile(r"^\d+$"), timeout=timeout)
        expect(self.status).to_have_attribute("data-state", "online")
        return int(self.status.get_attribute("data-worker") or 0)

    def send(self, text: str) -> None:
        """Type ``text`` and press Enter, as a person would."""
        box = self.page.locator("#message-input")
        box.fill(text)
        box.press("Enter")

    def rename(self, name: str) -> None:
        box = self.page.locator("#name-input")
        box.fill(name)
        box.press("Enter")

    def last_socket_query(self) -> dict[str, list[str]]:
        assert self.socket_urls, "the page opened no WebSocket"
        return parse_qs(urlsplit(self.socket_urls[-1]).query)


@dataclass
class HandshakeLog:
    """What the browser itself put in its WebSocket handshakes' ``Sec-WebSocket-Extensions``
    and what it got back (None: no such header), read from Chromium's network events (CDP)."""

    offered: list[str | None] = field(default_factory=list)
    answered: list[str | None] = field(default_factory=list)

    def record(self, page: Page) -> None:
        """A ``before_load`` for ``ChatPage.open``."""
        session = page.context.new_cdp_session(page)
        session.send("Network.enable")
        session.on(
            "Network.webSocketWillSendHandshakeRequest",
            lambda event: self.offered.append(_extensions(event["request"]["headers"])),
        )
        session.on(
            "Network.webSocketHandshakeResponseReceived",
            lambda event: self.answered.append(_extensions(event["response"]["headers"])),
        )


def _extensions(headers: Mapping[str, str]) -> str | None:
    values = [value for name, value in headers.items() if name.lower() == EXTENSIONS_HEADER]
    return ", ".join(values) or None


#: How a FlakyLink that is down fails an attempt: during the handshake, as an unreachable
#: server would, or once open, as a server that accepts and drops at once would.
Failure = Literal["refuse", "accept_and_drop"]


class FlakyLink:
    """A page's chat WebSocket, routed through Playwright so that a test can cut it.

    Use ``page.route_web_socket(pattern, link.route)`` before the page loads. While the link is
    down, every attempt to reconnect fails at once (see ``Failure``), so the page goes through
    its real backoff; once it is restored, the page's next attempt reaches the server.
    A route runs when Playwright's sync API gets control, so ``times`` are accurate while the
    test waits in a Playwright call (``expect``), not while it does anything else.
    """

    def __init__(self) -> None:
        self.urls: list[str] = []  # every connection attempt, in order
        self.times: list[float] = []  # time.monotonic() of each attempt
        self.dropped_at: float | None = None
        self._failure: Failure | None = None
        self._live: list[WebSocketRoute] = []

    def route(self, socket: WebSocketRoute) -> None:
        self.urls.append(socket.url)
        self.times.append(time.monotonic())
        if self._failure == "refuse":
            socket.close(code=GOING_AWAY, reason="link down (test)")
            return
        server = socket.connect_to_server()
        if self._failure == "accept_and_drop":
            # The page has seen the socket open once the server speaks: hang up then.
            def hang_up(_message: str | bytes) -> None:
                socket.close(code=GOING_AWAY, reason="link down (test)")
                server.close()

            server.on_message(hang_up)
            return
        self._live.append(socket)

    def drop(self, failure: Failure = "refuse") -> None:
        self._failure = failure
        self.dropped_at = time.monotonic()
        for socket in self._live:
            socket.close(code=GOING_AWAY, reason="link dropped (test)")
        self._live.clear()

    def restore(self) -> None:
        self._failure = None


class ScriptedServer:
    """Stands in for the chat server on a page's WebSocket, never reaching the real one, so that
    a test can send the page exactly the frames it wants, edge cases included.

    Use ``page.route_web_socket(pattern, scripted.route)`` before the page loads; the page's
    socket opens as soon as the route takes it.
    """

    def __init__(self) -> None:
        self.sockets: list[WebSocketRoute] = []  # one per connection the page made
        self.received: list[dict[str, Any]] = []  # what the page sent, on any connection

    def route(self, socket: WebSocketRoute) -> None:
        self.sockets.append(socket)
        socket.on_message(lambda text: self.received.append(json.loads(text)))

    def send(self, *frames: dict[str, Any] | str) -> None:
        """Send ``frames`` on the latest connection in one message, "\\n"-separated, as the
        server's batch mode does; a str goes as it is."""
        assert self.sockets, "the page has not connected"
        lines = [frame if isinstance(frame, str) else json.dumps(frame) for frame in frames]
        self.sockets[-1].send("\n".join(lines))

    def drop(self) -> None:
        self.sockets[-1].close(code=GOING_AWAY, reason="scripted restart")

    def query(self) -> dict[str, list[str]]:
        """The query string of the latest connection."""
        return parse_qs(urlsplit(self.sockets[-1].url).query)


#: How often wait_until looks again: it hands control to Playwright meanwhile, which is when
#: routed WebSockets (FlakyLink, ScriptedServer) record what the page sent.
POLL_MS = 20


def wait_until(page: Page, condition: Callable[[], bool], timeout: float = UI_TIMEOUT_MS) -> None:
    """Wait until ``condition()`` holds (for what no locator shows: what a page sent through a
    routed WebSocket), with a deadline."""
    deadline = time.monotonic() + timeout / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} ms: {condition}")
        page.wait_for_timeout(POLL_MS)


def routed_through(link: FlakyLink | ScriptedServer) -> Callable[[Page], object]:
    """A ``before_load`` for ``ChatPage.open``: the page's chat WebSocket goes through ``link``."""

    def route(page: Page) -> None:
        page.route_web_socket(re.compile(r"/chat"), link.route)

    return route


# Frames for a ScriptedServer to send, as docs/protocol.md and the rooms protocol give them

T0 = 1_795_512_345_678  # a ts, in ms


def message(
    id: int, sender: str, text: str, ts: int | None = None, room: str | None = None
) -> dict[str, Any]:
    ts = T0 + id if ts is None else ts
    frame = {"type": "message", "id": id, "ts": ts, "sender": sender, "message": text}
    return frame if room is None else {**frame, "room": room}


def welcome(worker: int = 7, max_rooms: int | None = None) -> dict[str, Any]:
    """A welcome frame; with ``max_rooms``, from a server that speaks rooms."""
    frame = {
        "type": "welcome",
        "sender": "server",
        "message": "You are connected",
        "worker": worker,
    }
    return frame if max_rooms is None else {**frame, "max_rooms": max_rooms}


def history(
    *messages: dict[str, Any],
    resumed: bool = False,
    epoch: str | None = None,
    room: str | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "history", "resumed": resumed, "messages": list(messages)}
    if epoch is not None:
        frame["epoch"] = epoch
    return frame if room is None else {**frame, "room": room}


def presence(
    users: list[str],
    joined: tuple[str, ...] = (),
    left: tuple[str, ...] = (),
    room: str | None = None,
    online: int | None = None,
) -> dict[str, Any]:
    """A presence frame; by default one more tab is online than there are names (a tab without
    one)."""
    frame = {
        "type": "presence",
        "online": len(users) + 1 if online is None else online,
        "users": users,
        "joined": list(joined),
        "left": list(left),
    }
    return frame if room is None else {**frame, "room": room}


def reconnect(chat: ChatPage, script: ScriptedServer) -> None:
    """Drop the page's connection and wait until it has opened a new one by itself."""
    drops = chat.system("disconnect").count()
    script.drop()
    expect(chat.system("disconnect")).to_have_count(drops + 1)
    expect(chat.status).to_have_attribute("data-state", "online", timeout=RECONNECT_TIMEOUT_MS)
    assert len(script.sockets) == drops + 2


#: Opens a page of the chat (options as for ``ChatPage.open``).
OpenChat = Callable[..., ChatPage]


@contextmanager
def chat_pages(browser: Browser, origin: str, *, check_errors: bool = True) -> Iterator[OpenChat]:
    """Opens pages of the chat at ``origin``; closes them at the end, and (``check_errors``)
    checks that none threw or logged an error."""
    opened: list[ChatPage] = []

    def open_chat(**options: Any) -> ChatPage:
        chat = ChatPage.open(browser, origin, **options)
        opened.append(chat)
        return chat

    yield open_chat
    for chat in opened:
        errors = chat.errors
        chat.close()
        if check_errors:
            assert errors == []
