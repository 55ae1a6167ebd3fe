"""hub/port_claim.py and its workers' side, supervision.hold_ports: one chat per TCP port on this
machine. Every server claims its ports for the chat it serves, the automatic hub from its
process and the workers of a server with a shared hub from theirs; a claim for the same chat is
shared, one for another chat is refused with a message naming that server's Hypercorn master
and address; a claim given up (or its holder gone) is free again, and the workers of a shared
hub take it over within a second.

Claims are abstract Unix socket names: real ones, on ports no server of ours uses (free ports
of this machine), so that concurrent test runs cannot meet. The masters named in claims are
live processes (this one and its parent) unless a test wants one that has exited."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub.port_claim import (
    CLAIM_RETRY_SECONDS,
    UNSURE_CLAIM_WAIT_SECONDS,
    Claimant,
    PortClaimed,
    PortClaims,
    automatic_chat,
    claim_name,
    claim_ports,
    claims_supported,
)
from trio_chat.hub_address import chat_identity
from trio_chat.hypercorn_worker import ListeningPort
from trio_chat.supervision import RECLAIM_INTERVAL_SECONDS, ask_holder, hold_ports

from servers import free_port

pytestmark = pytest.mark.skipif(not claims_supported(), reason="port claims need Linux")

FIRST_MASTER = os.getpid()
SECOND_MASTER = os.getppid()
#: Above the kernel's largest pid (2**22): never a live process.
EXITED_MASTER = 2**22 + 1
REDIS_CHAT = "redis://127.0.0.1:6379/0, prefix trio_chat"
OTHER_REDIS_CHAT = "redis://127.0.0.1:6379/0, prefix staging"
#: A claim's holder answers from a thread; the test's own process asks it.
HOLDER_EXIT_TIMEOUT_SECONDS = 10.0
#: Bounds the tests that ask a holder answering from a thread, on the real clock.
REAL_CLOCK_TIMEOUT_SECONDS = 10.0
WARNING_EVENT = "event=port_shared_with_another_chat"


@contextmanager
def claimed(
    master_pid: int, addresses: dict[int, str], chat: str | None = None
) -> Iterator[PortClaims]:
    """Ports claimed as the automatic hub does (for ``chat``: its own unless told)."""
    claims = claim_ports(master_pid, addresses, chat or automatic_chat(master_pid))
    claims.answer_in_background()
    try:
        yield claims
    finally:
        claims.close()


class FakeTime:
    """A clock and a sleep for ``claim_ports``: sleeping moves the clock on, and may do
    something the test needs done meanwhile."""

    def __init__(self, while_asleep: list[object] | None = None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.while_asleep = while_asleep or []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        for thing in self.while_asleep:
            if isinstance(thing, PortClaims):
                thing.close()
        self.while_asleep.clear()


def listening_on(port: int, host: str = "127.0.0.1") -> ListeningPort:
    return ListeningPort(port, f"{host}:{port}", shared=True)


@asynccontextmanager
async def holding(
    port: int, master_pid: int, chat: str, host: str = "127.0.0.1"
) -> AsyncIterator[trio.CancelScope]:
    """A worker of a server with a shared hub, claiming ``port`` (or sharing its claim) until
    the block ends or the scope it gives is cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(hold_ports, [listening_on(port, host)], master_pid, chat)
        yield nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def refusal(port: int, master_pid: int, chat: str) -> PortClaimed:
    """Why a worker of a server with a shared hub is refused ``port``: it must be."""
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(hold_ports, [listening_on(port)], master_pid, chat)
        except PortClaimed as error:
            return error
        nursery.cancel_scope.cancel()
    raise AssertionError(f"port {port} was not refused")


async def claimant_of(port: int) -> Claimant | None:
    holder = await ask_holder(port)
    return None if holder is None else holder.claimant


# The automatic hub's claims (from its process: blocking, answered from a thread).


