"""The hub's own security: private paths and secrets, TCP peers, the handshake deadline, logs.

Hubs here are real processes on the real clock, on loopback ports that were free and in
``tmp_path``; every wait has a deadline and waits on a condition, and every hub is stopped.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import multiprocessing
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from trio_chat.config import Settings
from trio_chat.hub.server import HANDSHAKE_TIMEOUT_SECONDS
from trio_chat.hub_address import (
    MIN_SECRET_BYTES,
    Address,
    HubConfigError,
    automatic_endpoint,
    is_loopback,
    private_runtime_dir,
    read_secret_file,
)
from trio_chat.hub_link.manager.client import HubClient
from trio_chat.hub_link.manager.launcher import connect_or_start
from trio_chat.protocol import ChatMessage, encode_chat_body

from servers import ROOT, free_port

pytestmark = pytest.mark.process

DEADLINE_SECONDS = 20.0
# Short, so that tests of the deadline are quick; the hub's default is 5 s.
SHORT_HANDSHAKE_SECONDS = 1.0
# psutil cannot wait for a thread count to change, so conditions on one are polled this often.
POLL_SECONDS = 0.02
SILENT_PEERS = 20
DRIBBLE_INTERVAL_SECONDS = 0.2
ROOM = "general"
#: A test worker's one member of ``ROOM``: the hub sends a worker the frames of its members' rooms.
MEMBER = {(1, ROOM): "tester"}


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout} s: {condition.__doc__ or condition}")
        threading.Event().wait(POLL_SECONDS)


# --- The private folder of the automatic hub ---------------------------------------------------


@pytest.fixture
def runtime_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def runtime_folder(base: Path) -> Path:
    return base / f"trio-chat-{os.getuid()}"


def test_the_runtime_folder_is_made_private_whatever_the_umask(runtime_base: Path) -> None:
    old_umask = os.umask(0)
    try:
        folder = private_runtime_dir()
    finally:
        os.umask(old_umask)
    assert folder == runtime_folder(runtime_base)
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700


def test_an_existing_private_runtime_folder_is_used_as_it_is(runtime_base: Path) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir(mode=0o700)
    (folder / "hub-1.lock").touch()
    assert private_runtime_dir() == folder
    assert (folder / "hub-1.lock").exists()


@pytest.mark.parametrize("mode", [0o701, 0o705, 0o710, 0o750, 0o755, 0o770, 0o777])
def test_a_runtime_folder_others_can_enter_is_refused(runtime_base: Path, mode: int) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


def test_a_symlink_in_place_of_the_runtime_folder_is_refused(runtime_base: Path) -> None:
    # Even to a private folder: whoever made the link chose where our socket goes.
    elsewhere = runtime_base / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    runtime_folder(runtime_base).symlink_to(elsewhere)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


def test_a_file_in_place_of_the_runtime_folder_is_refused(runtime_base: Path) -> None:
    runtime_folder(runtime_base).touch(mode=0o600)
    with pytest.raises(HubConfigError):
        private_runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_runtime_folder_of_another_user_is_refused(runtime_base: Path) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, -1)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


# --- Secret files -------------------------------------------------------------------------------


def write_secret(path: Path, secret: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(secret)
    path.chmod(mode)
    return path


def test_a_private_secret_file_is_read_without_its_line_end(tmp_path: Path) -> None:
    secret = b"s" * MIN_SECRET_BYTES
    assert read_secret_file(write_secret(tmp_path / "secret", secret + b"\n")) == secret
    assert read_secret_file(write_secret(tmp_path / "read-only", secret, 0o400)) == secret


@pytest.mark.parametrize("mode", [0o604, 0o610, 0o620, 0o640, 0o602, 0o660, 0o644, 0o666])
def test_a_secret_file_others_can_get_at_is_refused(tmp_path: Path, mode: int) -> None:
    secret = os.urandom(32).hex().encode()
    with pytest.raises(HubConfigError, match="readable by others") as refused:
        read_secret_file(write_secret(tmp_path / "secret", secret, mode))
    assert secret.decode() not in str(refused.value)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    secret = b"s" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(HubConfigError, match="too short") as refused:
        read_secret_file(write_secret(tmp_path / "secret", secret + b"\n"))
    assert secret.decode() not in str(refused.value)


def test_a_missing_secret_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError, match="cannot read"):
        read_secret_file(tmp_path / "absent")


# --- Standalone hubs ----------------------------------------------------------------------------


class StandaloneHub:
    """``python -m trio_chat.hub`` in a child process, its output collected line by line."""

    def __init__(self, listen: str, secret_file: Path, *options: str) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_HUB")}
        environment["TRIO_CHAT_DATA_DIR"] = str(secret_file.parent / "data")
        command = [sys.executable, "-m", "trio_chat.hub", "--listen", listen]
        self.process = subprocess.Popen(
            [*command, "--secret-file", str(secret_file), *options],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for_output(self, text: str) -> None:
        with self._changed:
            self._changed.wait_for(
                lambda: self._ended or any(text in line for line in self.lines), DEADLINE_SECONDS
            )
        assert text in self.output, f"the hub never said {text!r}; it said:\n{self.output}"

    def wait_for_exit(self) -> int:
        code = self.process.wait(DEADLINE_SECONDS)
        self._reader.join(DEADLINE_SECONDS)
        return code

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(DEADLINE_SECONDS)
        finally:
            self.process.kill()
            self.wait_for_exit()
            assert self.process.stdout is not None
            self.process.stdout.close()


@contextlib.contextmanager
def standalone_hub(listen: str, secret_file: Path, *options: str) -> Iterator[StandaloneHub]:
    hub = StandaloneHub(listen, secret_file, *options)
    try:
        hub.wait_for_output("hub listening")
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hub.secret"
    subprocess.run(
        [sys.executable, "-m", "trio_chat.hub", "--new-secret-file", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=DEADLINE_SECONDS,
    )
    return path


class TcpHub:
    def __init__(self, process: StandaloneHub, address: tuple[str, int], secret: bytes) -> None:
        self.process = process
        self.address = address
        self.secret = secret

    def client(self) -> HubClient:
        return HubClient(self.address, self.secret)


@pytest.fixture
def tcp_hub(secret_file: Path) -> Iterator[TcpHub]:
    """A hub started by hand on loopback TCP, with a short handshake deadline."""
    address = ("127.0.0.1", free_port())
    deadline_option = f"--handshake-timeout={SHORT_HANDSHAKE_SECONDS}"
    with standalone_hub(f"tcp://127.0.0.1:{address[1]}", secret_file, deadline_option) as hub:
        yield TcpHub(hub, address, read_secret_file(secret_file))


def exchange_a_message(client: HubClient, mailbox: str, text: str) -> None:
    client.publish([encode_chat_body(ROOM, ChatMessage(sender="tester", message=text))])
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if any(text in frame for frame in client.fetch(mailbox, 100) or []):
            return
    pytest.fail(f"{text!r} never came back from the hub")


def read_until_closed(peer: socket.socket, deadline: float) -> None:
    """Read whatever the hub sends until it ends the connection; fail at ``deadline``."""
    try:
        while True:
            peer.settimeout(max(deadline - time.monotonic(), POLL_SECONDS))
            if not peer.recv(4096):
                return
    except ConnectionResetError:
        return  # The hub closed with our bytes unread: the kernel resets instead.
    except TimeoutError:
        pytest.fail("the hub kept the connection of a peer that never authenticated")


def test_a_client_with_the_secret_uses_a_tcp_hub(tcp_hub: TcpHub) -> None:
    client = tcp_hub.client()
    mailbox = client.join("tester", MEMBER)
    exchange_a_message(client, mailbox, "over tcp")
    assert client.statistics()["pid"] == tcp_hub.process.process.pid


def test_a_client_with_the_wrong_secret_is_refused_by_a_tcp_hub(tcp_hub: TcpHub) -> None:
    with pytest.raises(multiprocessing.AuthenticationError):
        HubClient(tcp_hub.address, os.urandom(32))


@pytest.mark.parametrize(
    "greeting",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", id="http"),
        pytest.param(struct.pack("!i", 16) + os.urandom(16), id="wrong-digest"),
        pytest.param(struct.pack("!i", -1) + os.urandom(64), id="bad-length"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_a_peer_without_the_secret_is_disconnected_and_the_hub_serves_on(
    tcp_hub: TcpHub, greeting: bytes
) -> None:
    client = tcp_hub.client()
    mailbox = client.join("tester", MEMBER)
    with socket.create_connection(tcp_hub.address) as peer:
        peer.sendall(greeting)
        read_until_closed(peer, time.monotonic() + SHORT_HANDSHAKE_SECONDS + DEADLINE_SECONDS)
    exchange_a_message(client, mailbox, "still here")
    assert list(tcp_hub.client().statistics()["mailboxes"]) == [mailbox]


def test_silent_peers_are_disconnected_at_the_deadline_and_their_threads_end(
    tcp_hub: TcpHub,
) -> None:
    client = tcp_hub.client()
    mailbox = client.join("tester", MEMBER)
    hub_process = psutil.Process(tcp_hub.process.process.pid)
    baseline = hub_process.num_threads()
    started = time.monotonic()
    peers = [socket.create_connection(tcp_hub.address) for _ in range(SILENT_PEERS)]
    try:
        deadline = started + SHORT_HANDSHAKE_SECONDS + DEADLINE_SECONDS
        read_until_closed(peers[0], deadline)
        # Not before the deadline: a slow worker gets all of it.
        assert time.monotonic() - started >= SHORT_HANDSHAKE_SECONDS
        for peer in peers[1:]:
            read_until_closed(peer, deadline)
    finally:
        for peer in peers:
            peer.close()

    def threads_back_to_baseline() -> bool:
        """the hub's threads are back to as many as before the silent peers came"""
        return bool(hub_process.num_threads() <= baseline)

    wait_until(threads_back_to_baseline)
    exchange_a_message(client, mailbox, "still here")


