"""The hub contract, run against every backend: in-process, the manager hub, Redis Streams.

Each test joins several workers to one real hub (a hub process, or a redis-server of the test's
own) and checks what the ``Hub``/``HubLink`` interface promises, whatever is behind it: per
room, one order of messages and presence frames for every worker, history and resume by id
(ids are one sequence for all rooms), presence across workers; the rooms listing and the limit
on rooms; scrollback (``older``); leaving; and the whole server's figures from every worker's
reports.

Routing differs: the in-process and manager hubs give a worker only the frames of rooms it has
a member in, while with Redis every worker reads every room's frames (its room fan-out drops
the rest), so there the tests check that each frame carries its room instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from subprocess import PIPE
from typing import Any, Protocol

import psutil
import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub.core import HubCore
from trio_chat.hub_address import Endpoint
from trio_chat.hub_link import Hub
from trio_chat.hub_link.interface import LEASE_SECONDS, Older, Snapshot
from trio_chat.hub_link.local import LocalHub
from trio_chat.hub_link.manager.client import HubClient
from trio_chat.hub_link.manager.hub import ManagerHub
from trio_chat.hub_link.redis.hub import (
    FIGURES_KEPT_SECONDS,
    RedisBackend,
    RedisHub,
    server_name,
)
from trio_chat.metrics.board import LAPSED_KEPT_SECONDS
from trio_chat.metrics.figures import (
    HUB_ROUND_TRIP_BUCKETS,
    Counts,
    HistogramFigures,
    ServerFigures,
    WorkerReport,
    read_process_start,
)
from trio_chat.protocol import frame_room, message_id

from hub_support import DEADLINE_SECONDS, ROOM, JoinedWorker, Recorder, joined
from servers import redis_server

HISTORY_SIZE = 5
#: The rooms of the limit's test.
MAX_ROOMS = 3
#: A connection id the tests' helpers use for a worker's own member of a room (the tests use
#: small ones).
OBSERVER = 1000


@dataclasses.dataclass(frozen=True)
class HubMaker:
    """Makes each worker's hub client; all of them reach the same hub."""

    make: Callable[[], Hub]
    #: Whether a worker gets only the frames of the rooms it has a member in (else every
    #: room's, and its room fan-out drops the rest).
    routes_by_interest: bool
    #: Whether messages are kept beyond the history in memory (the SQLite store, Redis): then
    #: a room's older messages, and a forgotten room's, are still there.
    durable: bool
    #: "local", "manager" or "redis".
    name: str = ""

    def __call__(self) -> Hub:
        return self.make()


