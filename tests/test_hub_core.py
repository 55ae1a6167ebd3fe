"""The hub's state, in-process: total order, mailboxes, eviction, wake-ups."""

from __future__ import annotations

import json
import threading
import time

from trio_chat.hub.core import HubCore, Sequencer
from trio_chat.protocol import ChatMessage, encode_chat_body

JOIN_TIMEOUT_SECONDS = 5.0


def body(text: str) -> str:
    return encode_chat_body(ChatMessage(sender="ann", message=text))


def ids_and_texts(frames: list[str] | None) -> list[tuple[int, str]]:
    assert frames is not None
    return [(doc["id"], doc["message"]) for doc in map(json.loads, frames)]


def test_sequencer_numbers_from_one_without_gaps() -> None:
    sequencer = Sequencer(clock_ms=lambda: 1234)
    first = sequencer.stamp([body("a"), body("b")])
    second = sequencer.stamp([body("c")])
    docs = [json.loads(frame) for frame in first + second]
    assert [doc["id"] for doc in docs] == [1, 2, 3]
    assert {doc["ts"] for doc in docs} == {1234}
    assert sequencer.last_id == 3


def test_every_mailbox_gets_every_frame_in_one_order() -> None:
    core = HubCore(mailbox_size=100)
    first, second = core.join("w1"), core.join("w2")
    assert core.publish([body("a"), body("b")]) == 2
    assert core.publish([body("c")]) == 3
    expected = [(1, "a"), (2, "b"), (3, "c")]
    assert ids_and_texts(core.fetch(first, 100)) == expected
    assert ids_and_texts(core.fetch(second, 100)) == expected


def test_fetch_takes_at_most_max_frames() -> None:
    core = HubCore(mailbox_size=100)
    mailbox = core.join("w")
    core.publish([body(str(n)) for n in range(5)])
    assert [i for i, _ in ids_and_texts(core.fetch(mailbox, 2))] == [1, 2]
    assert [i for i, _ in ids_and_texts(core.fetch(mailbox, 10))] == [3, 4, 5]


def test_a_mailbox_joined_later_starts_with_later_messages() -> None:
    core = HubCore(mailbox_size=100)
    early = core.join("early")
    core.publish([body("before")])
    late = core.join("late")
    core.publish([body("after")])
    assert ids_and_texts(core.fetch(early, 10)) == [(1, "before"), (2, "after")]
    assert ids_and_texts(core.fetch(late, 10)) == [(2, "after")]


def test_leaving_removes_the_mailbox() -> None:
    core = HubCore(mailbox_size=100)
    mailbox = core.join("w")
    core.publish([body("x")])
    core.leave(mailbox)
    assert core.fetch(mailbox, 10) is None
    assert core.statistics()["mailboxes"] == {}


def test_a_mailbox_that_overflows_is_evicted_and_the_others_go_on() -> None:
    core = HubCore(mailbox_size=3)
    stuck, live = core.join("stuck"), core.join("live")
    for n in range(4):
        core.publish([body(str(n))])
        assert len(ids_and_texts(core.fetch(live, 10))) == 1
    assert core.fetch(stuck, 10) is None
    stats = core.statistics()
    assert stats["evicted"] == 1
    assert list(stats["mailboxes"]) == [live]  # type: ignore[call-overload]


def wait_until_blocked_in_fetch(core: HubCore, mailbox_id: str) -> None:
    """Spin until a thread waits on the mailbox (real threads: a guarded wait on a condition)."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    condition = core._mailboxes[mailbox_id].ready
    while not condition._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "fetch never blocked"
        time.sleep(0.001)


def fetch_in_thread(core: HubCore, mailbox_id: str) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(core.fetch(mailbox_id, 10)))
    thread.start()
    wait_until_blocked_in_fetch(core, mailbox_id)
    return thread, result


def test_a_blocked_fetch_wakes_on_publish() -> None:
    core = HubCore(mailbox_size=10)
    mailbox = core.join("w")
    thread, result = fetch_in_thread(core, mailbox)
    core.publish([body("wake")])
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert ids_and_texts(result[0]) == [(1, "wake")]  # type: ignore[arg-type]


def test_a_blocked_fetch_returns_none_when_the_worker_leaves() -> None:
    core = HubCore(mailbox_size=10)
    mailbox = core.join("w")
    thread, result = fetch_in_thread(core, mailbox)
    core.leave(mailbox)
    thread.join(JOIN_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert result == [None]
