"""The hub contract, run against every backend: in-process, the manager hub, Redis Streams.

Each test joins several workers to one real hub (a hub process, or a redis-server of the test's
own) and checks what the ``Hub``/``HubLink`` interface promises, whatever is behind it: one
order of messages and presence frames for every worker, history and resume by id, presence
across workers, and leaving.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
import trio

from trio_chat.config import Settings
from trio_chat.hub_address import Endpoint
from trio_chat.hub_link import Hub
from trio_chat.hub_link.local import LocalHub
from trio_chat.hub_link.manager.client import HubClient
from trio_chat.hub_link.manager.hub import ManagerHub
from trio_chat.hub_link.redis.hub import RedisHub
from trio_chat.protocol import message_id

from hub_support import DEADLINE_SECONDS, joined
from servers import redis_server

HISTORY_SIZE = 5

HubFactory = Callable[[], Hub]


@pytest.fixture(
    params=[
        "local",
        pytest.param("manager", marks=pytest.mark.process),
        pytest.param("redis", marks=pytest.mark.process),
    ]
)
async def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HubFactory]:
    """Makes each worker's hub client; all of them reach the same hub."""
    backend = request.param
    if backend == "local":
        local = LocalHub(HISTORY_SIZE)
        yield lambda: local
    elif backend == "manager":
        folder = tmp_path / "run"
        folder.mkdir(mode=0o700)
        owner = os.getpid()
        endpoint = Endpoint(
            address=str(folder / f"hub-{owner}.sock"),
            authkey=os.urandom(32),
            owner_pid=owner,
            lock_path=folder / f"hub-{owner}.lock",
        )
        settings = Settings(history_size=HISTORY_SIZE)
        try:
            yield lambda: ManagerHub(settings, endpoint)
        finally:
            _stop_automatic_hub(endpoint)
    else:
        async with redis_server(tmp_path) as server:
            settings = Settings(hub=server.url, history_size=HISTORY_SIZE)
            yield lambda: RedisHub(settings)


def _stop_automatic_hub(endpoint: Endpoint) -> None:
    try:
        pid = HubClient(endpoint.address, endpoint.authkey).statistics()["pid"]
    except OSError:
        return  # No test started it.
    process = psutil.Process(pid)
    process.terminate()
    process.wait(DEADLINE_SECONDS)


async def test_every_worker_gets_every_message_and_presence_frame_in_one_order(
    make_hub: HubFactory,
) -> None:
    per_worker = 20
    async with joined(make_hub()) as a, joined(make_hub()) as b, joined(make_hub()) as c:
        workers = [a, b, c]

        async def publish_all(index: int) -> None:
            worker = workers[index]
            for n in range(per_worker):
                await worker.publish(f"w{index}", f"{index}:{n}")
                if n % 5 == 0:
                    # Presence changes interleave with the messages.
                    worker.link.present(n, f"user{index}-{n}")

        async with trio.open_nursery() as nursery:
            for index in range(len(workers)):
                nursery.start_soon(publish_all, index)
        total = per_worker * len(workers)
        for worker in workers:
            await worker.recorder.wait_for_messages(total)

        ids = [message["id"] for message in a.recorder.messages()]
        assert ids == list(range(ids[0], ids[0] + total))  # No gap, no repeat.
        for index in range(len(workers)):  # Each sender's messages in the order it sent them.
            mine = [m for m in a.recorder.message_texts() if m.startswith(f"{index}:")]
            assert mine == [f"{index}:{n}" for n in range(per_worker)]
        # Every worker saw the same frames in the same order, from the first message on.
        users = sorted(f"user{i}-{n}" for i in range(len(workers)) for n in range(0, per_worker, 5))
        for worker in workers:
            await worker.recorder.wait_for_presence(len(users), users)  # The last frame.
        first = next(f for f in a.recorder.frames if message_id(f) is not None)
        tails = [w.recorder.frames[w.recorder.frames.index(first) :] for w in workers]
        assert tails[0] == tails[1] == tails[2]