def test_a_second_claim_of_a_port_names_the_first_servers_master_and_address() -> None:
    port = free_port()
    with claimed(FIRST_MASTER, {port: f"0.0.0.0:{port}"}), pytest.raises(PortClaimed) as refused:
        claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"}, automatic_chat(SECOND_MASTER))

    message = str(refused.value)
    assert refused.value.port == port
    assert (
        f"Hypercorn master pid {FIRST_MASTER}, serving 0.0.0.0:{port}) of another chat" in message
    )
    assert f"port {port} (to serve 127.0.0.1:{port})" in message
    assert "\n" not in message


def test_a_claim_given_up_is_free_again() -> None:
    port = free_port()
    with claimed(FIRST_MASTER, {port: f"127.0.0.1:{port}"}):
        pass

    with claimed(SECOND_MASTER, {port: f"127.0.0.1:{port}"}) as claims:
        assert claims.addresses == [f"127.0.0.1:{port}"]


def test_a_refused_claim_takes_none_of_its_ports() -> None:
    """A server whose second port is taken holds neither: its first one is free for others."""
    free, taken = free_port(), free_port()
    with claimed(FIRST_MASTER, {taken: f"127.0.0.1:{taken}"}):
        with pytest.raises(PortClaimed):
            claim_ports(
                SECOND_MASTER,
                {free: f"127.0.0.1:{free}", taken: f"127.0.0.1:{taken}"},
                automatic_chat(SECOND_MASTER),
            )

        with claimed(SECOND_MASTER, {free: f"127.0.0.1:{free}"}) as claims:
            assert claims.addresses == [f"127.0.0.1:{free}"]


def test_every_port_of_a_server_is_claimed() -> None:
    first, second = free_port(), free_port()
    with (
        claimed(FIRST_MASTER, {first: f"127.0.0.1:{first}", second: f"[::1]:{second}"}),
        pytest.raises(PortClaimed, match=rf"serving \[::1\]:{second}\)"),
    ):
        claim_ports(SECOND_MASTER, {second: f"127.0.0.1:{second}"}, automatic_chat(SECOND_MASTER))


@pytest.mark.process
def test_a_claim_ends_with_its_holder_however_it_ends() -> None:
    """A hub killed with SIGKILL leaves nothing stale: its replacement claims again."""
    port = free_port()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from trio_chat.hub.port_claim import automatic_chat, claim_ports; "
            f"claims = claim_ports({FIRST_MASTER}, {{{port}: '127.0.0.1:{port}'}}, "
            f"automatic_chat({FIRST_MASTER})); "
            "claims.answer_in_background(); print('claimed', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    with holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"claimed\n"
            with pytest.raises(PortClaimed, match=f"Hypercorn master pid {FIRST_MASTER}"):
                claim_ports(
                    SECOND_MASTER, {port: f"127.0.0.1:{port}"}, automatic_chat(SECOND_MASTER)
                )
        finally:
            holder.kill()
            holder.wait(HOLDER_EXIT_TIMEOUT_SECONDS)

    with claimed(SECOND_MASTER, {port: f"127.0.0.1:{port}"}) as claims:
        assert claims.addresses == [f"127.0.0.1:{port}"]


def test_a_port_claimed_for_the_same_chat_is_shared_and_left_to_its_holder() -> None:
    port = free_port()
    with claimed(FIRST_MASTER, {port: f"127.0.0.1:{port}"}, REDIS_CHAT):
        claims = claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"}, REDIS_CHAT)

        assert claims.addresses == []
        claims.close()


def test_a_port_claimed_for_another_chat_is_refused_naming_both_chats() -> None:
    port = free_port()
    with (
        claimed(FIRST_MASTER, {port: f"127.0.0.1:{port}"}, REDIS_CHAT),
        pytest.raises(PortClaimed) as refused,
    ):
        claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"}, OTHER_REDIS_CHAT)

    assert (
        f"(Hypercorn master pid {FIRST_MASTER}, serving 127.0.0.1:{port}) of another chat "
        f"(its hub: {REDIS_CHAT}; this one's: {OTHER_REDIS_CHAT})"
    ) in str(refused.value)


