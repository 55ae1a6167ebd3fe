"""What a client joining a room is sent, and the live frames its snapshot already covers.

A join enters the room in the fan-out before the hub takes the room's snapshot, so the live
frames of the room queued meanwhile may be older than the snapshot: the writer's ``CatchUp``
drops those, room by room, until each room's first new frame. Sans I/O but for waiting on a
join to be settled.
"""

from __future__ import annotations

from collections.abc import Sequence

from .fanout import PendingJoin, Queued
from .hub_link import Snapshot
from .protocol import (
    NoticeCode,
    frame_room,
    history_frame,
    invalid_resume_error,
    is_messages_missed,
    message_id,
    notice_frame,
    presence_version,
)


def opening_frames(snapshot: Snapshot, since: int | None) -> list[str]:
    """What a client joining a room gets: how its resume went, the history, presence."""
    frames = []
    room = snapshot.room
    if not snapshot.since_valid:
        frames.append(invalid_resume_error(room).frame())
    elif since is not None and since + 1 < snapshot.first_available:
        frames.append(
            notice_frame(
                NoticeCode.RESUME_PARTIAL,
                # Deleted by retention, or more than a history frame holds (then the
                # older ones are a scroll away).
                "Not every message from while you were away is shown here.",
                room=room,
                first_available=snapshot.first_available,
            )
        )
    resumed = since is not None and snapshot.since_valid
    frames.append(
        history_frame(
            room,
            snapshot.messages,
            resumed=resumed,
            epoch=snapshot.epoch,
            complete=snapshot.complete,
        )
    )
    frames.append(snapshot.presence)
    return frames


class CatchUp:
    """Sends each join's snapshot where it belongs, and drops the live frames it covers.

    Frames of a room queued after its join may be older than its snapshot: a room's frames
    start with a run the snapshot covers, then everything is new. Its first message newer than
    the snapshot ends the checks for that room (nor are any needed once every room has caught
    up): later messages have later ids, and a worker that re-joins a hub is given only what
    follows the last message it delivered. Until then, a message the snapshot covers may also
    come again after such a re-join (the worker had not delivered it yet), and is dropped then
    too; presence frames are checked by version all along (they keep growing across hubs that
    share a store). A ``messages_missed`` notice ends the catching up: what follows it comes
    from a new run of ids, which says nothing about the snapshots.

    A join that failed was undone in the fan-out, but the room's frames that came meanwhile are
    queued after it: they are dropped, until the room is joined again.
    """

    def __init__(self) -> None:
        self._catching_up: dict[str, Snapshot] = {}
        self._not_joined: set[str] = set()

    async def frames_of(self, item: Queued) -> Sequence[str]:
        if isinstance(item, PendingJoin):
            await item.done.wait()  # The hub's answer: one round trip.
            room = item.room
            self._catching_up.pop(room, None)
            self._not_joined.discard(room)
            if not item.joined:
                self._not_joined.add(room)
            elif item.snapshot is not None:
                self._catching_up[room] = item.snapshot
            return item.frames
        return self.filter(item)

    def filter(self, batch: Sequence[str]) -> Sequence[str]:
        if not (self._catching_up or self._not_joined):
            return batch
        kept = []
        for frame in batch:
            room = frame_room(frame)
            if room in self._not_joined and in_hub_order(frame):
                continue
            snapshot = None if room is None else self._catching_up.get(room)
            if snapshot is None:
                if room is None and is_messages_missed(frame):
                    self._catching_up.clear()
                kept.append(frame)
                continue
            covered = covered_by(frame, snapshot)
            if covered is False and message_id(frame) is not None:
                del self._catching_up[snapshot.room]  # The room's first new message: caught up.
            if not covered:
                kept.append(frame)
        return kept


def covered_by(frame: str, snapshot: Snapshot) -> bool | None:
    """Whether the snapshot already covers this frame of its room; None for frames outside the
    hub's order (error frames, ``left``), which neither repeat nor end the catching up."""
    message = message_id(frame)
    if message is not None:
        return message <= snapshot.last_id
    version = presence_version(frame)
    if version is not None:
        return version <= snapshot.presence_version
    return None


def in_hub_order(frame: str) -> bool:
    """Whether ``frame`` is one of the hub's (a message or presence frame)."""
    return message_id(frame) is not None or presence_version(frame) is not None
