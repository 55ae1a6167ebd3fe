"""hub/port_claim.py: one chat per TCP port on this machine. A hub claims its server's ports for
as long as it runs; a second claim of one of them is refused with a message naming the first
server's Hypercorn master and address; a claim given up (or its holder gone) is free again.

Claims are abstract Unix socket names: real ones, on ports no server of ours uses (free ports
of this machine), so that concurrent test runs cannot meet."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trio_chat.hub.port_claim import (
    Claimant,
    PortClaimed,
    PortClaims,
    check_port,
    claim_name,
    claim_ports,
    claims_supported,
)

from servers import free_port

pytestmark = pytest.mark.skipif(not claims_supported(), reason="port claims need Linux")

FIRST_MASTER = 4321
SECOND_MASTER = 8765
#: A claim's holder answers from a thread; the test's own process asks it.
HOLDER_EXIT_TIMEOUT_SECONDS = 10.0


@contextmanager
def claimed(master_pid: int, addresses: dict[int, str]) -> Iterator[PortClaims]:
    claims = claim_ports(master_pid, addresses)
    claims.answer_in_background()
    try:
        yield claims
    finally:
        claims.close()


def test_a_second_claim_of_a_port_names_the_first_servers_master_and_address() -> None:
    port = free_port()
    with claimed(FIRST_MASTER, {port: f"0.0.0.0:{port}"}), pytest.raises(PortClaimed) as refused:
        claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"})

    message = str(refused.value)
    assert refused.value.port == port
    assert f"Hypercorn master pid {FIRST_MASTER}, serving 0.0.0.0:{port}" in message
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
            claim_ports(SECOND_MASTER, {free: f"127.0.0.1:{free}", taken: f"127.0.0.1:{taken}"})

        with claimed(SECOND_MASTER, {free: f"127.0.0.1:{free}"}) as claims:
            assert claims.addresses == [f"127.0.0.1:{free}"]


def test_every_port_of_a_server_is_claimed() -> None:
    first, second = free_port(), free_port()
    with (
        claimed(FIRST_MASTER, {first: f"127.0.0.1:{first}", second: f"[::1]:{second}"}),
        pytest.raises(PortClaimed, match=rf"serving \[::1\]:{second}\)"),
    ):
        claim_ports(SECOND_MASTER, {second: f"127.0.0.1:{second}"})


@pytest.mark.process
def test_a_claim_ends_with_its_holder_however_it_ends() -> None:
    """A hub killed with SIGKILL leaves nothing stale: its replacement claims again."""
    port = free_port()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from trio_chat.hub.port_claim import claim_ports; "
            f"claims = claim_ports({FIRST_MASTER}, {{{port}: '127.0.0.1:{port}'}}); "
            "claims.answer_in_background(); print('claimed', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    with holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"claimed\n"
            with pytest.raises(PortClaimed, match=f"Hypercorn master pid {FIRST_MASTER}"):
                claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"})
        finally:
            holder.kill()
            holder.wait(HOLDER_EXIT_TIMEOUT_SECONDS)

    with claimed(SECOND_MASTER, {port: f"127.0.0.1:{port}"}) as claims:
        assert claims.addresses == [f"127.0.0.1:{port}"]


def test_a_server_of_a_shared_hub_is_refused_a_port_a_server_with_its_own_hub_holds() -> None:
    port = free_port()
    check_port(port, f"127.0.0.1:{port}")  # Unclaimed: fine, and still unclaimed after.
    with (
        claimed(FIRST_MASTER, {port: f"127.0.0.1:{port}"}),
        pytest.raises(PortClaimed, match=f"Hypercorn master pid {FIRST_MASTER}"),
    ):
        check_port(port, f"127.0.0.1:{port}")

    with claimed(SECOND_MASTER, {port: f"127.0.0.1:{port}"}):
        pass


def test_a_name_held_by_something_that_does_not_answer_is_refused_all_the_same() -> None:
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(claim_name(port))  # Bound, not listening: nobody to ask.

        with pytest.raises(PortClaimed, match=f"port {port} .* did not say which"):
            claim_ports(SECOND_MASTER, {port: f"127.0.0.1:{port}"})


@pytest.mark.parametrize(
    ("text", "claimant"),
    [
        (b"1234 127.0.0.1:8000\n", Claimant(1234, "127.0.0.1:8000")),
        (b"1234 [::]:8000\n", Claimant(1234, "[::]:8000")),
        (b"", None),
        (b"pid 127.0.0.1:8000\n", None),
        (b"1234\n", None),
        (b"1234 \x1b[2J\n", None),
    ],
)
def test_a_holders_answer_is_read_back_or_ignored(text: bytes, claimant: Claimant | None) -> None:
    assert Claimant.decode(text) == claimant
    if claimant is not None:
        assert Claimant.decode(claimant.encode()) == claimant