def test_a_name_held_by_something_that_does_not_answer_is_refused_after_a_while() -> None:
    port = free_port()
    time = FakeTime()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(claim_name(port))  # Bound, not listening: nobody to ask.

        with pytest.raises(PortClaimed, match=f"port {port} .* did not say which"):
            claim_ports(
                SECOND_MASTER,
                {port: f"127.0.0.1:{port}"},
                automatic_chat(SECOND_MASTER),
                clock=time.clock,
                sleep=time.sleep,
            )

    assert time.now == pytest.approx(UNSURE_CLAIM_WAIT_SECONDS)


def test_a_quick_restart_waits_for_the_exited_servers_claim_to_go() -> None:
    """The old server's master has exited, its hub not yet: its claim goes a moment later."""
    port = free_port()
    old_hub = claim_ports(EXITED_MASTER, {port: f"127.0.0.1:{port}"}, automatic_chat(EXITED_MASTER))
    old_hub.answer_in_background()
    time = FakeTime(while_asleep=[old_hub])  # It ends while the new hub waits.

    claims = claim_ports(
        SECOND_MASTER,
        {port: f"127.0.0.1:{port}"},
        automatic_chat(SECOND_MASTER),
        clock=time.clock,
        sleep=time.sleep,
    )

    assert claims.addresses == [f"127.0.0.1:{port}"]
    assert time.slept == [CLAIM_RETRY_SECONDS]
    claims.close()


def test_a_claim_of_an_exited_server_that_does_not_go_is_refused_after_a_while() -> None:
    port = free_port()
    time = FakeTime()
    with (
        claimed(EXITED_MASTER, {port: f"127.0.0.1:{port}"}),
        pytest.raises(PortClaimed, match=f"Hypercorn master pid {EXITED_MASTER}"),
    ):
        claim_ports(
            SECOND_MASTER,
            {port: f"127.0.0.1:{port}"},
            automatic_chat(SECOND_MASTER),
            clock=time.clock,
            sleep=time.sleep,
        )

    assert time.now == pytest.approx(UNSURE_CLAIM_WAIT_SECONDS)


# The workers' claims (servers with a shared hub: in their event loop).


async def test_servers_of_one_chat_share_a_port_and_one_of_them_holds_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    async with holding(port, FIRST_MASTER, REDIS_CHAT, host="0.0.0.0"):
        began = trio.current_time()
        async with holding(port, SECOND_MASTER, REDIS_CHAT):
            assert trio.current_time() == began
            assert await claimant_of(port) == Claimant(FIRST_MASTER, f"0.0.0.0:{port}", REDIS_CHAT)


async def test_a_server_of_another_chat_is_refused_at_once_naming_the_holder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    async with holding(port, FIRST_MASTER, REDIS_CHAT):
        began = trio.current_time()
        refused = await refusal(port, SECOND_MASTER, OTHER_REDIS_CHAT)

        assert trio.current_time() == began
        assert f"Hypercorn master pid {FIRST_MASTER}, serving 127.0.0.1:{port}" in str(refused)
        # The refused worker took nothing from the holder.
        assert await claimant_of(port) == Claimant(FIRST_MASTER, f"127.0.0.1:{port}", REDIS_CHAT)


async def test_a_server_of_a_shared_hub_is_refused_a_port_an_automatic_hub_holds() -> None:
    port = free_port()
    with trio.fail_after(REAL_CLOCK_TIMEOUT_SECONDS), claimed(FIRST_MASTER, {port: f"[::]:{port}"}):
        refused = await refusal(port, SECOND_MASTER, REDIS_CHAT)

    assert f"Hypercorn master pid {FIRST_MASTER}, serving [::]:{port}" in str(refused)
    assert f"its hub: {automatic_chat(FIRST_MASTER)}" in str(refused)


