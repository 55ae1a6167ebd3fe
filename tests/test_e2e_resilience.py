"""End to end under ``hypercorn -k trio -w 4``: a hub started by hand dies and comes back; the
master is killed; the plain command, with Hypercorn's defaults.

The workers cannot start a hand-started hub themselves: while it is down they must say so
(``/healthz``, the log, an error frame to whoever sends), keep every client connected, and
re-join it as soon as its operator starts it again on the same address.

Localhost only, a free port per server, every wait bounded by ``trio.fail_after`` with the
real clock, every process stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from trio_chat.supervision import EXIT_GRACE_SECONDS

from servers import (
    CHAT_BACK_SECONDS,
    DEFAULT_ROOM,
    HUB_LOSS_NOTICED_SECONDS,
    STOP_TIMEOUT_SECONDS,
    clients_on_every_worker,
    healthz_of_every_worker,
    hypercorn_server,
    one_message_from_each_worker_reaches_everyone,
    standalone_hub,
    wait_gone,
    workers_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.process]

#: A sender whose worker has no hub is answered "at once" (docs/architecture.md): well within this.
HUB_UNAVAILABLE_ANSWER_SECONDS = 2.0


async def test_workers_say_the_hand_started_hub_is_down_and_rejoin_it_when_it_is_back(
    tmp_path: Path,
) -> None:
    # A hub that keeps messages in memory only: when it comes back it has lost them, and the
    # clients are told (with a store, it gives the workers what they missed: test_e2e_durable).
    async with (
        standalone_hub(tmp_path, store="memory") as hub,
        hypercorn_server(workers=4, env=hub.env) as server,
        AsyncExitStack() as stack,
    ):
        clients = await clients_on_every_worker(server, stack)
        by_worker = {client.welcome["worker"]: client for client in clients}
        worker_pids = set(by_worker)
        # One mailbox per worker, however many clients it has.
        statistics = await trio.to_thread.run_sync(lambda: hub.client().statistics())
        assert len(statistics["mailboxes"]) == 4 < len(clients)

        await hub.kill()
        with trio.fail_after(HUB_LOSS_NOTICED_SECONDS):
            await server.wait_for_output_from("event=hub_down", worker_pids)
        # While it is down, a sender on any worker is told its message was not sent...
        for pid, sender in by_worker.items():
            await sender.send(f"worker-{pid}", "while the hub is down")
            with trio.fail_after(HUB_UNAVAILABLE_ANSWER_SECONDS):
                error = await sender.receive_type("error")
            assert (error["code"], error["room"]) == ("hub_unavailable", DEFAULT_ROOM)
        # ... and every worker says it has no hub.
        answers = await healthz_of_every_worker(server, worker_pids, status=503)
        assert all(answer["hub"] is False for answer in answers.values())

        # Its operator (or a supervisor) starts it again on the same address.
        await hub.start()
        with trio.fail_after(CHAT_BACK_SECONDS):
            await server.wait_for_output_from("event=hub_up", worker_pids)
            for client in clients:
                notice = await client.receive_type("notice")
                assert notice["code"] == "messages_missed"
                assert "room" not in notice  # It concerns every room of the connection.
            # Every sender is still connected; what was refused is not delivered late.
            received = await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        assert {frame["message"] for frame in received} == {"after the hub came back"}
        answers = await healthz_of_every_worker(server, worker_pids, status=200)
        assert all(answer["hub"] is True for answer in answers.values())


async def test_a_hand_started_hub_killed_with_sigkill_starts_again_on_its_address(
    tmp_path: Path,
) -> None:
    # The killed hub's socket file stays behind; the new hub must not fail on it ("Address
    # already in use"), or a supervisor restarting it (systemd's Restart=) could never bring
    # it back, and the workers would stay without a hub.
    async with standalone_hub(tmp_path) as hub:
        await hub.kill()
        await hub.start()


async def test_workers_whose_master_is_killed_say_goodbye_and_end() -> None:
    """Hypercorn's workers outlive a master killed with SIGKILL; ours do not serve on without
    it (and without a hub, which ends with the master): they close their clients with 1001 and
    end, and no worker starts a hub for a server that is gone."""
    async with hypercorn_server(workers=2) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack, at_least=4)
        [hub_pid] = server.hub_pids
        workers = workers_of(clients)
        os.kill(server.process.pid, signal.SIGKILL)
        try:
            with trio.fail_after(EXIT_GRACE_SECONDS + STOP_TIMEOUT_SECONDS):
                assert [await client.wait_closed() for client in clients] == [1001] * len(clients)
                for pid in [hub_pid, *workers]:
                    await wait_gone(pid)
        finally:
            # Whatever happened, nothing of this server may live on: its process group (the
            # workers, and any hub started in it) goes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
        await server.wait_for_output_from("event=master_gone", workers)
        assert server.hub_pids == [hub_pid]


async def test_the_plain_command_serves_every_worker_in_one_order() -> None:
    """``hypercorn -k trio -w 4 trio_chat:app`` with nothing else (Hypercorn's defaults)."""
    async with (
        hypercorn_server(workers=4, shipped_config=False) as server,
        AsyncExitStack() as stack,
    ):
        clients = await clients_on_every_worker(server, stack)
        by_worker = {client.welcome["worker"]: client for client in clients}
        with trio.fail_after(CHAT_BACK_SECONDS):
            await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        [hub_pid] = server.hub_pids
        with trio.fail_after(STOP_TIMEOUT_SECONDS):
            assert await server.stop() == 0
        assert [await client.wait_closed() for client in clients] == [1001] * len(clients)
        await wait_gone(hub_pid)
