"""End to end: ``GET /metrics`` under ``hypercorn -k trio -w 4 trio_chat:app``.

A scrape lands on whichever worker the kernel picks; every worker must answer with the whole
server's figures. The answers are parsed with ``prometheus_client``'s own parser, each read
from a new connection so that it can land on any worker (the answering worker names itself in
the ``x-trio-chat-worker`` header). Workers report to the hub about once a second, so each
check polls until every worker agrees, under a ``trio.fail_after`` guard.

Localhost only, a free port per server, the real clock with every wait bounded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from servers import (
    STARTUP_TIMEOUT_SECONDS,
    HypercornServer,
    chat_client,
    clients_on_every_worker,
    hypercorn_server,
    workers_of,
)
from wsclient import HandshakeRefused, WebSocketClient

pytestmark = [pytest.mark.e2e, pytest.mark.process]

ENV = {"TRIO_CHAT_RATE": "0"}
#: Bounds each wait for every worker to agree: reports reach the hub about once a second.
AGREE_TIMEOUT_SECONDS = 20.0
WORKER_HEADER = "x-trio-chat-worker"
MESSAGES_PER_CLIENT = 3

#: One scrape: every sample, by name and labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of ``name``, by the value of ``label``."""
    return {
        dict(key)[label]: sample
        for (sample_name, key), sample in samples.items()
        if sample_name == name and label in dict(key)
    }