@pytest.fixture
def hub_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The hub's settings, with a data folder of the test's own; a test changes them with
    ``@pytest.mark.parametrize("hub_settings", [{<field>: <value>}], indirect=True)``."""
    changes: dict[str, Any] = {"history_size": HISTORY_SIZE, "data_dir": tmp_path / "data"}
    changes.update(getattr(request, "param", {}))
    return Settings(**changes)


@pytest.fixture(
    params=[
        "local",
        pytest.param("manager", marks=pytest.mark.process),
        pytest.param("redis", marks=pytest.mark.process),
    ]
)
async def make_hub(
    request: pytest.FixtureRequest, tmp_path: Path, hub_settings: Settings
) -> AsyncIterator[HubMaker]:
    backend = request.param
    if backend == "local":
        local = LocalHub(hub_settings.history_size, max_rooms=hub_settings.max_rooms)
        yield HubMaker(lambda: local, routes_by_interest=True, durable=False, name=backend)
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
        try:
            yield HubMaker(
                lambda: ManagerHub(hub_settings, endpoint),
                routes_by_interest=True,
                durable=True,
                name=backend,
            )
        finally:
            _stop_automatic_hub(endpoint)
    else:
        async with redis_server(tmp_path) as server:
            settings = dataclasses.replace(hub_settings, hub=server.url)
            yield HubMaker(
                lambda: RedisHub(settings), routes_by_interest=False, durable=True, name=backend
            )


def _stop_automatic_hub(endpoint: Endpoint) -> None:
    try:
        pid = HubClient(endpoint.address, endpoint.authkey).statistics()["pid"]
    except OSError:
        return  # No test started it.
    process = psutil.Process(pid)
    process.terminate()
    process.wait(DEADLINE_SECONDS)


async def enter(
    worker: JoinedWorker, room: str, connection: int = OBSERVER, name: str = ""
) -> None:
    """A connection of the worker's joins ``room`` (the worker gets the room's frames)."""
    snapshot = await worker.link.snapshot(room, None, None, connection, name)
    assert not snapshot.refused


async def applied(worker: JoinedWorker, room: str) -> None:
    """Presence changes the worker made before are in the hub once a message it publishes
    after them is (they go in the same round trip, or an earlier one)."""
    await worker.publish("sync", "presence applied", room)


def texts(snapshot: Snapshot) -> list[str]:
    return [json.loads(m)["message"] for m in snapshot.messages]


def ids(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["id"] for frame in frames]


def room_frames(worker: JoinedWorker, room: str) -> list[str]:
    return [frame for frame in worker.recorder.frames if frame_room(frame) == room]


async def test_every_worker_gets_every_message_and_presence_frame_in_one_order(
    make_hub: HubMaker,
) -> None:
    per_worker = 20
    async with joined(make_hub()) as a, joined(make_hub()) as b, joined(make_hub()) as c:
        workers = [a, b, c]
        for worker in workers:
            await enter(worker, ROOM)

        async def publish_all(index: int) -> None:
            worker = workers[index]
            for n in range(per_worker):
                await worker.publish(f"w{index}", f"{index}:{n}")
                if n % 5 == 0:
                    # Presence changes interleave with the messages.
                    worker.link.present(n, ROOM, f"user{index}-{n}")

        async with trio.open_nursery() as nursery:
            for index in range(len(workers)):
                nursery.start_soon(publish_all, index)
        total = per_worker * len(workers)
        for worker in workers:
            await worker.recorder.wait_for_messages(total)

        message_ids = ids(a.recorder.messages())
        assert message_ids == list(range(message_ids[0], message_ids[0] + total))  # No gap.
        for index in range(len(workers)):  # Each sender's messages in the order it sent them.
            mine = [m for m in a.recorder.message_texts() if m.startswith(f"{index}:")]
            assert mine == [f"{index}:{n}" for n in range(per_worker)]
        # Every worker saw the same frames in the same order, from the first message on.
        users = sorted(f"user{i}-{n}" for i in range(len(workers)) for n in range(0, per_worker, 5))
        for worker in workers:
            # The last frame (the workers' own members have no name: counted, not listed).
            await worker.recorder.wait_for_presence(len(users) + len(workers), users)
        first = next(f for f in a.recorder.frames if message_id(f) is not None)
        tails = [w.recorder.frames[w.recorder.frames.index(first) :] for w in workers]
        assert tails[0] == tails[1] == tails[2]


async def test_a_joining_client_gets_history_after_its_resume_point(make_hub: HubMaker) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        await enter(b, ROOM)
        for n in range(3):
            await a.publish("ann", f"m{n}")
        await b.recorder.wait_for_messages(3)
        seen = ids(b.recorder.messages())

        everything = await b.link.snapshot(ROOM, None, None, 1, "")
        assert texts(everything) == ["m0", "m1", "m2"]
        assert everything.room == ROOM and not everything.refused
        assert everything.last_id == seen[-1]
        assert everything.since_valid and everything.epoch

        resumed = await b.link.snapshot(ROOM, seen[0], everything.epoch, 2, "")
        assert [json.loads(m)["id"] for m in resumed.messages] == seen[1:]
        assert resumed.since_valid
        assert (await b.link.snapshot(ROOM, seen[-1], None, 3, "")).messages == []

        # A resume point from the future, or from another run of ids, is not valid: the
        # client gets the whole history instead.
        ahead = await b.link.snapshot(ROOM, seen[-1] + 1, everything.epoch, 4, "")
        elsewhere = await b.link.snapshot(ROOM, seen[0], "another-run", 5, "")
        for snapshot in (ahead, elsewhere):
            assert not snapshot.since_valid
            assert len(snapshot.messages) == 3


async def test_history_keeps_the_last_messages_and_says_where_it_starts(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a:
        # A room's snapshot says whether anything older than its first message is kept.
        empty = await a.link.snapshot("quiet", None, None, 1, "")
        assert (empty.messages, empty.complete) == ([], True)
        await a.publish("ann", "first", "quiet")
        whole = await a.link.snapshot("quiet", None, None, 1, "")
        assert (len(whole.messages), whole.complete) == (1, True)
        after_it = await a.link.snapshot("quiet", whole.last_id, whole.epoch, 1, "")
        assert (after_it.messages, after_it.complete) == ([], False)  # "first" is kept.
        for n in range(HISTORY_SIZE + 3):
            await a.publish("ann", f"m{n}")
        snapshot = await a.link.snapshot(ROOM, None, None, 1, "")
        kept = [json.loads(m) for m in snapshot.messages]
        assert [m["message"] for m in kept] == [f"m{n}" for n in range(3, HISTORY_SIZE + 3)]
        assert snapshot.last_id == kept[-1]["id"]
        # Whether anything older is kept: a durable hub keeps the older ones, a scroll away.
        assert snapshot.complete is not make_hub.durable
        if make_hub.durable:
            older = await a.link.older(ROOM, kept[0]["id"], HISTORY_SIZE)
            assert [json.loads(m)["message"] for m in older.messages] == ["m0", "m1", "m2"]
            assert snapshot.first_available <= json.loads(older.messages[0])["id"]
        else:
            assert snapshot.first_available == kept[0]["id"]


async def test_presence_counts_every_workers_connections_and_a_joiner_sees_itself(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        await a.link.snapshot(ROOM, None, None, 1, "ann")
        await b.link.snapshot(ROOM, None, None, 1, "bob")
        b.link.present(2, ROOM, "")  # A connection without a name counts, unlisted.
        for worker in (a, b):
            await worker.recorder.wait_for_presence(3, ["ann", "bob"])

        snapshot = await a.link.snapshot(ROOM, None, None, 2, "cat")
        presence = json.loads(snapshot.presence)
        assert (presence["room"], presence["online"]) == (ROOM, 4)
        assert presence["users"] == ["ann", "bob", "cat"]
        assert presence["version"] == snapshot.presence_version
        # Presence frames (this state's included) are no older than the snapshot's version.
        latest = await b.recorder.wait_for_presence(4, ["ann", "bob", "cat"])
        assert latest["version"] >= snapshot.presence_version

        a.link.present(1, ROOM, "ann2")  # A rename.
        b.link.absent(1, ROOM)
        for worker in (a, b):
            await worker.recorder.wait_for_presence(3, ["ann2", "cat"])
            # Frames say who came and went since the previous one (one frame or several).
            since = [p for p in worker.recorder.presences() if p["version"] > latest["version"]]
            assert sorted(name for p in since for name in p["joined"]) == ["ann2"]
            assert sorted(name for p in since for name in p["left"]) == ["ann", "bob"]


async def test_a_worker_that_leaves_takes_its_users_out_of_presence(make_hub: HubMaker) -> None:
    async with joined(make_hub()) as a:
        async with joined(make_hub()) as b:
            await a.link.snapshot(ROOM, None, None, 1, "ann")
            await b.link.snapshot(ROOM, None, None, 1, "bob")
            await b.link.snapshot(ROOM, None, None, 2, "bea")
            await a.recorder.wait_for_presence(3, ["ann", "bea", "bob"])
            b.leave()
        await a.recorder.wait_for_presence(1, ["ann"])
        await a.publish("ann", "still here")
        await a.recorder.wait_until(lambda: a.recorder.message_texts() == ["still here"])


# Rooms


async def test_a_worker_gets_the_frames_of_its_rooms_and_each_frame_names_its_room(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as red, joined(make_hub()) as blue, joined(make_hub()) as both:
        await red.link.snapshot("red", None, None, 1, "rae")
        await blue.link.snapshot("blue", None, None, 1, "bo")
        await enter(both, "red")
        await enter(both, "blue")
        for n in range(3):
            await red.publish("rae", f"red {n}", "red")
            await blue.publish("bo", f"blue {n}", "blue")
        # Published last: a worker's frames come in the one order, so had any frame of a room
        # it is not in come its way, it would have come before these.
        await red.publish("rae", "red done", "red")
        await blue.publish("bo", "blue done", "blue")
        await red.recorder.wait_for_text("red done", "red")
        await blue.recorder.wait_for_text("blue done", "blue")
        await both.recorder.wait_for_messages(8)

        names = {"red": {"rae"}, "blue": {"bo"}}
        for worker in (red, blue, both):
            # Every frame names its room, and is of that room.
            assert None not in worker.recorder.rooms_seen()
            for message in worker.recorder.messages():
                assert message["message"].split()[0] == message["room"]
            for presence in worker.recorder.presences():
                assert set(presence["users"]) <= names[presence["room"]]
        for worker in (red, both):
            assert worker.recorder.message_texts("red") == ["red 0", "red 1", "red 2", "red done"]
        for worker in (blue, both):
            assert worker.recorder.message_texts("blue") == [
                "blue 0", "blue 1", "blue 2", "blue done"
            ]  # fmt: skip
        if make_hub.routes_by_interest:
            # No leakage: a worker gets nothing of a room it has no member in.
            assert red.recorder.rooms_seen() == {"red"}
            assert blue.recorder.rooms_seen() == {"blue"}


async def test_each_room_has_one_order_for_every_worker_and_ids_are_shared_by_all_rooms(
    make_hub: HubMaker,
) -> None:
    per_sender = 10
    async with joined(make_hub()) as a, joined(make_hub()) as b, joined(make_hub()) as c:
        # a is in red, c in blue, b in both.
        rooms_of = {"a": ["red"], "b": ["red", "blue"], "c": ["blue"]}
        workers = {"a": a, "b": b, "c": c}
        for label, rooms in rooms_of.items():
            for room in rooms:
                await enter(workers[label], room)

        async def publish_all(label: str, room: str) -> None:
            worker = workers[label]
            for n in range(per_sender):
                await worker.publish(label, f"{room} {label}{n}", room)
                if n % 4 == 0:
                    # Presence changes interleave with the messages.
                    worker.link.present(n, room, f"{label}{n}")

        async with trio.open_nursery() as nursery:
            for label, rooms in rooms_of.items():
                for room in rooms:
                    nursery.start_soon(publish_all, label, room)
        for room, labels in (("red", "ab"), ("blue", "bc")):
            names = sorted(f"{label}{n}" for label in labels for n in range(0, per_sender, 4))
            for label in labels:
                recorder = workers[label].recorder
                await recorder.wait_for_messages(2 * per_sender, room)
                # The last frame: every name, and the two members that have none.
                await recorder.wait_for_presence(len(names) + 2, names, room)

        red_ids = ids(a.recorder.messages("red"))
        blue_ids = ids(c.recorder.messages("blue"))
        everything = sorted(red_ids + blue_ids)
        # One sequence for all rooms: no id given twice, none skipped; a room's ids only grow.
        assert everything == list(range(everything[0], everything[0] + 4 * per_sender))
        assert red_ids == sorted(red_ids) and blue_ids == sorted(blue_ids)
        # A room's frames, messages and presence, in one order for every worker in it.
        for room, labels in (("red", "ab"), ("blue", "bc")):
            first, second = (room_frames(workers[label], room) for label in labels)
            start = next(f for f in first if message_id(f) is not None)
            assert first[first.index(start) :] == second[second.index(start) :]


async def test_history_and_resume_are_per_room(make_hub: HubMaker) -> None:
    async with joined(make_hub()) as a:
        await enter(a, "red")
        await enter(a, "blue")
        for n in range(HISTORY_SIZE + 2):
            await a.publish("ann", f"red {n}", "red")
            if n < 2:
                await a.publish("ann", f"blue {n}", "blue")
        await a.recorder.wait_for_messages(HISTORY_SIZE + 4)
        red = a.recorder.messages("red")
        blue = a.recorder.messages("blue")

        # Each room sends its own last messages, and says where what it keeps starts: one
        # past the newest it dropped (ids of other rooms lie between); a durable hub dropped
        # none.
        snapshot = await a.link.snapshot("red", None, None, 1, "")
        assert texts(snapshot) == [f"red {n}" for n in range(2, HISTORY_SIZE + 2)]
        dropped_through = 0 if make_hub.durable else red[1]["id"]
        assert snapshot.first_available == dropped_through + 1
        assert snapshot.last_id == red[-1]["id"]
        snapshot = await a.link.snapshot("blue", None, None, 1, "")
        assert texts(snapshot) == ["blue 0", "blue 1"]  # Nothing dropped.
        assert snapshot.first_available <= blue[0]["id"]

        # Resuming in a room after an id gives that room's messages after it.
        resumed = await a.link.snapshot("blue", red[0]["id"], snapshot.epoch, 2, "")
        assert resumed.since_valid
        assert [json.loads(m)["id"] for m in resumed.messages] == [
            m["id"] for m in blue if m["id"] > red[0]["id"]
        ]
        resumed = await a.link.snapshot("red", blue[-1]["id"], snapshot.epoch, 2, "")
        assert [json.loads(m)["id"] for m in resumed.messages] == [
            m["id"] for m in red if m["id"] > blue[-1]["id"]
        ]

        # A room made now has nothing older. A hub that cannot tell whether the room had
        # messages before (in memory: forgotten; in Redis: expired) says its first available
        # id is the next one; the SQLite store knows that nothing of it was ever dropped.
        fresh = await a.link.snapshot("green", None, None, 1, "")
        assert fresh.messages == []
        assert fresh.last_id == red[-1]["id"]
        assert fresh.first_available in (1, fresh.last_id + 1)


async def test_presence_is_per_room_and_a_connection_in_two_rooms_counts_in_both(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        await a.link.snapshot("red", None, None, 1, "ann")
        await a.link.snapshot("blue", None, None, 1, "ann")  # One connection, two rooms.
        await b.link.snapshot("red", None, None, 1, "bob")
        snapshot = await b.link.snapshot("blue", None, None, 2, "")
        presence = json.loads(snapshot.presence)
        assert (presence["room"], presence["online"], presence["users"]) == ("blue", 2, ["ann"])
        for worker in (a, b):
            await worker.recorder.wait_for_presence(2, ["ann", "bob"], "red")
            await worker.recorder.wait_for_presence(2, ["ann"], "blue")

        a.link.absent(1, "red")  # Leaves one of its rooms: still in the other.
        await b.recorder.wait_for_presence(1, ["bob"], "red")
        presence = json.loads((await b.link.snapshot("blue", None, None, 3, "")).presence)
        assert (presence["online"], presence["users"]) == (3, ["ann"])
        # The frames of each room count only its own members.
        for worker in (a, b):
            assert all(p["online"] <= 2 for p in worker.recorder.presences("red"))
            assert all(p["users"] in ([], ["ann"]) for p in worker.recorder.presences("blue"))


async def test_rooms_lists_the_busiest_first_then_by_name(make_hub: HubMaker) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        online = {"crowded": 3, "duo": 2, "alpha": 1, "beta": 1}
        for room, count in online.items():
            for connection in range(count):
                await enter(a if connection % 2 else b, room, connection)
        await enter(a, "empty")
        a.link.absent(OBSERVER, "empty")  # It stays, with nobody in it.
        await applied(a, "alpha")

        listed = await a.link.rooms()
        assert listed == [("crowded", 3), ("duo", 2), ("alpha", 1), ("beta", 1), ("empty", 0)]
        assert await b.link.rooms() == listed  # Whichever worker asks.


@pytest.mark.parametrize(
    "hub_settings", [{"max_rooms": MAX_ROOMS}], ids=[f"max_rooms={MAX_ROOMS}"], indirect=True
)
async def test_a_new_room_past_the_limit_is_refused_unless_an_empty_room_makes_way(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        for n in range(MAX_ROOMS):
            await enter(a if n % 2 else b, f"r{n}", name=f"user{n}")
        await b.publish("bea", "soon forgotten", "r0")

        refused = await a.link.snapshot("one-too-many", None, None, 1, "ann")
        assert refused.refused and refused.room == "one-too-many"
        assert refused.messages == [] and refused.last_id >= 1
        assert [room for room, _ in await a.link.rooms()] == ["r0", "r1", "r2"]

        # An empty room makes way for a new one, and is forgotten (with its history, unless
        # the hub keeps messages beyond its memory).
        b.link.absent(OBSERVER, "r0")
        await applied(b, "r2")
        made = await a.link.snapshot("one-too-many", None, None, 1, "ann")
        assert not made.refused
        assert json.loads(made.presence)["users"] == ["ann"]
        assert sorted(room for room, _ in await a.link.rooms()) == ["one-too-many", "r1", "r2"]
        assert (await a.link.snapshot("r0", None, None, 2, "")).refused  # None is empty now.

        a.link.absent(1, "one-too-many")
        await applied(a, "r1")
        again = await b.link.snapshot("r0", None, None, 1, "bea")
        assert not again.refused
        if make_hub.durable:
            assert [json.loads(m)["message"] for m in again.messages] == ["soon forgotten"]
        else:
            assert again.messages == [] and again.first_available == again.last_id + 1


# Scrollback


@pytest.mark.parametrize(
    "hub_settings", [{"history_size": 20}], ids=["history_size=20"], indirect=True
)
async def test_older_pages_back_through_exactly_the_rooms_messages_in_order(
    make_hub: HubMaker,
) -> None:
    count, limit = 7, 3
    async with joined(make_hub()) as a, joined(make_hub()) as b:
        await enter(b, "red")
        for n in range(count):
            await a.publish("ann", f"red {n}", "red")
            if n % 2:
                await a.publish("ann", f"blue {n}", "blue")  # Ids of another room in between.
        await b.recorder.wait_for_messages(count, "red")
        red = [frame for frame in room_frames(b, "red") if message_id(frame) is not None]
        last_id = (await b.link.snapshot("red", None, None, 1, "")).last_id

        pages: list[Older] = []
        before = last_id + 1
        while not pages or not pages[-1].complete:
            page = await a.link.older("red", before, limit)
            assert page.room == "red"
            assert len(pages) < count, "never complete"
            pages.append(page)
            if page.messages:
                before = json.loads(page.messages[0])["id"]

        # Pages of the newest first, each oldest first; the frames exactly as delivered live.
        assert [len(page.messages) for page in pages] == [3, 3, 1]
        assert [page.complete for page in pages] == [False, False, True]
        assert [frame for page in reversed(pages) for frame in page.messages] == red
        # Before an id of another room's message (ids are one sequence for all rooms): the
        # newest of the room's before it. Before the room's first message: nothing.
        red_ids = [json.loads(frame)["id"] for frame in red]
        blue_id = min(set(range(red_ids[0], red_ids[-1])) - set(red_ids))
        below_blue = await b.link.older("red", blue_id, limit)
        before_blue = [frame for frame, i in zip(red, red_ids, strict=True) if i < blue_id]
        assert below_blue.messages == before_blue[-limit:]
        first = await b.link.older("red", red_ids[0], limit)
        assert (first.messages, first.complete) == ([], True)


async def test_older_of_a_room_never_made_is_empty_and_complete_and_makes_no_room(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a:
        await a.publish("ann", "elsewhere", ROOM)

        page = await a.link.older("nowhere", 1_000_000, 10)

        assert page == Older("nowhere", [], complete=True)
        assert [room for room, _ in await a.link.rooms()] == [ROOM]


async def test_a_worker_that_leaves_takes_its_members_out_of_all_their_rooms(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a:
        async with joined(make_hub()) as b:
            for room in ("red", "blue"):
                await a.link.snapshot(room, None, None, 1, "ann")
                await b.link.snapshot(room, None, None, 1, "bob")
                await b.link.snapshot(room, None, None, 2, f"bob-{room}")
                await a.recorder.wait_for_presence(3, sorted(["ann", "bob", f"bob-{room}"]), room)
            b.leave()
        await a.recorder.wait_for_presence(1, ["ann"], "red")
        await a.recorder.wait_for_presence(1, ["ann"], "blue")
        assert sorted(await a.link.rooms()) == [("blue", 1), ("red", 1)]


# The whole server's figures


def fill(recorder: Recorder, published: int, sent: int, *, connections: int) -> None:
    """Counts as a worker's sessions and link would have made them."""
    figures = recorder.figures
    figures.messages_published += published
    figures.frames_sent += sent
    figures.bytes_sent += 10 * sent
    figures.disconnects[1000] += 1
    figures.frames_refused["rate_limited"] += published
    figures.hub_round_trip.observe(0.002 * published)
    figures.delivery_lag.observe(0.01)
    recorder.connections = connections