async def test_an_automatic_hub_is_refused_a_port_a_server_of_a_shared_hub_holds() -> None:
    port = free_port()
    with trio.fail_after(REAL_CLOCK_TIMEOUT_SECONDS):
        async with holding(port, FIRST_MASTER, REDIS_CHAT):
            # The hub asks from its own thread (it blocks); the worker answers from its loop.
            with pytest.raises(PortClaimed) as refused:
                await trio.to_thread.run_sync(
                    claim_ports,
                    SECOND_MASTER,
                    {port: f"127.0.0.1:{port}"},
                    automatic_chat(SECOND_MASTER),
                )

    assert f"Hypercorn master pid {FIRST_MASTER}, serving 127.0.0.1:{port}" in str(refused.value)
    assert f"its hub: {REDIS_CHAT}" in str(refused.value)


async def test_when_the_holder_goes_another_server_of_its_chat_claims_within_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    async with trio.open_nursery() as staying:
        async with trio.open_nursery() as going:
            await going.start(
                hold_ports, [listening_on(port, "0.0.0.0")], SECOND_MASTER, REDIS_CHAT
            )
            await staying.start(hold_ports, [listening_on(port)], FIRST_MASTER, REDIS_CHAT)
            assert await claimant_of(port) == Claimant(SECOND_MASTER, f"0.0.0.0:{port}", REDIS_CHAT)
            going.cancel_scope.cancel()  # A reload, or one of the servers stopped.
        assert await claimant_of(port) is None  # The claim went with its holder.

        await trio.sleep(RECLAIM_INTERVAL_SECONDS + CLAIM_RETRY_SECONDS)

        assert await claimant_of(port) == Claimant(FIRST_MASTER, f"127.0.0.1:{port}", REDIS_CHAT)
        staying.cancel_scope.cancel()


async def test_a_worker_waits_for_the_claim_of_a_server_whose_master_has_exited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    restarted = trio.Event()
    async with trio.open_nursery() as nursery:

        async def restart() -> None:
            await nursery.start(hold_ports, [listening_on(port)], SECOND_MASTER, REDIS_CHAT)
            restarted.set()

        async with holding(port, EXITED_MASTER, automatic_chat(EXITED_MASTER)):
            began = trio.current_time()
            nursery.start_soon(restart)
            await trio.sleep(UNSURE_CLAIM_WAIT_SECONDS / 2)  # Its hub ends a moment later.
            assert not restarted.is_set()

        await restarted.wait()
        assert trio.current_time() - began < UNSURE_CLAIM_WAIT_SECONDS
        assert await claimant_of(port) == Claimant(SECOND_MASTER, f"127.0.0.1:{port}", REDIS_CHAT)
        nursery.cancel_scope.cancel()


async def test_a_worker_is_refused_the_claim_of_an_exited_server_that_does_not_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    async with holding(port, EXITED_MASTER, automatic_chat(EXITED_MASTER)):
        began = trio.current_time()
        refused = await refusal(port, SECOND_MASTER, REDIS_CHAT)

        waited = trio.current_time() - began
        assert f"Hypercorn master pid {EXITED_MASTER}" in str(refused)
        assert (
            UNSURE_CLAIM_WAIT_SECONDS <= waited <= UNSURE_CLAIM_WAIT_SECONDS + CLAIM_RETRY_SECONDS
        )


async def test_a_server_of_another_chat_that_slipped_in_is_warned_of_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    intruder_chat = automatic_chat(FIRST_MASTER)
    async with trio.open_nursery() as staying:
        async with trio.open_nursery() as going:
            await going.start(hold_ports, [listening_on(port)], SECOND_MASTER, REDIS_CHAT)
            await staying.start(hold_ports, [listening_on(port)], SECOND_MASTER, REDIS_CHAT)
            going.cancel_scope.cancel()  # The holder's server stopped.
        # Before the other takes the claim over, a server of another chat starts, unrefused.
        async with holding(port, FIRST_MASTER, intruder_chat):
            await trio.sleep(10 * RECLAIM_INTERVAL_SECONDS)
        staying.cancel_scope.cancel()

    [warning] = [r for r in caplog.records if r.getMessage().startswith(WARNING_EVENT)]
    assert warning.levelno == logging.WARNING
    line = warning.getMessage()
    assert f"port={port} other_master={FIRST_MASTER} other_address=127.0.0.1:{port}" in line
    assert f'other_chat="{intruder_chat}"' in line