def test_a_peer_dribbling_its_answer_is_disconnected_at_the_deadline(tcp_hub: TcpHub) -> None:
    # A byte at a time, each well within the deadline: a time limit per read would never end
    # this connection (the whole answer takes about 50 s); the deadline is on the handshake.
    unsent = list(struct.pack("!i", 250) + bytes(250))
    started = time.monotonic()
    with socket.create_connection(tcp_hub.address) as peer:
        while unsent:
            assert time.monotonic() - started < SHORT_HANDSHAKE_SECONDS + DEADLINE_SECONDS
            readable, _, _ = select.select([peer], [], [], DRIBBLE_INTERVAL_SECONDS)
            try:
                if readable and not peer.recv(4096):
                    break  # Closed by the hub.
                if not readable:
                    peer.sendall(bytes([unsent.pop(0)]))
            except ConnectionError:
                break  # Reset: the hub closed with bytes of ours unread.
        else:
            pytest.fail("the hub read the whole dribbled answer")
    assert time.monotonic() - started >= SHORT_HANDSHAKE_SECONDS


def test_the_hub_accepts_again_after_running_out_of_descriptors(tcp_hub: TcpHub) -> None:
    client = tcp_hub.client()
    mailbox = client.join("tester", MEMBER)
    hub_process = psutil.Process(tcp_hub.process.process.pid)
    # Room for a few peers only: the rest wait in the listen queue while accept fails.
    _, hard_limit = hub_process.rlimit(psutil.RLIMIT_NOFILE)
    hub_process.rlimit(psutil.RLIMIT_NOFILE, (hub_process.num_fds() + 3, hard_limit))
    cpu_before = sum(hub_process.cpu_times()[:2])
    started = time.monotonic()
    peers = [socket.create_connection(tcp_hub.address) for _ in range(12)]
    try:
        for peer in peers:
            read_until_closed(peer, started + 4 * SHORT_HANDSHAKE_SECONDS + DEADLINE_SECONDS)
    finally:
        for peer in peers:
            peer.close()
    elapsed = time.monotonic() - started
    cpu_used = sum(hub_process.cpu_times()[:2]) - cpu_before
    # Four rounds of three peers, each round ended by the deadline.
    assert elapsed >= 3 * SHORT_HANDSHAKE_SECONDS
    # Waiting for descriptors is not spinning: far less than a core for the while.
    assert cpu_used < elapsed / 4, f"{cpu_used:.2f} s of CPU in {elapsed:.2f} s"
    hub_process.rlimit(psutil.RLIMIT_NOFILE, (hard_limit, hard_limit))
    exchange_a_message(tcp_hub.client(), tcp_hub.client().join("newcomer", MEMBER), "accepted")
    exchange_a_message(client, mailbox, "still here")