async def test_every_worker_gets_the_whole_servers_figures_and_a_leaver_is_folded_in(
    make_hub: HubMaker,
) -> None:
    async with joined(make_hub()) as a:
        await enter(a, ROOM)
        async with joined(make_hub()) as b:
            fill(a.recorder, 3, 10, connections=2)
            fill(b.recorder, 5, 20, connections=4)
            await a.link.exchange_figures(a.recorder.report())
            from_b = await b.link.exchange_figures(b.recorder.report())
            from_a = await a.link.exchange_figures(a.recorder.report())

            reports = sorted([a.recorder.report(), b.recorder.report()], key=lambda r: r.pid)
            for figures in (from_a, from_b):
                assert steady(figures.workers) == steady(reports)
                assert figures.retired == Counts()
                assert steady_counts(figures.totals) == steady_counts(
                    reports[0].counts + reports[1].counts
                )
                assert figures.connections == 6
                assert figures.rooms == 1  # The room with a member; none in any other.
            # Only the manager hub is a process of the server's own.
            assert (from_a.hub_pid is not None) is (make_hub.name == "manager")
            assert from_a.hub_pid != os.getpid()

            fill(b.recorder, 1, 1, connections=0)  # Counted after its last report.
            b.leave()
        final = b.recorder.report().counts  # Nothing counts in a worker that has left.
        figures = await a.link.exchange_figures(a.recorder.report())
        assert [worker.pid for worker in figures.workers] == [a.recorder.pid]
        assert figures.connections == 2
        assert figures.retired == final  # Its final report, all of it.
        assert figures.retired.messages_published == 6
        assert steady_counts(figures.totals) == steady_counts(a.recorder.report().counts + final)