# Claimants, and which chat a server serves.


@pytest.mark.parametrize(
    ("text", "claimant"),
    [
        (
            b"1234 127.0.0.1:8000 automatic, master 1234\n",
            Claimant(1234, "127.0.0.1:8000", "automatic, master 1234"),
        ),
        (
            b"1234 [::]:8000 redis://h:6379/0, prefix p\n",
            Claimant(1234, "[::]:8000", "redis://h:6379/0, prefix p"),
        ),
        (b"1234 127.0.0.1:8000\n", Claimant(1234, "127.0.0.1:8000", "")),  # Names no chat.
        (b"", None),
        (b"pid 127.0.0.1:8000 unix:/hub\n", None),
        (b"1234\n", None),
        (b"1234 \x1b[2J\n", None),
        (b"1234 127.0.0.1:8000 \x1b[2J\n", None),
    ],
)
def test_a_holders_answer_is_read_back_or_ignored(text: bytes, claimant: Claimant | None) -> None:
    assert Claimant.decode(text) == claimant
    if claimant is not None:
        assert Claimant.decode(claimant.encode()) == claimant


@pytest.mark.parametrize(
    ("one", "other", "same_chat"),
    [
        ({"hub": ""}, {"hub": ""}, False),  # Each automatic hub is its server's own chat.
        ({"hub": "redis://127.0.0.1:6379/0"}, {"hub": "redis://127.0.0.1:6379"}, True),
        ({"hub": "redis://:a@127.0.0.1:6379/0"}, {"hub": "redis://:b@127.0.0.1:6379/0"}, True),
        ({"hub": "redis://127.0.0.1:6379/0"}, {"hub": "redis://127.0.0.1:6379/1"}, False),
        ({"hub": "redis://127.0.0.1:6379/0"}, {"hub": "redis://127.0.0.1:6380/0"}, False),
        (
            {"hub": "redis://127.0.0.1/0", "redis_prefix": "a"},
            {"hub": "redis://127.0.0.1/0", "redis_prefix": "b"},
            False,
        ),
        ({"hub": "unix:/run/hub.sock"}, {"hub": "unix:/run/hub.sock"}, True),
        ({"hub": "unix:/run/hub.sock"}, {"hub": "unix:/run/other.sock"}, False),
        ({"hub": "tcp://127.0.0.1:9000"}, {"hub": "tcp://127.0.0.1:9000"}, True),
        ({"hub": "redis://127.0.0.1:6379/0"}, {"hub": ""}, False),
    ],
)
def test_servers_are_one_chat_when_they_share_a_hub(
    one: dict[str, str], other: dict[str, str], same_chat: bool
) -> None:
    chats = [
        chat_identity(Settings(**one), FIRST_MASTER),  # type: ignore[arg-type]
        chat_identity(Settings(**other), SECOND_MASTER),  # type: ignore[arg-type]
    ]
    assert (chats[0] == chats[1]) is same_chat


def test_a_redis_chat_names_the_server_and_prefix_but_never_the_password() -> None:
    settings = Settings(hub="redis://user:s3cret@Redis.example:6380/2", redis_prefix="staging")

    assert chat_identity(settings, FIRST_MASTER) == "redis://redis.example:6380/2, prefix staging"


def test_a_hand_started_hub_on_a_relative_path_is_one_chat_from_any_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    chat = chat_identity(Settings(hub="unix:hub.sock"), FIRST_MASTER)

    assert chat == f"unix:{tmp_path / 'hub.sock'}"
