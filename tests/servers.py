"""Real servers for end-to-end tests: Hypercorn in a subprocess, and WebSocket clients for it.

Rules for tests that start processes: they listen on a free loopback port, wait on conditions
(a log line, a process exit) under a ``trio.fail_after`` deadline rather than for a fixed time,
and always stop what they started, hub included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from hypercorn.config import Config

from trio_chat.hub_address import private_runtime_dir, read_secret_file
from trio_chat.hub_link.manager.client import HubClient

from wsclient import WebSocketClient, open_websocket

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
PRESENCE_TIMEOUT_SECONDS = 10.0
#: The room a connection starts in when its URL names none (``TRIO_CHAT_DEFAULT_ROOM`` unset).
DEFAULT_ROOM = "general"
#: Bounds polling ``/healthz`` until every worker has answered: each request is a new
#: connection, which lands on whichever worker accepts first.
HEALTHZ_TIMEOUT_SECONDS = 30.0
#: Connections opened at most while looking for a client on every worker.
MAX_CONNECTIONS_TO_REACH_EVERY_WORKER = 200
#: The promise when the hub dies: workers notice "within a second or two", and chat works
#: again across all workers within 5 s (of its death, or of a hand-started hub's return).
HUB_LOSS_NOTICED_SECONDS = 2.0
CHAT_BACK_SECONDS = 5.0
#: The settings every e2e server starts from (``-c hypercorn.toml``), as Hypercorn reads them.
SHIPPED_CONFIG_FILE = ROOT / "hypercorn.toml"
SHIPPED_CONFIG = Config.from_toml(SHIPPED_CONFIG_FILE)

# A worker's log line names its pid: "2026-01-01 12:00:00,000 [1234] WARNING ...". (The hub's
# say "[hub 1234]", and do not match.)
_LOG_LINE_PID = re.compile(r"\[(\d+)\]")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OutputCollector:
    """Collects a subprocess's merged output, line by line, and waits for lines to appear."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output: list[str] = []
        self._output_changed = trio.Event()

    async def collect_output(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.output.extend(line.decode(errors="replace") for line in lines)
            self._output_changed.set()
            self._output_changed = trio.Event()
        self._output_changed.set()

    async def wait_for_output(self, text: str, count: int = 1) -> None:
        await self.wait_until(lambda: sum(text in line for line in self.output) >= count)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checking it whenever output comes."""
        while not condition():
            if self.process.returncode is not None:
                raise AssertionError("the process exited:\n" + "\n".join(self.output))
            await self._output_changed.wait()

    def pids_logging(self, text: str) -> set[int]:
        """The pids of the processes whose log lines contain ``text``."""
        return {
            int(found.group(1))
            for line in self.output
            if text in line and (found := _LOG_LINE_PID.search(line))
        }

    async def wait_for_output_from(self, text: str, pids: set[int]) -> None:
        """Wait until every process in ``pids`` has logged a line containing ``text``."""
        await self.wait_until(lambda: pids <= self.pids_logging(text))


class HypercornServer(OutputCollector):
    def __init__(self, process: trio.Process, port: int, workers: int) -> None:
        super().__init__(process)
        self.port = port
        self.workers = workers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/chat"

    @property
    def hub_pids(self) -> list[int]:
        """Pids of the hubs this server's workers started (from their log lines)."""
        marker = "started the hub (pid "
        return [int(line.split(marker)[1].split(")")[0]) for line in self.output if marker in line]

    @property
    def child_pids(self) -> list[int]:
        """The master's children: its workers, and multiprocessing's resource tracker."""
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def terminate(self) -> None:
        """SIGTERM to the master, as a process manager would."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """Ctrl+C: the terminal sends SIGINT to its whole foreground process group, which is
        the master and its workers (the server was started in a session of its own)."""
        if self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGINT)

    async def stop(self) -> int:
        """SIGTERM, as a process manager would; returns hypercorn's exit code."""
        self.terminate()
        return await self.wait_stopped()

    async def wait_stopped(self) -> int:
        """Wait for the master to exit; returns its exit code. If it does not, it and its
        workers are killed, and the test fails."""
        with trio.move_on_after(STOP_TIMEOUT_SECONDS):
            return await self.process.wait()
        os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        raise AssertionError("hypercorn did not stop:\n" + "\n".join(self.output))


def hypercorn_command(
    port: int, workers: int, args: Sequence[str] = (), *, shipped_config: bool = True
) -> list[str]:
    """``hypercorn [-c hypercorn.toml] -k trio -w N -b 127.0.0.1:PORT trio_chat:app``."""
    config = ["-c", str(SHIPPED_CONFIG_FILE)] if shipped_config else []
    return [
        sys.executable, "-m", "hypercorn", *config,
        "-k", "trio", "-w", str(workers), "-b", f"127.0.0.1:{port}", *args, "trio_chat:app",
    ]  # fmt: skip


@asynccontextmanager
async def hypercorn_server(
    workers: int = 4,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    shipped_config: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    port: int | None = None,
) -> AsyncIterator[HypercornServer]:
    """``hypercorn -c hypercorn.toml -k trio -w N trio_chat:app`` on a free loopback port
    (without ``-c hypercorn.toml`` if not ``shipped_config``: Hypercorn's defaults).
    ``preexec_fn`` runs in the master before it starts (e.g. to set resource limits, which
    its workers and their hub inherit). ``port``: that one instead (another server's, say)."""
    port = port or free_port()
    command = hypercorn_command(port, workers, args, shipped_config=shipped_config)
    environment = {**os.environ, **(env or {})}
    with contextlib.ExitStack() as cleanup:
        if "TRIO_CHAT_DATA_DIR" not in environment:
            # A store of its own: two servers on one data directory are refused.
            data_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="trio-chat-"))
            environment["TRIO_CHAT_DATA_DIR"] = data_dir
        process = await trio.lowlevel.open_process(
            command,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        async with _serving(process, port, workers) as server:
            yield server


@asynccontextmanager
async def _serving(
    process: trio.Process, port: int, workers: int
) -> AsyncIterator[HypercornServer]:
    """The server ``process`` is, until it has stopped (and its hubs with it)."""
    server = HypercornServer(process, port, workers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.collect_output)
        try:
            with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
                await server.wait_for_output("Running on", count=workers)
            yield server
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    await server.stop()
                for pid in server.hub_pids:
                    await wait_gone(pid)
            nursery.cancel_scope.cancel()
    assert_nothing_left_behind(process.pid)


def assert_nothing_left_behind(master_pid: int) -> None:
    """A server that has stopped left nothing on the machine: its automatic hub's socket and
    lock file are named after its master."""
    leftovers = sorted(path.name for path in private_runtime_dir().glob(f"hub-{master_pid}.*"))
    assert not leftovers, f"the server left {leftovers} behind"


async def clients_on_every_worker(
    server: HypercornServer, stack: AsyncExitStack, at_least: int = 8, **options: Any
) -> list[WebSocketClient]:
    """At least ``at_least`` clients, and as many more as it takes to have one on every worker
    (the welcome frame names the worker); they are closed with ``stack``. ``options`` are
    ``open_websocket``'s."""
    clients: list[WebSocketClient] = []
    with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
        while len(clients) < at_least or len(workers_of(clients)) < server.workers:
            assert len(clients) < MAX_CONNECTIONS_TO_REACH_EVERY_WORKER, (
                f"{len(clients)} connections reached only workers {workers_of(clients)}"
            )
            clients.append(await stack.enter_async_context(chat_client(server, **options)))
    return clients


def workers_of(clients: Sequence[WebSocketClient]) -> set[int]:
    return {client.welcome["worker"] for client in clients}


async def healthz_of_every_worker(
    server: HypercornServer, pids: set[int], status: int
) -> dict[int, dict[str, Any]]:
    """Ask ``/healthz`` until each worker in ``pids`` has answered; every answer must have HTTP
    ``status``. Returns each worker's last answer."""
    answers: dict[int, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=server.url) as http:
        with trio.fail_after(HEALTHZ_TIMEOUT_SECONDS):
            while not pids <= set(answers):
                # A new connection each time, so that it can land on any worker.
                response = await http.get("/healthz", headers={"connection": "close"})
                health = response.json()
                assert response.status_code == status, (health, server.output[-20:])
                answers[health["pid"]] = health
    return answers


async def one_message_from_each_worker_reaches_everyone(
    by_worker: dict[int, WebSocketClient], clients: list[WebSocketClient], room: str = DEFAULT_ROOM
) -> list[dict[str, Any]]:
    """A client on each worker sends (a classic frame, to its first room: all are in
    ``room``); every client gets all of them, in one order. Returns the messages as everyone
    got them."""
    for pid, sender in by_worker.items():
        await sender.send(f"worker-{pid}", "after the hub came back")
    received = [[await client.receive_type("message") for _ in by_worker] for client in clients]
    assert all(frames == received[0] for frames in received), "clients disagree"
    assert sorted(frame["sender"] for frame in received[0]) == sorted(
        f"worker-{pid}" for pid in by_worker
    )
    assert {frame["room"] for frame in received[0]} == {room}
    return received[0]


async def wait_gone(pid: int, within: float = STOP_TIMEOUT_SECONDS) -> None:
    """Wait until process ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""
    with trio.fail_after(within):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            await trio.sleep(0.05)


@asynccontextmanager
async def chat_client(
    server: HypercornServer, path: str = "/chat", **options: Any
) -> AsyncIterator[WebSocketClient]:
    """A WebSocket client connected to the server's ``/chat``, its opening frames read."""
    async with open_websocket(server.port, path, **options) as client:
        await client.read_opening()
        yield client


async def presence_until(
    client: WebSocketClient, online: int, room: str | None = None
) -> dict[str, Any]:
    """Read until a presence frame (of ``room``, if given) counts ``online`` connections;
    returns it."""
    with trio.fail_after(PRESENCE_TIMEOUT_SECONDS):
        while True:
            frame = await client.receive()
            if frame["type"] != "presence" or room not in (None, frame["room"]):
                continue
            if frame["online"] == online:
                return frame


class StandaloneHub:
    """A hub started by hand (``python -m trio_chat.hub``) on a Unix socket in ``folder``;
    ``env`` points workers at it. It can be killed and started again on the same socket."""

    def __init__(self, folder: Path, nursery: trio.Nursery, store: str = "sqlite") -> None:
        self.secret_file = folder / "hub.secret"
        self.socket = folder / "hub.sock"
        self.env = {
            "TRIO_CHAT_HUB": f"unix:{self.socket}",
            "TRIO_CHAT_HUB_SECRET_FILE": str(self.secret_file),
            "TRIO_CHAT_DATA_DIR": str(folder / "data"),
            "TRIO_CHAT_STORE": store,
        }
        self.process: trio.Process | None = None
        self.output: OutputCollector | None = None
        self._nursery = nursery

    async def make_secret(self) -> None:
        await trio.run_process(
            [*self._command, "--new-secret-file", str(self.secret_file)], cwd=ROOT
        )

    async def start(self) -> None:
        """Start it, as its operator would, and wait until it listens."""
        self.process = await trio.lowlevel.open_process(
            self._command,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = OutputCollector(self.process)
        self._nursery.start_soon(self.output.collect_output)
        with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
            await self.output.wait_for_output("hub listening")

    async def kill(self) -> None:
        """SIGKILL: the hub gets no chance to clean up (its socket file stays behind)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.fail_after(STOP_TIMEOUT_SECONDS):
                await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with trio.fail_after(STOP_TIMEOUT_SECONDS):
                await self.process.wait()

    def client(self) -> HubClient:
        """A client of the hub (as a worker has), for its statistics."""
        return HubClient(str(self.socket), read_secret_file(self.secret_file))

    @property
    def _command(self) -> list[str]:
        return [sys.executable, "-m", "trio_chat.hub"]


@asynccontextmanager
async def standalone_hub(folder: Path, store: str = "sqlite") -> AsyncIterator[StandaloneHub]:
    """A running hub started by hand in ``folder`` (its store there too, unless ``store`` is
    ``memory``); stopped at the end, whatever happened."""
    async with trio.open_nursery() as nursery:
        hub = StandaloneHub(folder, nursery, store)
        try:
            await hub.make_secret()
            await hub.start()
            yield hub
        finally:
            with trio.CancelScope(shield=True):
                await hub.stop()
            nursery.cancel_scope.cancel()


REDIS_SERVER = Path(os.environ.get("TRIO_CHAT_REDIS_SERVER", "/usr/bin/redis-server"))
REDIS_SERVER_FOUND = REDIS_SERVER.exists()
REDIS_INSTALL_HINT = (
    f"redis-server is needed for the Redis hub tests and was not found at {REDIS_SERVER}: "
    "install it with `apt-get install -y redis-server` (Debian/Ubuntu), or point "
    "TRIO_CHAT_REDIS_SERVER at a redis-server binary"
)


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, with its data in ``folder``.

    ``durable``: every write is in the append-only file before Redis answers, so a killed and
    restarted server has everything it acknowledged; otherwise a restart starts empty.
    """

    def __init__(
        self, folder: Path, nursery: trio.Nursery, *, durable: bool, password: str | None
    ) -> None:
        self.folder = folder
        self.password = password
        self.port = free_port()
        self.durable = durable
        self.process: trio.Process | None = None
        self._nursery = nursery

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (again: on the same port, with the same folder)."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        # On a command line only here, for a test's throwaway server.
        password = ["--requirepass", self.password] if self.password else []
        command = [
            str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--save", "", "--appendonly", "no", *persistence, *password,
        ]  # fmt: skip
        self.process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output = OutputCollector(self.process)
        self._nursery.start_soon(output.collect_output)
        with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
            await output.wait_for_output("Ready to accept connections")

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no save."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.fail_after(STOP_TIMEOUT_SECONDS):
                await self.process.wait()


@asynccontextmanager
async def redis_server(
    folder: Path, *, durable: bool = False, password: str | None = None
) -> AsyncIterator[RedisServer]:
    """A running ``redis-server`` of the test's own; killed at the end, whatever happened."""
    if not REDIS_SERVER_FOUND:
        import pytest

        pytest.skip(REDIS_INSTALL_HINT)
    async with trio.open_nursery() as nursery:
        server = RedisServer(folder, nursery, durable=durable, password=password)
        try:
            await server.start()
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.kill()
            nursery.cancel_scope.cancel()


@dataclasses.dataclass(frozen=True)
class Exited:
    """What a server that stopped by itself left: its exit status and its two outputs."""

    returncode: int
    stdout: list[str]
    stderr: list[str]


async def run_server_until_it_exits(
    port: int, env: Mapping[str, str], workers: int = 4, within: float = STARTUP_TIMEOUT_SECONDS
) -> Exited:
    """``hypercorn -c hypercorn.toml -k trio -w N`` on ``port``, expected to stop by itself
    within ``within`` seconds (if not, its process group is killed and the test fails)."""
    process = await trio.lowlevel.open_process(
        hypercorn_command(port, workers),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    async def read(stream: trio.abc.ReceiveStream | None, into: list[bytes]) -> None:
        assert stream is not None
        async for chunk in stream:
            into.append(bytes(chunk))

    try:
        with trio.fail_after(within):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, process.stdout, chunks["stdout"])
                nursery.start_soon(read, process.stderr, chunks["stderr"])
                await process.wait()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    stdout, stderr = (b"".join(chunks[name]).decode(errors="replace") for name in chunks)
    assert process.returncode is not None
    return Exited(process.returncode, stdout.splitlines(), stderr.splitlines())