async def test_a_worker_new_to_the_hub_counts_from_its_first_report(make_hub: HubMaker) -> None:
    """As when it re-joins a new hub (the automatic hub restarted, Redis's figures expired):
    what it counted before is not new, so the whole server's counters start again near 0 (a
    reset Prometheus understands) instead of jumping by every worker's whole counts."""
    veteran = Recorder()
    fill(veteran, 1_000, 50, connections=2)  # Counted while linked to the hub before.
    before = veteran.report().counts
    async with joined(make_hub(), veteran) as a:
        # Its report as it joined is its baseline.
        figures = await a.link.exchange_figures(a.recorder.report())
        [shown] = figures.workers
        assert steady_counts(shown.counts) == steady_counts(Counts())
        assert figures.connections == 2
        fill(a.recorder, 3, 4, connections=2)
        figures = await a.link.exchange_figures(a.recorder.report())
        assert figures.totals.messages_published == 3
        assert steady_counts(figures.totals) == steady_counts(a.recorder.report().counts - before)
    async with joined(make_hub()) as b:
        # It left with what it counted here, and no more.
        figures = await b.link.exchange_figures(b.recorder.report())
        assert figures.retired.messages_published == 3
        assert figures.retired.frames_sent == 4


async def test_a_worker_of_this_machine_that_died_is_dropped_at_once_by_the_manager_hub(
    make_hub: HubMaker,
) -> None:
    """The manager hub sees its workers' processes (its own machine: the automatic hub's
    always are); other hubs keep a silent worker until its lease runs out."""
    process = await trio.lowlevel.open_process([sys.executable, "-c", "input()"], stdin=PIPE)
    try:
        start = read_process_start(process.pid)
        assert start is not None
        async with joined(make_hub()) as a:
            await a.link.exchange_figures(WorkerReport(process.pid, 0, True, Counts(), start))
            figures = await a.link.exchange_figures(
                WorkerReport(process.pid, 3, True, Counts(messages_published=4), start)
            )
            assert [w.pid for w in figures.workers] == sorted([a.recorder.pid, process.pid])
            process.kill()
            await process.wait()

            figures = await a.link.exchange_figures(a.recorder.report())
            if make_hub.name == "manager":
                assert [w.pid for w in figures.workers] == [a.recorder.pid]
                assert figures.retired.messages_published == 4
                assert figures.connections == 0
            else:
                assert [w.pid for w in figures.workers] == sorted([a.recorder.pid, process.pid])
                assert figures.connections == 3
            assert figures.totals.messages_published == 4
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def steady_counts(counts: Counts) -> Counts:
    """Counts but for the hub round trips, which a worker's link adds to whenever it updates
    the hub (a presence change, Redis's heartbeat)."""
    return dataclasses.replace(
        counts, hub_round_trip=HistogramFigures.empty(HUB_ROUND_TRIP_BUCKETS)
    )


