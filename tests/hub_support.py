"""Workers joined to a real hub, in-process: what the hub contract tests and the Redis tests use.

A ``Recorder`` stands in for a worker's room: it keeps every frame its hub link delivers, and
tests wait on conditions over them (under a deadline, on the real clock: the hubs are real).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_chat.config import Settings
from trio_chat.hub_link import Hub, HubLink
from trio_chat.hub_link.bridge import Membership
from trio_chat.hub_link.interface import Member
from trio_chat.metrics.figures import WorkerFigures, WorkerReport
from trio_chat.protocol import (
    ChatMessage,
    encode_chat_body,
    frame_room,
    message_id,
    presence_version,
)

DEADLINE_SECONDS = 20.0
#: Recorders report made-up pids of their own: hubs tell workers apart by pid, and the
#: workers of a test share one process.
_PIDS = itertools.count(4_000_001)
#: The room of the helpers that take no room: what a connection starts in.
ROOM = Settings().default_room


class Recorder:
    """A worker's side of a hub link: records frames and the notices of missed messages, and
    reports ``figures`` (which tests fill in) under a pid of its own."""

    def __init__(self) -> None:
        self.pid = next(_PIDS)
        self.connections = 0
        self.figures = WorkerFigures()
        self.frames: list[str] = []
        self.missed = 0
        self.epochs: list[str] = []  # The epoch each notice named.
        self._changed = trio.Event()

    def deliver(self, frames: Sequence[str]) -> None:
        self.frames.extend(frames)
        self._notify()

    def messages_missed(self, epoch: str) -> None:
        self.missed += 1
        self.epochs.append(epoch)
        self._notify()

    def report(self) -> WorkerReport:
        return self.figures.report(self.pid, self.connections, hub_up=True)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(DEADLINE_SECONDS):
            while not condition():
                await self._changed.wait()

    def messages(self, room: str | None = None) -> list[dict[str, Any]]:
        """The message frames delivered (of ``room`` only, if given), in order."""
        return [
            json.loads(frame)
            for frame in self.frames
            if message_id(frame) is not None and (room is None or frame_room(frame) == room)
        ]

    def message_texts(self, room: str | None = None) -> list[str]:
        return [message["message"] for message in self.messages(room)]

    def presences(self, room: str | None = None) -> list[dict[str, Any]]:
        return [
            json.loads(frame)
            for frame in self.frames
            if presence_version(frame) is not None and (room is None or frame_room(frame) == room)
        ]

    def presence(self, room: str | None = None) -> dict[str, Any] | None:
        presences = self.presences(room)
        return presences[-1] if presences else None

    def rooms_seen(self) -> set[str | None]:
        """The rooms of the frames delivered (``None``: a frame of no room)."""
        return {frame_room(frame) for frame in self.frames}

    async def wait_for_messages(self, count: int, room: str | None = None) -> None:
        await self.wait_until(lambda: len(self.messages(room)) >= count)

    async def wait_for_text(self, text: str, room: str | None = None) -> None:
        await self.wait_until(lambda: text in self.message_texts(room))

    async def wait_for_presence(
        self, online: int, users: list[str], room: str | None = None
    ) -> dict[str, Any]:
        """Until the latest presence frame (of ``room``, if given) shows ``online`` and
        ``users``; returns it."""

        def shown() -> bool:
            latest = self.presence(room)
            return latest is not None and (latest["online"], latest["users"]) == (online, users)

        await self.wait_until(shown)
        latest = self.presence(room)
        assert latest is not None
        return latest


class JoinedWorker:
    def __init__(self, link: HubLink, recorder: Recorder, cancel_scope: trio.CancelScope):
        self.link = link
        self.recorder = recorder
        self._cancel_scope = cancel_scope

    async def publish(self, sender: str, text: str, room: str = ROOM) -> None:
        await self.link.publish(body(sender, text, room))

    def leave(self) -> None:
        self._cancel_scope.cancel()


@asynccontextmanager
async def joined(hub: Hub, recorder: Recorder | None = None) -> AsyncIterator[JoinedWorker]:
    """A worker joined to ``hub`` until the block ends (or ``leave``); ``recorder``: its
    listener, if not a new one (one that counted things before, with another hub)."""
    recorder = recorder or Recorder()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE_SECONDS):
            link = await nursery.start(hub.run, recorder)
        yield JoinedWorker(link, recorder, nursery.cancel_scope)
        nursery.cancel_scope.cancel()


def body(sender: str, text: str, room: str = ROOM) -> str:
    return encode_chat_body(room, ChatMessage(sender=sender, message=text))


class UnjoinableBackend:
    """A backend for a bridge part that never joins (the publisher, the reader): only what
    they read of their backend."""

    link_errors: tuple[type[BaseException], ...] = (ConnectionError,)
    rejoin_replaces = False

    def describe(self) -> str:
        return "fake"

    def join(
        self, label: str, presence: Mapping[Member, str], last_id: int, epoch: str
    ) -> Membership:
        raise AssertionError("this part of the bridge never joins")