async def scrape(http: httpx.AsyncClient) -> tuple[int, Samples]:
    """One scrape on a new connection: (the worker that answered, its samples)."""
    response = await http.get("/metrics", headers={"connection": "close"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return int(response.headers[WORKER_HEADER]), parse(response.text)


async def every_worker_agrees(
    server: HypercornServer, pids: set[int], condition: Callable[[Samples], bool]
) -> dict[int, Samples]:
    """Scrape until each worker in ``pids`` has answered with figures that meet ``condition``;
    returns each worker's last answer."""
    agreed: dict[int, Samples] = {}
    last: dict[int, Samples] = {}
    async with httpx.AsyncClient(base_url=server.url) as http:
        try:
            with trio.fail_after(AGREE_TIMEOUT_SECONDS):
                while not pids <= set(agreed):
                    pid, samples = await scrape(http)
                    last[pid] = samples
                    if condition(samples):
                        agreed[pid] = samples
                    else:
                        agreed.pop(pid, None)
                        await trio.sleep(0.05)  # Reports come once a second: not a busy loop.
        except trio.TooSlowError:
            raise AssertionError(
                f"workers {pids - set(agreed)} never agreed; last answers: {last}"
            ) from None
    return agreed


def connections_are(count: int) -> Callable[[Samples], bool]:
    return lambda samples: value(samples, "trio_chat_connections") == count


async def send_and_receive_all(clients: list[WebSocketClient]) -> int:
    """Every client sends ``MESSAGES_PER_CLIENT`` messages; every client receives all of them.
    Returns how many were sent."""
    for n, client in enumerate(clients):
        for k in range(MESSAGES_PER_CLIENT):
            await client.send(f"sender-{n}", f"secret text {k}")
    sent = len(clients) * MESSAGES_PER_CLIENT
    with trio.fail_after(AGREE_TIMEOUT_SECONDS):
        for client in clients:
            for _ in range(sent):
                await client.receive_type("message")
    return sent


async def stall_one_client_until_evicted(
    server: HypercornServer, stack: AsyncExitStack
) -> WebSocketClient:
    """A client that stops reading while another floods a room of their own, until it is
    dropped."""
    path = "/chat?room=flood"
    stalled = await stack.enter_async_context(chat_client(server, path=path, receive_buffer=16_384))
    async with chat_client(server, path=path) as talker:
        text = "x" * 4000
        with trio.fail_after(AGREE_TIMEOUT_SECONDS * 3):
            while not any("reason=too_slow" in line for line in server.output):
                for _ in range(50):
                    await talker.send("talker", text)
                for _ in range(50):
                    await talker.receive_type("message")
            assert await stalled.wait_closed() == 1013
    return stalled


async def test_every_worker_reports_the_whole_servers_figures() -> None:
    async with hypercorn_server(workers=4, env=ENV) as server, AsyncExitStack() as stack:
        clients = await clients_on_every_worker(server, stack)
        pids = workers_of(clients)
        assert len(pids) == 4
        before = await every_worker_agrees(server, pids, connections_are(len(clients)))
        published = value(next(iter(before.values())), "trio_chat_messages_published_total")
        frames = value(next(iter(before.values())), "trio_chat_frames_sent_total")

        # Each worker counts what it published; any worker's scrape says the server's total.
        sent = await send_and_receive_all(clients)
        after = await every_worker_agrees(
            server,
            pids,
            lambda s: value(s, "trio_chat_messages_published_total") == published + sent,
        )
        for samples in after.values():
            assert value(samples, "trio_chat_connections") == len(clients)
            # Every client got every message: at least one frame each (batched or not).
            assert value(samples, "trio_chat_frames_sent_total") >= frames + len(clients)
            assert value(samples, "trio_chat_bytes_sent_total") > 0
            assert value(samples, "trio_chat_delivery_lag_seconds_count") > 0
            assert value(samples, "trio_chat_hub_round_trip_seconds_count") > 0
            # A gauge per worker, and each says its hub is up.
            assert labelled(samples, "trio_chat_hub_up", "worker") == {
                str(pid): 1.0 for pid in pids
            }
            # Nothing anyone wrote shows.
            text = " ".join(f"{name} {dict(labels)}" for name, labels in samples)
            assert "sender-" not in text and "secret" not in text

        # A refused origin and a client too slow to keep up are counted.
        with pytest.raises(HandshakeRefused):
            async with chat_client(server, headers=[("origin", "http://evil.example")]):
                pass
        await stall_one_client_until_evicted(server, stack)
        counted = await every_worker_agrees(
            server,
            pids,
            lambda s: (
                value(s, "trio_chat_handshakes_refused_total", reason="origin") == 1
                and value(s, "trio_chat_disconnects_total", code="1013") == 1
                and value(s, "trio_chat_connections") == len(clients)
            ),
        )

        # Clients that leave leave the gauge, and are counted. (Under 1006: Hypercorn tells the
        # app that a client closed with 1006, whatever its close frame said.)
        for client in clients[:4]:
            await client.close()
        await every_worker_agrees(
            server,
            pids,
            lambda s: (
                value(s, "trio_chat_connections") == len(clients) - 4
                and value(s, "trio_chat_disconnects_total", code="1006")
                >= value(next(iter(counted.values())), "trio_chat_disconnects_total", code="1006")
                + 4
            ),
        )
        left = await every_worker_agrees(server, pids, connections_are(len(clients) - 4))
        totals = _counters(next(iter(left.values())))
        published = value(next(iter(left.values())), "trio_chat_messages_published_total")

        # A reload replaces every worker: no counter goes back, and the old workers' gauges
        # are gone with them.
        os.kill(server.process.pid, signal.SIGHUP)
        with trio.fail_after(STARTUP_TIMEOUT_SECONDS):
            await server.wait_for_output("Running on", count=2 * server.workers)
        async with AsyncExitStack() as new_stack:
            new_clients = await clients_on_every_worker(server, new_stack)
            new_pids = workers_of(new_clients)
            assert not new_pids & pids
            reloaded = await every_worker_agrees(
                server,
                new_pids,
                lambda s: (
                    set(labelled(s, "trio_chat_hub_up", "worker")) == {str(p) for p in new_pids}
                    and value(s, "trio_chat_connections") == len(new_clients)
                ),
            )
            for samples in reloaded.values():
                now = _counters(samples)
                went_back = {key: (totals[key], now.get(key, 0.0)) for key in totals
                             if now.get(key, 0.0) < totals[key]}  # fmt: skip
                assert not went_back, went_back
                assert value(samples, "trio_chat_messages_published_total") == published


def _counters(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    """The server-wide counters of a scrape (per-process ones, which restart with their
    process, left out)."""
    return {
        f"{name}{sorted(labels)}": sample
        for (name, labels), sample in samples.items()
        if name.startswith("trio_chat_") and name.endswith("_total")
    }
