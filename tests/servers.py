"""Real servers for end-to-end tests: Hypercorn in a subprocess, and WebSocket clients for it.

Rules for tests that start processes: they listen on a free loopback port, wait on conditions
(a log line, a process exit) under a ``trio.fail_after`` deadline rather than for a fixed time,
and always stop what they started, hub included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import trio

from wsclient import WebSocketClient, open_websocket

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
PRESENCE_TIMEOUT_SECONDS = 10.0


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
        while sum(text in line for line in self.output) < count:
            if self.process.returncode is not None:
                raise AssertionError("the process exited:\n" + "\n".join(self.output))
            await self._output_changed.wait()


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

    async def stop(self) -> int:
        """SIGTERM, as a process manager would; returns hypercorn's exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_SECONDS):
            return await self.process.wait()
        os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        raise AssertionError("hypercorn did not stop on SIGTERM:\n" + "\n".join(self.output))


def hypercorn_command(port: int, workers: int, args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", "-c", str(ROOT / "hypercorn.toml"),
        "-k", "trio", "-w", str(workers), "-b", f"127.0.0.1:{port}", *args, "trio_chat:app",
    ]  # fmt: skip


@asynccontextmanager
async def hypercorn_server(
    workers: int = 4, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
) -> AsyncIterator[HypercornServer]:
    """``hypercorn -c hypercorn.toml -k trio -w N trio_chat:app`` on a free loopback port."""
    port = free_port()
    command = hypercorn_command(port, workers, args)
    environment = {**os.environ, **(env or {})}
    process = await trio.lowlevel.open_process(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
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


async def presence_until(client: WebSocketClient, online: int) -> dict[str, Any]:
    """Read until a presence frame counts ``online`` connections; returns it."""
    with trio.fail_after(PRESENCE_TIMEOUT_SECONDS):
        while True:
            frame = await client.receive()
            if frame["type"] == "presence" and frame["online"] == online:
                return frame


@asynccontextmanager
async def standalone_hub(folder: Path) -> AsyncIterator[dict[str, str]]:
    """A hub started by hand (``python -m trio_chat.hub``) on a Unix socket in ``folder``.

    Yields the environment that points workers at it.
    """
    secret_file = folder / "hub.secret"
    hub_command = [sys.executable, "-m", "trio_chat.hub"]
    await trio.run_process([*hub_command, "--new-secret-file", str(secret_file)], cwd=ROOT)
    env = {
        "TRIO_CHAT_HUB": f"unix:{folder / 'hub.sock'}",
        "TRIO_CHAT_HUB_SECRET_FILE": str(secret_file),
    }
    process = await trio.lowlevel.open_process(
        hub_command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    hub = OutputCollector(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.collect_output)
        try:
            with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
                await hub.wait_for_output("hub listening")
            yield env
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.fail_after(STOP_TIMEOUT_SECONDS):
                    await process.wait()
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
