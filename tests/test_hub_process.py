"""The manager hub for real: a hub process, clients in other processes, the automatic start.

Real processes use the real clock; every wait has a deadline and waits on a condition.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from trio_chat.config import Settings
from trio_chat.hub_address import Endpoint, automatic_endpoint
from trio_chat.hub_link.manager.client import HubClient
from trio_chat.hub_link.manager.launcher import connect_or_start
from trio_chat.process_watch import has_exited
from trio_chat.protocol import ChatMessage, encode_chat_body

pytestmark = pytest.mark.process

DEADLINE_SECONDS = 20.0
ROOM = "general"
MAILBOX_SIZE = 10_000
HISTORY_SIZE = 100


def hub_settings(tmp_path: Path, **changes: int) -> Settings:
    """What a worker would start the automatic hub with, its store in ``tmp_path``."""
    return Settings(
        mailbox_size=MAILBOX_SIZE,
        history_size=HISTORY_SIZE,
        data_dir=tmp_path / "data",
        **changes,  # type: ignore[arg-type]
    )


SPAWN = multiprocessing.get_context("spawn")


def auto_endpoint(folder: Path, owner_pid: int, authkey: bytes) -> Endpoint:
    return Endpoint(
        address=str(folder / f"hub-{owner_pid}.sock"),
        authkey=authkey,
        owner_pid=owner_pid,
        lock_path=folder / f"hub-{owner_pid}.lock",
    )


def stop_hub(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.terminate()
        process.wait(DEADLINE_SECONDS)
    except psutil.NoSuchProcess:
        pass


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    """A running automatic hub owned by this test process; stopped afterwards.

    Its endpoint is the one a worker would use, in a private folder the hub code made itself
    under a runtime folder of this test's own.
    """
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = automatic_endpoint()
    client = connect_or_start(endpoint, hub_settings(tmp_path))
    pid = client.statistics()["pid"]
    yield endpoint
    stop_hub(pid)


def worker_process(
    endpoint: Endpoint, name: str, count: int, total: int, start: object, report: object
) -> None:
    """A stand-in worker: join, wait for the start signal, publish, read everything back."""
    client = HubClient(endpoint.address, endpoint.authkey)
    mailbox = client.join(name, {(1, ROOM): name})  # A member in the room: its frames come.
    report.send(("joined", mailbox))  # type: ignore[attr-defined]
    start.wait()  # type: ignore[attr-defined]
    for n in range(count):
        body = encode_chat_body(ROOM, ChatMessage(sender=name, message=str(n)))
        client.publish([body])
    seen: list[tuple[int, str, str]] = []
    while len(seen) < total:
        for frame in client.fetch(mailbox, 100) or []:
            doc = json.loads(frame)
            if doc["type"] == "message":  # Presence frames come too.
                seen.append((doc["id"], doc["sender"], doc["message"]))
    report.send(("seen", seen))  # type: ignore[attr-defined]
    client.leave(mailbox)


def test_clients_in_separate_processes_see_every_message_in_one_order(hub: Endpoint) -> None:
    names, count = ["w1", "w2", "w3"], 200
    start = SPAWN.Event()
    pipes = [SPAWN.Pipe() for _ in names]
    processes = [
        SPAWN.Process(
            target=worker_process,
            args=(hub, name, count, count * len(names), start, sending),
        )
        for name, (_, sending) in zip(names, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        for receiving, _ in pipes:
            assert receiving.poll(DEADLINE_SECONDS)
            assert receiving.recv()[0] == "joined"
        start.set()
        results = []
        for receiving, _ in pipes:
            assert receiving.poll(DEADLINE_SECONDS)
            _, seen = receiving.recv()
            results.append(seen)
    finally:
        for process in processes:
            process.join(DEADLINE_SECONDS)
            process.kill()
    assert all(result == results[0] for result in results)
    assert [message_id for message_id, _, _ in results[0]] == list(range(1, count * 3 + 1))
    for name in names:  # Each sender's own messages keep the order it sent them in.
        assert [int(text) for _, sender, text in results[0] if sender == name] == list(range(count))
    # All three left: no mailbox stays behind.
    assert HubClient(hub.address, hub.authkey).statistics()["mailboxes"] == {}


def test_a_worker_leaving_removes_its_mailbox(hub: Endpoint) -> None:
    client = HubClient(hub.address, hub.authkey)
    staying, leaving = client.join("staying"), client.join("leaving")
    client.leave(leaving)
    assert list(client.statistics()["mailboxes"]) == [staying]
    assert client.fetch(leaving, 10) is None


def test_a_wrong_secret_is_refused(hub: Endpoint) -> None:
    with pytest.raises(multiprocessing.AuthenticationError):
        HubClient(hub.address, b"not the secret")


def test_the_socket_is_private_and_the_secret_is_not_on_the_command_line(hub: Endpoint) -> None:
    assert isinstance(hub.address, str)
    socket_mode = os.stat(hub.address).st_mode
    assert stat.S_ISSOCK(socket_mode)
    assert stat.S_IMODE(socket_mode) == 0o600
    folder = Path(hub.address).parent
    assert folder.parent == Path(os.environ["XDG_RUNTIME_DIR"])
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700
    pid = HubClient(hub.address, hub.authkey).statistics()["pid"]
    command_line = " ".join(psutil.Process(pid).cmdline())
    assert hub.authkey.hex() not in command_line
    assert "trio_chat.hub" in command_line


def test_the_automatic_hub_keeps_the_room_limit_it_was_started_with(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    endpoint = auto_endpoint(folder, os.getpid(), os.urandom(32))
    client = connect_or_start(endpoint, hub_settings(tmp_path, max_rooms=2))
    pid = client.statistics()["pid"]
    try:
        assert "--max-rooms 2" in " ".join(psutil.Process(pid).cmdline())
        mailbox = client.join("w", {(1, "a"): "ann", (2, "b"): "bob"})
        assert client.snapshot("c", None, None, mailbox, {3: "cy"}).refused
        assert client.rooms() == [("a", 1), ("b", 1)]
        assert client.rooms(limit=1) == [("a", 1)]
        client.leave(mailbox)
    finally:
        stop_hub(pid)


def race_to_start(
    endpoint: Endpoint, settings: Settings, report: multiprocessing.connection.Connection
) -> None:
    report.send(connect_or_start(endpoint, settings).statistics()["pid"])


def test_workers_starting_at_once_bring_up_exactly_one_hub(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    endpoint = auto_endpoint(folder, os.getpid(), os.urandom(32))
    pipes = [SPAWN.Pipe(duplex=False) for _ in range(4)]
    settings = hub_settings(tmp_path)
    racers = [SPAWN.Process(target=race_to_start, args=(endpoint, settings, w)) for _, w in pipes]
    for racer in racers:
        racer.start()
    hub_pids = set()
    try:
        for receiving, _ in pipes:
            assert receiving.poll(DEADLINE_SECONDS)
            hub_pids.add(receiving.recv())
    finally:
        for racer in racers:
            racer.join(DEADLINE_SECONDS)
    try:
        assert len(hub_pids) == 1
        hubs = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(endpoint.address) in " ".join(p.info["cmdline"] or [])
        ]
        assert [p.pid for p in hubs] == list(hub_pids)
    finally:
        for pid in hub_pids:
            stop_hub(pid)


def test_the_automatic_hub_ends_when_its_owner_exits(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    # A stand-in for the Hypercorn master: it lives until killed.
    owner = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    endpoint = auto_endpoint(folder, owner.pid, os.urandom(32))
    hub_pid = connect_or_start(endpoint, hub_settings(tmp_path)).statistics()["pid"]
    hub_process = psutil.Process(hub_pid)
    assert hub_process.is_running()
    owner.send_signal(signal.SIGKILL)
    owner.wait(DEADLINE_SECONDS)
    hub_process.wait(DEADLINE_SECONDS)  # Raises TimeoutExpired if the hub stays.
    assert not Path(str(endpoint.address)).exists()
    assert endpoint.lock_path is not None
    assert not endpoint.lock_path.exists()


def test_a_process_counts_as_exited_even_before_it_is_reaped() -> None:
    """A Hypercorn master killed with SIGKILL may stay a zombie for a while: no hub may be
    started for it meanwhile (its workers are on their way out)."""
    process = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        assert not has_exited(process.pid)
        process.kill()
        wait_until_zombie(process.pid)
        assert has_exited(process.pid)  # Not reaped yet: its pid still answers a kill(0).
    finally:
        process.kill()
        process.wait(DEADLINE_SECONDS)
    assert has_exited(process.pid)


def wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.01)