# --- Reach: loopback only unless told -----------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["/run/hub.sock", ("127.0.0.1", 9000), ("127.8.9.10", 9000), ("::1", 9000)]
)
def test_unix_sockets_and_loopback_addresses_are_local(address: Address) -> None:
    assert is_loopback(address)


def test_localhost_is_local() -> None:
    assert is_loopback(("localhost", 9000))


@pytest.mark.parametrize(
    "address", [("0.0.0.0", 9000), ("::", 9000), ("192.0.2.7", 9000), ("2001:db8::7", 9000)]
)
def test_other_addresses_are_not_local(address: Address) -> None:
    assert not is_loopback(address)


def refused_start(listen: str, secret_file: Path, *options: str) -> str:
    """Start a hub that must refuse to serve (exit code 2); returns what it said."""
    hub = StandaloneHub(listen, secret_file, *options)
    try:
        assert hub.wait_for_exit() == 2
    finally:
        hub.stop()
    assert "hub listening" not in hub.output
    return hub.output


def test_a_hub_refuses_to_listen_where_other_hosts_reach_it(secret_file: Path) -> None:
    output = refused_start(f"tcp://0.0.0.0:{free_port()}", secret_file)
    assert "--allow-remote" in output
    assert "run code" in output


def test_allow_remote_lets_a_hub_listen_on_every_interface(secret_file: Path) -> None:
    port = free_port()
    with standalone_hub(f"tcp://0.0.0.0:{port}", secret_file, "--allow-remote"):
        client = HubClient(("127.0.0.1", port), read_secret_file(secret_file))
        assert client.statistics()["mailboxes"] == {}