async def test_a_joining_client_gets_history_after_its_resume_point(make_hub: HubFactory) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        for n in range(3):
            await a.publish("ann", f"m{n}")
        await b.recorder.wait_for_messages(3)
        ids = [message["id"] for message in b.recorder.messages()]

        everything = await b.link.snapshot(None, None, 1, "")
        assert [json.loads(m)["message"] for m in everything.messages] == ["m0", "m1", "m2"]
        assert everything.last_id == ids[-1]
        assert everything.since_valid and everything.epoch

        resumed = await b.link.snapshot(ids[0], everything.epoch, 2, "")
        assert [json.loads(m)["id"] for m in resumed.messages] == ids[1:]
        assert resumed.since_valid
        assert (await b.link.snapshot(ids[-1], None, 3, "")).messages == []

        # A resume point from the future, or from another run of ids, is not valid: the
        # client gets the whole history instead.
        ahead = await b.link.snapshot(ids[-1] + 1, everything.epoch, 4, "")
        elsewhere = await b.link.snapshot(ids[0], "another-run", 5, "")
        for snapshot in (ahead, elsewhere):
            assert not snapshot.since_valid
            assert len(snapshot.messages) == 3


async def test_history_keeps_the_last_messages_and_says_where_it_starts(
    make_hub: HubFactory,
) -> None:
    async with joined(make_hub()) as a:
        for n in range(HISTORY_SIZE + 3):
            await a.publish("ann", f"m{n}")
        snapshot = await a.link.snapshot(None, None, 1, "")
        kept = [json.loads(m) for m in snapshot.messages]
        assert [m["message"] for m in kept] == [f"m{n}" for n in range(3, HISTORY_SIZE + 3)]
        assert snapshot.first_available == kept[0]["id"]
        assert snapshot.last_id == kept[-1]["id"]


async def test_presence_counts_every_workers_connections_and_a_joiner_sees_itself(
    make_hub: HubFactory,
) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        await a.link.snapshot(None, None, 1, "ann")
        await b.link.snapshot(None, None, 1, "bob")
        b.link.present(2, "")  # A connection without a name counts, unlisted.
        for worker in (a, b):
            await worker.recorder.wait_for_presence(3, ["ann", "bob"])

        snapshot = await a.link.snapshot(None, None, 2, "cat")
        presence = json.loads(snapshot.presence)
        assert (presence["online"], presence["users"]) == (4, ["ann", "bob", "cat"])
        assert presence["version"] == snapshot.presence_version
        # Presence frames (this state's included) are no older than the snapshot's version.
        latest = await b.recorder.wait_for_presence(4, ["ann", "bob", "cat"])
        assert latest["version"] >= snapshot.presence_version

        a.link.present(1, "ann2")  # A rename.
        b.link.absent(1)
        for worker in (a, b):
            await worker.recorder.wait_for_presence(3, ["ann2", "cat"])
            # Frames say who came and went since the previous one (one frame or several).
            since = [p for p in worker.recorder.presences() if p["version"] > latest["version"]]
            assert sorted(name for p in since for name in p["joined"]) == ["ann2"]
            assert sorted(name for p in since for name in p["left"]) == ["ann", "bob"]


async def test_a_worker_that_leaves_takes_its_users_out_of_presence(make_hub: HubFactory) -> None:
    async with joined(make_hub()) as a:
        async with joined(make_hub()) as b:
            await a.link.snapshot(None, None, 1, "ann")
            await b.link.snapshot(None, None, 1, "bob")
            await b.link.snapshot(None, None, 2, "bea")
            await a.recorder.wait_for_presence(3, ["ann", "bea", "bob"])
            b.leave()
        await a.recorder.wait_for_presence(1, ["ann"])
        await a.publish("ann", "still here")
        await a.recorder.wait_until(lambda: a.recorder.message_texts() == ["still here"])
