"""catch_up.py: which live frames of a room a joining client's snapshot already covers.

Sans I/O: a ``CatchUp`` is given a settled join, then batches, as a session's writer does.
"""

from __future__ import annotations

from trio_chat.catch_up import CatchUp
from trio_chat.fanout import PendingJoin
from trio_chat.hub_link import Snapshot
from trio_chat.protocol import (
    ChatMessage,
    NoticeCode,
    encode_chat_body,
    notice_frame,
    presence_frame,
    stamp_chat_frame,
)

ROOM = "general"


def message(message_id: int, room: str = ROOM) -> str:
    return stamp_chat_frame(message_id, 0, encode_chat_body(room, ChatMessage("ann", "hi")))


def presence(version: int, room: str = ROOM) -> str:
    return presence_frame(room, version, 1, ["ann"], [], [])


async def caught_up_to(last_id: int, presence_version: int) -> CatchUp:
    """A CatchUp whose client joined ``ROOM`` with a snapshot as of ``last_id``."""
    snapshot = Snapshot(ROOM, [], last_id, 1, presence(presence_version), presence_version)
    join = PendingJoin(ROOM)
    join.settle([], snapshot)
    catch_up = CatchUp()
    await catch_up.frames_of(join)
    return catch_up


async def test_frames_the_snapshot_covers_are_dropped_until_a_newer_message() -> None:
    catch_up = await caught_up_to(last_id=5, presence_version=3)

    assert catch_up.filter([message(4), presence(3), message(6), message(7)]) == [
        message(6),
        message(7),
    ]
    assert catch_up.filter([message(2)]) == [message(2)]  # Caught up: no more checks.


async def test_a_newer_presence_frame_does_not_end_the_catching_up() -> None:
    """A re-joined worker may be given again messages its client had in the snapshot (it had
    not delivered them yet): after a newer presence frame, they are still dropped."""
    catch_up = await caught_up_to(last_id=5, presence_version=3)

    assert catch_up.filter([presence(4)]) == [presence(4)]
    assert catch_up.filter([message(4), message(5), presence(2), message(6)]) == [message(6)]


async def test_messages_missed_ends_the_catching_up() -> None:
    catch_up = await caught_up_to(last_id=5, presence_version=3)
    missed = notice_frame(NoticeCode.MESSAGES_MISSED, "...", epoch="next")

    assert catch_up.filter([missed, message(1), presence(1)]) == [missed, message(1), presence(1)]


async def test_other_rooms_pass_untouched() -> None:
    catch_up = await caught_up_to(last_id=5, presence_version=3)

    assert catch_up.filter([message(2, "side"), presence(1, "side")]) == [
        message(2, "side"),
        presence(1, "side"),
    ]
