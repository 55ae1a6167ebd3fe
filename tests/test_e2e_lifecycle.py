"""End to end under ``hypercorn -c hypercorn.toml -k trio -w 4``: the server's life as an
operator lives it. A stop (SIGTERM to the master) and a reload (SIGHUP) close every client at
once instead of waiting out ``graceful_timeout``; a second server on a running one's port is
refused unless both serve one chat (one Redis hub, one key prefix); a server that cannot start
says why in one line and exits with a failed status.

Localhost only, a free port per server, every wait bounded by ``trio.fail_after`` with the
real clock, every process stopped at the end.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from servers import (
    MAX_CONNECTIONS_TO_REACH_EVERY_WORKER,
    SHIPPED_CONFIG,
    STARTUP_TIMEOUT_SECONDS,
    HypercornServer,
    chat_client,
    clients_on_every_worker,
    free_port,
    hypercorn_server,
    one_message_from_each_worker_reaches_everyone,
    redis_server,
    run_server_until_it_exits,
    wait_gone,
    workers_of,
)
from wsclient import ConnectionClosed, HandshakeRefused, WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]

GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
#: A worker that is shutting down refuses new sessions with this status.
NOT_SERVING = 403
#: Every client is closed this soon after the master is told to stop or reload (the issue's
#: promise; the workers look at the master's event every 50 ms).
CLOSED_WITHIN_SECONDS = 1.0
#: ... and the stopped server, hub included, is gone this soon after that.
GONE_WITHIN_SECONDS = 2.0
#: What a worker logs when another chat's server turned up on its port while it ran.
ANOTHER_CHAT_WARNING = "event=port_shared_with_another_chat"


def test_the_shipped_graceful_timeout_is_what_a_prompt_stop_must_beat() -> None:
    assert SHIPPED_CONFIG.graceful_timeout > CLOSED_WITHIN_SECONDS + GONE_WITHIN_SECONDS


async def test_a_stop_closes_every_client_at_once_and_the_server_is_gone_soon_after() -> None:
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack)
        workers = workers_of(clients)
        [hub] = server.hub_pids

        server.terminate()  # SIGTERM to the master, as systemd, Docker or a supervisor does.
        with trio.fail_after(CLOSED_WITHIN_SECONDS):
            codes = [await client.wait_closed() for client in clients]
        with trio.fail_after(GONE_WITHIN_SECONDS):
            assert await server.process.wait() == 0
            for pid in [hub, *workers]:
                await wait_gone(pid)

        assert codes == [GOING_AWAY] * len(clients)
        assert server.pids_logging("event=shutdown_begun") == workers


async def test_a_reload_closes_every_client_at_once_and_the_chat_carries_on_in_new_workers() -> (
    None
):
    async with hypercorn_server(workers=4) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack)
        old_workers = workers_of(clients)
        [hub] = server.hub_pids
        await clients[0].send("ann", "before the reload")
        [last_id] = {(await client.receive_type("message"))["id"] for client in clients}
        epoch = clients[0].history["epoch"]

        server.process.send_signal(signal.SIGHUP)
        with trio.fail_after(CLOSED_WITHIN_SECONDS):
            codes = [await client.wait_closed() for client in clients]
        assert codes == [GOING_AWAY] * len(clients)

        # Every client comes back as the page does, resuming where it was: the master kept the
        # port listening, so each waits in the backlog until a new worker takes it. (An old
        # worker that has closed its sessions, and not yet stopped accepting, refuses it: the
        # page tries again then, and so does this client.)
        reload_began = trio.current_time()
        back = []
        with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
            for _ in clients:
                back.append(await come_back(server, stack, f"/chat?since={epoch}:{last_id}"))
        outage = trio.current_time() - reload_began
        print(f"reload: every client back {outage:.2f} s after its close")

        new_workers = workers_of(back)
        assert not new_workers & old_workers
        for client in back:
            history = client.history
            assert (history["epoch"], history["resumed"]) == (epoch, True)
            assert history["messages"] == []  # Nothing was missed, and nothing comes twice.
        # The hub lived through the reload: no new one, and the history is whole.
        assert server.hub_pids == [hub]
        async with chat_client(server) as newcomer:
            assert [m["message"] for m in newcomer.history["messages"]] == ["before the reload"]
        # The chat carries on across the new workers, ids after the ones before.
        clients = back + await clients_on_every_worker(server, stack, at_least=0)
        by_worker = {client.welcome["worker"]: client for client in clients}
        frames = await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        assert min(frame["id"] for frame in frames) == last_id + 1


async def come_back(server: HypercornServer, stack: AsyncExitStack, path: str) -> WebSocketClient:
    """Connect as the page does after a close: again whenever the attempt fails, but only in
    the ways an old worker on its way out fails it (refused as not serving; or accepted by its
    Hypercorn as it stopped, then dropped)."""
    while True:
        try:
            return await stack.enter_async_context(chat_client(server, path))
        except HandshakeRefused as refused:
            if refused.status != NOT_SERVING:
                raise
        except ConnectionClosed as closed:
            if closed.code not in (ABNORMAL_CLOSURE, GOING_AWAY):
                raise
        except (ConnectionResetError, trio.BrokenResourceError):
            pass


async def test_a_second_server_on_the_same_port_is_refused_and_the_first_chats_on(
    tmp_path: Path,
) -> None:
    async with hypercorn_server(workers=4) as first, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(first, stack)
        by_worker = {client.welcome["worker"]: client for client in clients}

        # Another data folder: only the port is shared.
        second = await run_server_until_it_exits(
            first.port, {"TRIO_CHAT_DATA_DIR": str(tmp_path / "data")}
        )

        assert second.returncode != 0
        [line] = second.stderr
        assert line.startswith(f"trio_chat cannot start: port {first.port} ")
        assert f"Hypercorn master pid {first.process.pid}, serving 127.0.0.1:{first.port}" in line
        assert second.stdout == []
        # The first server's clients noticed nothing.
        await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        assert all(client.close_code is None for client in clients)


async def test_a_server_with_its_own_hub_is_refused_the_port_of_a_redis_hub_server(
    tmp_path: Path,
) -> None:
    """The Redis hub server has no hub process of its own: one of its workers holds the port."""
    async with (
        redis_server(tmp_path) as redis,
        hypercorn_server(workers=4, env={"TRIO_CHAT_HUB": redis.url}) as first,
        AsyncExitStack() as stack,
    ):
        clients = await clients_on_every_worker(first, stack)
        by_worker = {client.welcome["worker"]: client for client in clients}

        second = await run_server_until_it_exits(
            first.port, {"TRIO_CHAT_DATA_DIR": str(tmp_path / "data")}
        )

        assert second.returncode != 0
        [line] = second.stderr
        print(line)
        assert line.startswith(f"trio_chat cannot start: port {first.port} ")
        assert (
            f"(Hypercorn master pid {first.process.pid}, serving 127.0.0.1:{first.port}) of "
            "another chat"
        ) in line
        await one_message_from_each_worker_reaches_everyone(by_worker, clients)
        assert all(client.close_code is None for client in clients)


async def test_a_server_of_another_redis_chat_is_refused_the_port(tmp_path: Path) -> None:
    """Same Redis, another key prefix: another chat."""
    async with (
        redis_server(tmp_path) as redis,
        hypercorn_server(
            workers=2, env={"TRIO_CHAT_HUB": redis.url, "TRIO_CHAT_REDIS_PREFIX": "production"}
        ) as first,
    ):
        second = await run_server_until_it_exits(
            first.port, {"TRIO_CHAT_HUB": redis.url, "TRIO_CHAT_REDIS_PREFIX": "staging"}
        )

        assert second.returncode != 0
        [line] = second.stderr
        print(line)
        assert line.startswith(f"trio_chat cannot start: port {first.port} ")
        assert f"Hypercorn master pid {first.process.pid}, serving 127.0.0.1:{first.port}" in line
        assert f"its hub: {redis.url}, prefix production; this one's: {redis.url}, prefix " in line
        assert first.process.returncode is None


async def test_servers_of_one_redis_chat_share_a_port(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis:
        env = {"TRIO_CHAT_HUB": redis.url, "TRIO_CHAT_REDIS_PREFIX": "production"}
        async with (
            hypercorn_server(workers=2, env=env) as first,
            hypercorn_server(workers=2, env=env, port=first.port) as second,
            AsyncExitStack() as stack,
        ):
            servers = [set(first.child_pids), set(second.child_pids)]
            # The kernel spreads connections to the port over both servers' workers.
            clients: list[WebSocketClient] = []
            with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
                while not all(workers_of(clients) & workers for workers in servers):
                    assert len(clients) < MAX_CONNECTIONS_TO_REACH_EVERY_WORKER
                    clients.append(await stack.enter_async_context(chat_client(first)))

            # One chat: what is said on one server reaches the other's clients too.
            await clients[0].send("ann", "one port, one chat")
            for client in clients:
                assert (await client.receive_type("message"))["message"] == "one port, one chat"
            assert not any(ANOTHER_CHAT_WARNING in line for line in first.output + second.output)


async def test_a_bad_setting_exits_with_a_failed_status_and_one_line(tmp_path: Path) -> None:
    exited = await run_server_until_it_exits(
        free_port(),
        {"TRIO_CHAT_MAX_MESSAGE_BYTES": "lots", "TRIO_CHAT_DATA_DIR": str(tmp_path / "data")},
    )

    assert exited.returncode != 0
    assert exited.stderr == [
        "trio_chat configuration error: TRIO_CHAT_MAX_MESSAGE_BYTES='lots': invalid literal "
        "for int() with base 10: 'lots'"
    ]
    assert exited.stdout == []


async def test_a_missing_hub_secret_file_exits_with_a_failed_status_and_one_line(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "hub.secret"
    exited = await run_server_until_it_exits(
        free_port(),
        {
            "TRIO_CHAT_HUB": f"unix:{tmp_path / 'hub.sock'}",
            "TRIO_CHAT_HUB_SECRET_FILE": str(missing),
            "TRIO_CHAT_DATA_DIR": str(tmp_path / "data"),
        },
    )

    assert exited.returncode != 0
    [line] = exited.stderr
    assert f"cannot read the hub secret file {missing}: No such file or directory" in line
    assert not any("Running on" in line for line in exited.stdout + exited.stderr)