def steady(reports: Sequence[WorkerReport]) -> list[WorkerReport]:
    return [dataclasses.replace(r, counts=steady_counts(r.counts)) for r in reports]


# The books every hub keeps of its workers' figures (``metrics.board``'s rules), driven by hand
# with made-up workers: ``LocalHub``'s on Trio's clock, ``HubCore``'s (the manager hub's) on a
# clock of the test's, and ``lua/figures.lua`` on Redis's own clock.


class Books(Protocol):
    def report(self, report: WorkerReport) -> ServerFigures: ...

    def final(self, report: WorkerReport) -> None: ...

    def past_lease(self) -> None:
        """The next call comes after the lease of every worker ran out."""

    def past_lapsed_kept(self) -> None:
        """The next call comes after every worker silent past its lease was forgotten."""


class LocalBooks:
    def __init__(self, clock: trio.testing.MockClock) -> None:
        self.hub = LocalHub()
        self._clock = clock

    def report(self, report: WorkerReport) -> ServerFigures:
        return self.hub.exchange_figures(report)

    def final(self, report: WorkerReport) -> None:
        self.hub.final_figures(report)

    def past_lease(self) -> None:
        self._clock.jump(LEASE_SECONDS + 1)

    def past_lapsed_kept(self) -> None:
        self._clock.jump(LAPSED_KEPT_SECONDS + 1)


