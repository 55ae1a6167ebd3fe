"""What only the Redis hub has to get right: a real redis-server dying, coming back with or
without its data, workers whose host died, and workers that fell behind the log.

Each test starts its own ``redis-server`` on a free loopback port (``servers.redis_server``).
The real clock runs; every wait is on a condition under a deadline.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from trio_chat import hypercorn_worker
from trio_chat.config import Settings
from trio_chat.hub_address import HubConfigError
from trio_chat.hub_link import HubUnavailable, open_hub
from trio_chat.hub_link.bridge import Fetched
from trio_chat.hub_link.interface import Older
from trio_chat.hub_link.redis.hub import HubStateLost, RedisBackend, RedisHub, server_name
from trio_chat.protocol import message_id

from hub_support import DEADLINE_SECONDS, ROOM, JoinedWorker, Recorder, body, joined
from servers import RedisServer, redis_server

pytestmark = pytest.mark.process

POLL_SECONDS = 0.02


def message_frames(fetched: Fetched) -> list[str]:
    return [frame for frame in fetched.frames if message_id(frame) is not None]


async def wait_for(condition: Callable[[], bool]) -> None:
    """For states no event announces (a link going down or up): checked often, up to a deadline."""
    with trio.fail_after(DEADLINE_SECONDS):
        while True:
            if condition():
                return
            await trio.sleep(POLL_SECONDS)


async def publish_and_see(sender: JoinedWorker, readers: list[JoinedWorker], text: str) -> None:
    await sender.publish("ann", text)
    for reader in readers:
        await reader.recorder.wait_for_text(text)


async def restart(server: RedisServer, workers: list[JoinedWorker]) -> None:
    """Kill Redis, check that the workers refuse to publish, start it again."""
    await server.kill()
    for worker in workers:
        with pytest.raises(HubUnavailable):
            await worker.publish("ann", "into the void")
    await server.start()
    await wait_for(lambda: all(worker.link.connected for worker in workers))


async def test_a_restart_that_keeps_the_data_loses_nothing(tmp_path: Path) -> None:
    async with redis_server(tmp_path, durable=True) as server:
        settings = Settings(hub=server.url)
        async with joined(RedisHub(settings)) as a, joined(RedisHub(settings)) as b:
            for n in range(3):
                await publish_and_see(a, [a, b], f"before {n}")
            epoch = (await a.link.snapshot(ROOM, None, None, 1, "ann")).epoch
            await b.link.snapshot(ROOM, None, None, 1, "bob")

            await restart(server, [a, b])
            for n in range(3):
                await publish_and_see(b, [a, b], f"after {n}")

            for worker in (a, b):
                ids = [m["id"] for m in worker.recorder.messages()]
                assert ids == list(range(1, 7))
                assert worker.recorder.missed == 0  # Nothing was missed: no notice.
                await worker.recorder.wait_for_presence(2, ["ann", "bob"])
            # The same run of ids, and the whole history, for joins and for scrollback.
            again = await a.link.snapshot(ROOM, None, None, 2, "")
            assert again.epoch == epoch and again.first_available == 1
            assert [json.loads(m)["id"] for m in again.messages] == list(range(1, 7))
            scrollback = await b.link.older(ROOM, 7, 10)
            assert (scrollback.messages, scrollback.complete) == (again.messages, True)


async def test_a_restart_that_lost_the_data_starts_a_new_run_of_ids(tmp_path: Path) -> None:
    async with redis_server(tmp_path, durable=False) as server:
        settings = Settings(hub=server.url)
        async with joined(RedisHub(settings)) as a, joined(RedisHub(settings)) as b:
            for n in range(3):
                await publish_and_see(a, [a, b], f"before {n}")
            before = await a.link.snapshot(ROOM, None, None, 1, "ann")
            await b.link.snapshot(ROOM, None, None, 1, "bob")

            await restart(server, [a, b])
            await publish_and_see(b, [a, b], "after")

            # Ids given before could be given again: a resume point from before is not valid
            # in the new run, so such a client gets the whole (new) history instead.
            after = await a.link.snapshot(ROOM, before.last_id, before.epoch, 2, "")
            assert after.epoch != before.epoch and not after.since_valid
            assert [json.loads(m)["message"] for m in after.messages] == ["after"]
            for worker in (a, b):
                assert worker.recorder.message_texts()[-1] == "after"
                assert worker.recorder.missed == 1  # Told: messages may be missing.
                # The workers brought their users back into the empty Redis.
                await worker.recorder.wait_for_presence(3, ["ann", "bob"])


async def test_a_worker_behind_when_redis_lost_the_data_does_not_reuse_ids(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path, durable=False) as server:
        settings = Settings(hub=server.url)
        ahead, behind = RedisBackend(settings), RedisBackend(settings)
        ahead_member = ahead.join("ahead", {(1, ROOM): "ann"}, 0, "")
        behind_member = behind.join("behind", {(1, ROOM): "bob"}, 0, "")
        ahead_member.update([body("ann", "one")], {})
        assert [json.loads(f)["id"] for f in message_frames(behind.read(10))] == [1]
        ahead_member.update([body("ann", "two")], {})
        assert [json.loads(f)["id"] for f in message_frames(ahead.read(10))] == [1, 2]

        await server.kill()
        await server.start()
        # The worker that is behind re-joins first (with its users), as the bridge does.
        behind_again = behind.join("behind", {(1, ROOM): "bob"}, 1, behind_member.epoch)
        # Published in the new run before the other worker re-joins: it must still get it.
        behind_again.update([body("bob", "new")], {})
        ahead_again = ahead.join("ahead", {(1, ROOM): "ann"}, 2, ahead_member.epoch)
        for member in (behind_again, ahead_again):
            assert not member.continuous
            assert member.epoch == behind_again.epoch != behind_member.epoch
        for backend in (ahead, behind):
            [frame] = message_frames(backend.read(10))
            assert json.loads(frame)["message"] == "new"  # Read as a message, by both.


async def test_an_id_given_again_after_redis_lost_its_last_writes_starts_a_new_run(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=server.url)
        client = redis.Redis(port=server.port, decode_responses=True)
        ahead, behind = RedisBackend(settings), RedisBackend(settings)
        behind_member = behind.join("behind", {}, 0, "")
        ahead.join("ahead", {}, 0, "")
        behind_member.update([body("bob", "one")], {})
        assert ids_of(message_frames(behind.read(10))) == [1]
        behind_member.update([body("bob", "two")], {})
        [_, two] = message_frames(ahead.read(10))

        # As after a restart that lost the last second of writes (appendfsync everysec): Redis
        # is as it was before "two", which only one worker had read.
        for key in ("trio_chat:log", f"trio_chat:history:{ROOM}"):
            kept: Any = client.xrange(key, "-", "(2-0")
            client.delete(key)
            for entry_id, fields in kept:
                client.xadd(key, fields, id=entry_id)
        client.set("trio_chat:last_id", 1)
        await wait_for(lambda: redis_time_ms(client) > json.loads(two)["ts"])

        # The worker that had not read it re-joins first, rightly in the same run, and is
        # given id 2 again.
        behind_again = behind.join("behind", {}, 1, behind_member.epoch)
        assert (behind_again.epoch, behind_again.continuous) == (behind_member.epoch, True)
        behind_again.update([body("bob", "another two")], {})
        # The worker that read "two" as id 2 sees another message under its id: a new run.
        ahead_again = ahead.join("ahead", {}, 2, behind_member.epoch)
        assert ahead_again.epoch != behind_member.epoch and not ahead_again.continuous
        with pytest.raises(HubStateLost):
            behind_again.update([], {})  # Its clients are told too, once it re-joins.


async def test_a_redis_gone_back_in_time_makes_workers_start_a_new_run(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=server.url)
        async with joined(RedisHub(settings)) as a, joined(RedisHub(settings)) as b:
            for n in range(3):
                await publish_and_see(a, [a, b], f"m{n}")
            epoch = (await a.link.snapshot(ROOM, None, None, 1, "")).epoch
            # As after a restart from an older snapshot: the last id given is behind.
            redis.Redis(port=server.port).set("trio_chat:last_id", 1)
            with pytest.raises(HubUnavailable):
                await a.publish("ann", "refused: its id could be given again")
            await a.recorder.wait_until(lambda: a.recorder.missed == 1)
            await publish_and_see(a, [a, b], "in the new run")
            # b finds out at its next call (its heartbeat, at the latest), and re-joins.
            await b.recorder.wait_until(lambda: b.recorder.missed == 1)
            assert (await b.link.snapshot(ROOM, None, None, 2, "")).epoch != epoch


async def test_presence_changes_survive_a_failed_update(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server, joined(RedisHub(Settings(hub=server.url))) as a:
        await a.link.snapshot(ROOM, None, None, 1, "ann")
        await a.link.snapshot(ROOM, None, None, 2, "bob")
        await a.recorder.wait_for_presence(2, ["ann", "bob"])
        control = redis.Redis(port=server.port)
        control.config_set("maxmemory", 1)  # Writes are refused; reads go on.
        with pytest.raises(HubUnavailable):
            await a.publish("ann", "refused")
        a.link.absent(2, ROOM)  # Its update is refused too.
        control.config_set("maxmemory", 0)
        await a.recorder.wait_for_presence(1, ["ann"])


async def test_a_worker_that_fell_behind_the_log_is_told_of_the_gap(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server:
        # A log of about 10 entries: Redis trims it a whole node (100 entries) at a time.
        settings = Settings(hub=server.url, mailbox_size=10)
        reader, writer = RedisBackend(settings), RedisBackend(settings)
        reader.join("reader", {}, 0, "")
        member = writer.join("writer", {}, 0, "")
        assert reader.read(10).frames == []  # Read up to date (nothing yet).
        for n in range(300):
            member.update([body("ann", str(n))], {})
        fetched = reader.read(1000)
        ids = [json.loads(frame)["id"] for frame in fetched.frames]
        assert ids[0] > 1 and ids == list(range(ids[0], 301))
        assert fetched.missed
        member.update([body("ann", "next")], {})
        assert not reader.read(10).missed  # Caught up: no gap any more.


async def test_the_users_of_a_worker_that_died_leave_presence_in_all_their_rooms(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=server.url)
        lease = 0.6
        async with joined(RedisHub(settings, lease_seconds=lease)) as alive:
            for room in (ROOM, "side"):
                await alive.link.snapshot(room, None, None, 1, "ann")
            # A worker on a host that dies: it joins, then never calls again.
            doomed = RedisBackend(settings, lease_seconds=lease)
            doomed.join("doomed", {(1, ROOM): "ghost", (1, "side"): "ghost"}, 0, "")
            for room in (ROOM, "side"):
                await alive.recorder.wait_for_presence(2, ["ann", "ghost"], room)
            # The live worker's heartbeats renew its lease and expire the dead one's.
            for room in (ROOM, "side"):
                await alive.recorder.wait_for_presence(1, ["ann"], room)


async def test_the_password_is_read_from_the_secret_file(tmp_path: Path) -> None:
    password = secrets.token_hex(20)
    secret = tmp_path / "redis.secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    async with redis_server(tmp_path, password=password) as server:
        settings = Settings(hub=server.url, hub_secret_file=secret)
        async with joined(RedisHub(settings)) as worker:
            await publish_and_see(worker, [worker], "let in")

        secret.write_text(secrets.token_hex(20))
        async with trio.open_nursery() as nursery:
            with pytest.raises(HubUnavailable, match=f"redis 127.0.0.1:{server.port}/0"):
                await nursery.start(RedisHub(settings).run, Recorder())


@pytest.mark.parametrize("url", ["redis://localhost:port/0", "redis://localhost:6379/db"])
def test_a_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(HubConfigError, match="TRIO_CHAT_HUB"):
        open_hub(Settings(hub=url))


async def test_entries_not_written_by_trio_chat_are_skipped(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=f"{server.url}?protocol=3")  # Asking for RESP3 changes nothing.
        reader, writer = RedisBackend(settings), RedisBackend(settings)
        reader.join("reader", {}, 0, "")
        member = writer.join("writer", {}, 0, "")
        member.update([body("ann", "one")], {})
        client = redis.Redis(port=server.port)
        client.xadd("trio_chat:log", {"b": "not json", "t": "x"}, id="2-0")
        client.xadd("trio_chat:log", {"v": "1"}, id="2-1")
        # A message whose entry names another room than its body.
        client.xadd("trio_chat:log", {"t": "1", "r": "elsewhere", "b": body("ann", "x")}, id="3-0")
        client.set("trio_chat:last_id", 3)
        member.update([body("ann", "four")], {})
        fetched = reader.read(10)
        texts = [json.loads(frame)["message"] for frame in fetched.frames if '"message"' in frame]
        assert texts == ["one", "four"]
        assert fetched.missed  # Messages 2 and 3 were not ones: their clients are told.


# Rooms


async def test_log_entries_name_their_room_and_bodies_of_no_room_get_no_id(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url))
        member = backend.join("writer", {}, 0, "")
        not_of_a_room = ['{"sender":"ann","message":"no room"}', body("ann", "x")[1:], "{}"]
        published = member.update(
            [body("ann", "red", "red"), *not_of_a_room, body("ann", "blue", "blue")], {}
        )
        assert published == 2  # What the publisher counts: the bodies given an id.

        frames = [json.loads(frame) for frame in message_frames(backend.read(10))]
        assert [(m["id"], m["room"], m["message"]) for m in frames] == [
            (1, "red", "red"),
            (2, "blue", "blue"),
        ]
        client = redis.Redis(port=server.port, decode_responses=True)
        entries: Any = client.xrange("trio_chat:log")
        assert [fields["r"] for _, fields in entries] == ["red", "blue"]
        assert client.get("trio_chat:bad_bodies") == str(len(not_of_a_room))


async def test_a_rejoin_changes_the_presence_of_only_the_rooms_it_changes(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url))
        client = redis.Redis(port=server.port, decode_responses=True)
        members = {(1, "red"): "ann", (1, "blue"): "ann", (2, "red"): "bob"}
        backend.join("worker", members, 0, "")
        first = [json.loads(frame) for frame in backend.read(10).frames]
        assert sorted((p["room"], p["online"]) for p in first) == [("blue", 1), ("red", 2)]

        def presence_due() -> list[str]:
            """The rooms whose presence changed since their last frame."""
            rooms: Any = client.zrange("trio_chat:presence:due", 0, -1)
            return list(rooms)

        backend.join("worker", members, 0, "")
        assert presence_due() == []  # Nothing changed: no frame to come.
        backend.join("worker", {(1, "red"): "ann", (1, "blue"): "ann"}, 0, "")
        assert presence_due() == ["red"]  # Its frame is held back: one per interval.
        assert sorted(backend.rooms()) == [("blue", 1), ("red", 1)]


def redis_time_ms(client: redis.Redis) -> int:
    seconds, microseconds = client.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


async def test_the_longest_idle_empty_room_makes_way_for_a_new_one(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url, max_rooms=3))
        client = redis.Redis(port=server.port, decode_responses=True)
        # "zz-old" empties first: named so that a tie broken by name would pick the other.
        member = backend.join(
            "worker", {(1, "zz-old"): "", (1, "aa-new"): "", (1, "busy"): ""}, 0, ""
        )
        member.update([], {(1, "zz-old"): None})
        emptied = redis_time_ms(client)
        await wait_for(lambda: redis_time_ms(client) > emptied)  # The clock moves on.
        member.update([], {(1, "aa-new"): None})

        assert not member.snapshot("third", None, None, 1, "").refused
        assert sorted(room for room, _ in backend.rooms()) == ["aa-new", "busy", "third"]
        assert not member.snapshot("fourth", None, None, 1, "").refused
        assert [room for room, _ in backend.rooms()] == ["busy", "fourth", "third"]
        assert member.snapshot("fifth", None, None, 1, "").refused  # None is empty.


async def test_an_empty_room_idle_for_long_is_forgotten_but_not_its_history(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url), empty_room_seconds=0.2)
        client = redis.Redis(port=server.port, decode_responses=True)
        member = backend.join("worker", {(1, "red"): "ann", (1, "blue"): "bob"}, 0, "")
        member.update([body("bob", "before", "blue"), body("ann", "hello", "red")], {})
        [_, hello] = message_frames(backend.read(10))
        member.update([], {(1, "red"): None})
        assert sorted(backend.rooms()) == [("blue", 1), ("red", 0)]

        def forgotten() -> bool:
            member.update([], {})  # A heartbeat: what forgets idle rooms.
            return [room for room, _ in backend.rooms()] == ["blue"]

        await wait_for(forgotten)
        # Its presence and its place in the registry are gone; its history stays.
        assert sorted(client.keys("trio_chat:*red*")) == [
            "trio_chat:history:red",
            "trio_chat:history:red:trimmed",
        ]
        for registry in ("rooms", "rooms:empty", "presence:due"):
            assert client.zscore(f"trio_chat:{registry}", "red") is None
        page = member.older("red", 100, 10)
        assert (page.messages, page.complete) == ([hello], True)

        # Made again, the room has its history, which starts exactly at its first message.
        snapshot = member.snapshot("red", None, None, 2, "")
        assert snapshot.messages == [hello]
        assert snapshot.first_available == json.loads(hello)["id"] == 2


# History: retention and scrollback

#: A retention in days short enough to wait out on the real clock (Redis's: the scripts read
#: the time from Redis).
RETENTION_SECONDS = 2.0
SECONDS_PER_DAY = 24 * 60 * 60


def read_messages(backend: RedisBackend, count: int) -> list[str]:
    """The next ``count`` message frames of the log (which holds at least that many)."""
    frames: list[str] = []
    while len(frames) < count:
        frames += message_frames(backend.read(1000))
    return frames


def ids_of(frames: list[str]) -> list[int]:
    return [json.loads(frame)["id"] for frame in frames]


async def test_a_room_keeps_its_newest_messages_up_to_the_retention_count(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=server.url, history_size=3, retention_messages=5)
        backend = RedisBackend(settings)
        member = backend.join("worker", {}, 0, "")
        bodies = []
        for n in range(8):
            if n % 3 == 0:  # Another room's ids in between: just before red 0, red 3, red 6.
                bodies.append(body("bob", f"blue {n}", "blue"))
            bodies.append(body("ann", f"red {n}", "red"))
        member.update(bodies, {})
        frames = read_messages(backend, len(bodies))
        red = [frame for frame in frames if json.loads(frame)["room"] == "red"]

        snapshot = member.snapshot("red", None, None, 1, "")
        assert snapshot.messages == red[-3:]  # A join gets the newest history_size.
        # Red 0 to 2 are dropped: first available is one past red 2, which is blue 3's id.
        assert snapshot.first_available == ids_of(red)[2] + 1 < ids_of(red)[3]
        client = redis.Redis(port=server.port)
        assert client.xlen("trio_chat:history:red") == 5
        # Scrollback reaches the rest of the five, exactly as they were delivered.
        page = member.older("red", ids_of(snapshot.messages)[0], 10)
        assert (page.messages, page.complete) == (red[3:5], True)

        # A resume that missed more than a join gets says where what it is sent starts: one
        # past the message it is not sent (red 4).
        resumed = member.snapshot("red", ids_of(red)[3], snapshot.epoch, 2, "")
        assert resumed.messages == red[-3:] and resumed.since_valid
        assert resumed.first_available == ids_of(red)[4] + 1
        # Sent all it missed: where the room's history starts.
        resumed = member.snapshot("red", ids_of(red)[4], snapshot.epoch, 3, "")
        assert resumed.messages == red[-3:]
        assert resumed.first_available == snapshot.first_available


async def test_older_pages_back_to_the_first_message_kept(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url, retention_messages=5))
        member = backend.join("worker", {}, 0, "")
        member.update([body("ann", f"red {n}", "red") for n in range(7)], {})
        red = read_messages(backend, 7)
        kept = red[2:]

        pages: list[Older] = []
        before = ids_of(red)[-1] + 1
        while not pages or not pages[-1].complete:
            assert len(pages) < 5, "never complete"
            pages.append(member.older("red", before, 2))
            before = ids_of(pages[-1].messages)[0]
        assert [(page.messages, page.complete) for page in pages] == [
            (kept[3:5], False),
            (kept[1:3], False),
            (kept[0:1], True),
        ]
        # Complete exactly when nothing older is kept, even on a full page.
        assert member.older("red", before + 100, 5).complete
        assert not member.older("red", before + 100, 4).complete
        assert member.older("red", ids_of(kept)[0], 5) == Older("red", [], complete=True)
        assert member.older("nowhere", 100, 5) == Older("nowhere", [], complete=True)

        # A read: it works whatever the state of the worker's membership.
        redis.Redis(port=server.port).set("trio_chat:epoch", "another run")
        with pytest.raises(HubStateLost):
            member.update([], {})
        assert member.older("red", before + 100, 5).messages == kept


async def test_messages_past_the_retention_time_are_dropped_and_a_history_expires(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        settings = Settings(hub=server.url, retention_days=RETENTION_SECONDS / SECONDS_PER_DAY)
        retention_ms = RETENTION_SECONDS * 1000
        backend = RedisBackend(settings)
        client = redis.Redis(port=server.port, decode_responses=True)
        member = backend.join("worker", {(1, "red"): "ann"}, 0, "")

        def write(*texts: str) -> list[str]:
            member.update([body("ann", text, text.split()[0]) for text in texts], {})
            return read_messages(backend, len(texts))

        red_0, _ = write("red 0", "blue 0")
        written = json.loads(red_0)["ts"]
        await wait_for(lambda: redis_time_ms(client) >= written + retention_ms / 2)
        red_1, blue_1 = write("red 1", "blue 1")
        # The first two are past the retention, the next two not (for half the retention).
        await wait_for(lambda: redis_time_ms(client) > written + retention_ms)

        # Written to, a room drops what is too old.
        [new] = write("blue new")
        assert member.older("blue", 100, 10) == Older("blue", [blue_1, new], complete=True)
        # Joined, a room nobody wrote to since drops it too, and says where its history starts.
        snapshot = member.snapshot("red", None, None, 2, "")
        assert snapshot.messages == [red_1]
        assert snapshot.first_available == ids_of([red_0])[0] + 1  # One past red 0.
        assert member.older("red", 100, 10) == Older("red", [red_1], complete=True)

        # The history of a room nobody writes to expires with its last message's retention.
        for key in ("trio_chat:history:blue", "trio_chat:history:blue:trimmed"):
            assert 0 < client.pttl(key) <= retention_ms
        await wait_for(lambda: client.exists("trio_chat:history:red") == 0)
        assert client.keys("trio_chat:history:red*") == []
        snapshot = member.snapshot("red", None, None, 3, "")
        assert snapshot.messages == [] and snapshot.first_available == snapshot.last_id + 1
        [again] = write("red again")
        assert member.snapshot("red", None, None, 4, "").first_available == ids_of([again])[0]


async def test_a_history_far_over_its_count_is_trimmed_a_bounded_number_per_call(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as server:
        backend = RedisBackend(Settings(hub=server.url))
        member = backend.join("worker", {}, 0, "")
        total = 1200
        for start in range(0, total, 200):
            member.update([body("ann", str(n), "red") for n in range(start, start + 200)], {})
        red = read_messages(backend, total)
        client = redis.Redis(port=server.port)
        assert client.xlen("trio_chat:history:red") == total

        # The count is lowered (a restart with a new setting): more than one call drops.
        lowered = RedisBackend(Settings(hub=server.url, retention_messages=10))
        member = lowered.join("worker", {}, 0, "")
        member.update([body("ann", "next", "red")], {})
        assert client.xlen("trio_chat:history:red") == total + 1 - 1000
        assert client.get("trio_chat:history:red:trimmed") == b"1000"
        member.update([body("ann", "after", "red")], {})
        assert client.xlen("trio_chat:history:red") == 10
        # Ids 1193 to 1202 are kept: red's last eight, then the two new ones.
        assert member.snapshot("red", None, None, 1, "").first_available == ids_of(red)[-8]


# Whose figures: every server answering on one host's ports shares them


class _Listening:
    def __init__(self, *ports: int) -> None:
        self.tcp_ports = [
            hypercorn_worker.ListeningPort(port, f"0.0.0.0:{port}", shared=True) for port in ports
        ]


def test_a_servers_figures_are_named_by_its_host_and_tcp_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two servers sharing a port on one host (a rolling deploy) share one hash: a scrape of
    that port gives the same figures whichever answers."""
    host = socket.gethostname()
    monkeypatch.setattr(hypercorn_worker, "current", lambda: _Listening(8443, 8000, 8000))
    assert server_name() == f"{host}:tcp:8000,8443"
    monkeypatch.setattr(hypercorn_worker, "current", lambda: _Listening())
    master = multiprocessing.parent_process()
    assert server_name() == f"{host}:pid:{os.getpid() if master is None else master.pid}"


def test_outside_a_hypercorn_worker_a_servers_figures_are_named_by_its_master() -> None:
    assert hypercorn_worker.current() is None  # A test run.
    master = multiprocessing.parent_process()
    expected = os.getpid() if master is None else master.pid
    assert server_name() == f"{socket.gethostname()}:pid:{expected}"


def test_a_worker_hypercorn_did_not_start_as_expected_names_its_figures_by_its_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def misshapen() -> None:
        raise hypercorn_worker.HypercornWorkerError("not as expected")

    monkeypatch.setattr(hypercorn_worker, "current", misshapen)
    assert server_name().startswith(f"{socket.gethostname()}:pid:")