def test_a_second_hub_refuses_the_socket_of_a_live_one(tmp_path: Path, secret_file: Path) -> None:
    listen = f"unix:{tmp_path / 'hub.sock'}"
    with standalone_hub(listen, secret_file) as first:
        # (With a store of its own: the first one's is locked, which would stop it first.)
        second = refused_start(listen, secret_file, "--data-dir", str(tmp_path / "other"))
        assert "already listening" in second
        client = HubClient(str(tmp_path / "hub.sock"), read_secret_file(secret_file))
        assert client.statistics()["pid"] == first.process.pid  # The first one serves on.


def test_a_hub_does_not_take_the_place_of_a_file_that_is_not_a_socket(
    tmp_path: Path, secret_file: Path
) -> None:
    path = tmp_path / "hub.sock"
    path.write_text("precious")
    assert "is not a socket" in refused_start(f"unix:{path}", secret_file)
    assert path.read_text() == "precious"


@pytest.mark.parametrize("given", [b"", b"\n", b"00" * 15 + b"\n", b"not hex\n"])
def test_a_hub_given_no_usable_secret_on_its_input_does_not_serve(
    tmp_path: Path, given: bytes
) -> None:
    """The automatic hub reads its secret from its starter; should the starter die first, it
    must not serve with an empty key (which anyone can answer)."""
    command = [sys.executable, "-m", "trio_chat.hub", "--listen", f"unix:{tmp_path / 'h.sock'}"]
    done = subprocess.run(
        [*command, "--secret-stdin"],
        cwd=ROOT,
        input=given,
        capture_output=True,
        timeout=DEADLINE_SECONDS,
    )
    assert done.returncode == 2
    assert b"secret" in done.stderr
    assert not (tmp_path / "h.sock").exists()