class CoreBooks:
    def __init__(self) -> None:
        self.now = 0.0
        self.core = HubCore(mailbox_size=8, history_size=8, monotonic=lambda: self.now)

    def report(self, report: WorkerReport) -> ServerFigures:
        return self.core.exchange_figures(report)

    def final(self, report: WorkerReport) -> None:
        self.core.final_figures(report)

    def past_lease(self) -> None:
        self.now += LEASE_SECONDS + 1

    def past_lapsed_kept(self) -> None:
        self.now += LAPSED_KEPT_SECONDS + 1


class RedisBooks:
    """Redis's clock cannot be moved: a call made with a lease (and a time kept) of less than
    nothing sees every worker past it."""

    def __init__(self, settings: Settings) -> None:
        self.backend = RedisBackend(settings)
        self._past_lease = RedisBackend(settings, lease_seconds=-0.001)
        self._past_kept = RedisBackend(settings, lease_seconds=-0.001, lapsed_kept_seconds=-0.001)
        self._next = self.backend

    def report(self, report: WorkerReport) -> ServerFigures:
        backend, self._next = self._next, self.backend
        return backend.figures("report", report)

    def final(self, report: WorkerReport) -> None:
        backend, self._next = self._next, self.backend
        backend.figures("final", report)

    def past_lease(self) -> None:
        self._next = self._past_lease

    def past_lapsed_kept(self) -> None:
        self._next = self._past_kept


def worker_report(pid: int, published: int, connections: int = 1) -> WorkerReport:
    return WorkerReport(pid, connections, True, Counts(messages_published=published))


def seen(figures: ServerFigures) -> list[tuple[int, bool, int]]:
    """Each worker shown: its pid, whether its hub link is up, its connections."""
    return [(w.pid, w.hub_up, w.connections) for w in figures.workers]


def published(figures: ServerFigures) -> tuple[int, int]:
    return figures.retired.messages_published, figures.totals.messages_published


def keep_the_books(books: Books) -> None:
    # A worker counts from the first report the hub gets of it (a new one's is all zeros).
    figures = books.report(worker_report(1, 1_000_000, connections=3))
    assert (seen(figures), published(figures)) == ([(1, True, 3)], (0, 0))
    books.report(worker_report(2, 0))
    figures = books.report(worker_report(1, 1_000_005, connections=3))
    assert (seen(figures), published(figures)) == ([(1, True, 3), (2, True, 1)], (0, 5))
    late = books.report(worker_report(1, 1_000_004, connections=9))  # Overtaken: ignored.
    assert (seen(late), published(late)) == ([(1, True, 3), (2, True, 1)], (0, 5))

    # Silent past its lease, a worker shows its hub link down, its clients still there...
    books.past_lease()
    figures = books.report(worker_report(2, 1))
    assert (seen(figures), published(figures)) == ([(1, False, 3), (2, True, 1)], (0, 6))
    # ...until it reports again, counted once.
    figures = books.report(worker_report(1, 1_000_007, connections=3))
    assert (seen(figures), published(figures)) == ([(1, True, 3), (2, True, 1)], (0, 8))

    # Forgotten after a while: its gauges go, its counts are retired, and should it report
    # again, that report is its baseline (nothing counted twice).
    books.past_lease()
    books.report(worker_report(2, 1))
    books.past_lapsed_kept()
    figures = books.report(worker_report(2, 2))  # Forgotten too: this is its baseline.
    assert (seen(figures), published(figures)) == ([(2, True, 1)], (8, 8))
    assert published(books.report(worker_report(1, 1_000_010, connections=3))) == (8, 8)
    figures = books.report(worker_report(1, 1_000_011, connections=3))
    assert (seen(figures), published(figures)) == ([(1, True, 3), (2, True, 1)], (8, 9))

    # A worker that leaves hands in its final counts, exactly however large.
    books.report(WorkerReport(3, 0, True, Counts()))
    books.report(WorkerReport(3, 0, True, Counts(bytes_sent=BIG - 1, frames_sent=BIG - 5)))
    books.final(WorkerReport(3, 0, True, Counts(bytes_sent=BIG, frames_sent=BIG - 3)))
    books.report(WorkerReport(4, 0, True, Counts()))
    books.final(WorkerReport(4, 0, True, Counts(bytes_sent=BIG + 2)))
    figures = books.report(worker_report(2, 2))
    assert [w.pid for w in figures.workers] == [1, 2]
    assert figures.retired.bytes_sent == 2 * BIG + 2
    assert figures.retired.frames_sent == BIG - 3
    assert figures.retired.messages_published == 8
    late_one = books.report(WorkerReport(3, 0, True, Counts(bytes_sent=BIG - 1)))
    assert [w.pid for w in late_one.workers] == [1, 2]  # Sent before it left: ignored.

    # Another process with a worker's pid (it started at another time): the old one's counts
    # are retired, the new one counts from its first report.
    books.report(WorkerReport(6, 0, True, Counts(), process_start=100))
    books.report(WorkerReport(6, 0, True, Counts(messages_published=30), process_start=100))
    figures = books.report(WorkerReport(6, 0, True, Counts(), process_start=200))
    assert published(figures) == (38, 39)
    figures = books.report(WorkerReport(6, 0, True, Counts(messages_published=2), 200))
    assert published(figures) == (38, 41)


#: Above 1e15: more digits than Lua's cjson writes (14), fewer than a double holds exactly.
BIG = 1_234_567_890_123_457


async def test_the_in_process_hub_keeps_the_books(mock_clock: trio.testing.MockClock) -> None:
    keep_the_books(LocalBooks(mock_clock))


async def test_the_manager_hub_keeps_the_books() -> None:
    keep_the_books(CoreBooks())


@pytest.mark.process
async def test_the_redis_hub_keeps_the_books(tmp_path: Path, hub_settings: Settings) -> None:
    async with redis_server(tmp_path) as server:
        settings = dataclasses.replace(hub_settings, hub=server.url)
        books = RedisBooks(settings)
        keep_the_books(books)
        assert books.report(worker_report(5, 0)).rooms == 0
        key = f"{settings.redis_prefix}:figures:{server_name()}"
        assert 0 < books.backend._client.pttl(key) <= FIGURES_KEPT_SECONDS * 1000