# --- The secret stays out of logs, command lines and environments -------------------------------


def secret_forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        repr(secret).encode(),
    ]


def assert_secret_not_shown(secret: bytes, pid: int) -> None:
    """Not on the command line of process ``pid``, nor in its environment."""
    for place in ("cmdline", "environ"):
        text = Path(f"/proc/{pid}/{place}").read_bytes()
        assert text, f"/proc/{pid}/{place} is empty: is that the hub?"
        for form in secret_forms(secret):
            assert form not in text, f"the secret is in /proc/{pid}/{place}"


def assert_not_in_log(secret: bytes, output: str) -> None:
    assert "hub listening" in output and "DEBUG" in output, f"not the hub's full log:\n{output}"
    for form in secret_forms(secret):
        assert form not in output.encode(errors="surrogateescape"), "the secret is in the log"


def use_verbosely(address: Address, secret: bytes, handshake_timeout: float) -> None:
    """Exercise everything the hub logs: clients, a wrong secret, garbage, a silent peer."""
    client = HubClient(address, secret)
    mailbox = client.join("tester", MEMBER)
    exchange_a_message(client, mailbox, "logged")
    client.leave(mailbox)
    with pytest.raises(multiprocessing.AuthenticationError):
        HubClient(address, os.urandom(32))
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    for greeting in (b"GET / HTTP/1.1\r\n\r\n", b""):
        with socket.socket(family) as peer:
            peer.connect(address)
            peer.sendall(greeting)
            read_until_closed(peer, time.monotonic() + handshake_timeout + DEADLINE_SECONDS)


def test_a_hub_started_by_hand_never_shows_its_secret(tmp_path: Path, secret_file: Path) -> None:
    secret = read_secret_file(secret_file)
    socket_path = str(tmp_path / "hub.sock")
    deadline_option = f"--handshake-timeout={SHORT_HANDSHAKE_SECONDS}"
    with standalone_hub(
        f"unix:{socket_path}", secret_file, "--log-level=DEBUG", deadline_option
    ) as hub:
        use_verbosely(socket_path, secret, SHORT_HANDSHAKE_SECONDS)
        assert_secret_not_shown(secret, hub.process.pid)
    # The whole log, to the last line: read after the hub stopped.
    assert "did not authenticate" in hub.output
    assert_not_in_log(secret, hub.output)


def test_the_automatic_hub_never_shows_its_secret(
    runtime_base: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # The launcher starts the hub as talkative as its own logger, and the hub logs to our
    # standard error, which capfd collects.
    caplog.set_level(logging.DEBUG, logger="trio_chat.hub")
    endpoint = automatic_endpoint()
    settings = Settings(mailbox_size=100, history_size=10, data_dir=runtime_base / "data")
    hub_pid = connect_or_start(endpoint, settings).statistics()["pid"]
    try:
        use_verbosely(endpoint.address, endpoint.authkey, HANDSHAKE_TIMEOUT_SECONDS)
        assert_secret_not_shown(endpoint.authkey, hub_pid)
    finally:
        hub = psutil.Process(hub_pid)
        hub.terminate()
        hub.wait(DEADLINE_SECONDS)
    output = capfd.readouterr().err
    assert "did not authenticate" in output
    assert_not_in_log(endpoint.authkey, output)
