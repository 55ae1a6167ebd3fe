"""Scrollback in a real browser: a room's log loads older messages (``older`` frames) when its
reader scrolls to the top or presses "Load older messages", and keeps the reader's place.

Same rules as test_browser.py (whose module docstring states the page's DOM contract): Chromium
driven by Playwright against ``hypercorn -k trio -w 4`` on a free loopback port, one browser and
one server for the module, a browser context per person, and no fixed sleeps: every wait is on a
condition, with a deadline. The server keeps a short history (HISTORY_SIZE) so that a page opens
on a few messages and pages back through the store for the rest; each test talks in rooms of its
own (named with a token). Messages are said beforehand by a WebSocket client of the test's own.

What these tests add to the DOM contract: ``.room-log`` holds, above the messages of the run of
ids it shows, a ``.log-edge[data-state]`` (static/history-edge.js): ``idle`` (hidden), ``ready``
and ``failed`` (a "Load older messages" button; ``failed`` says why in ``.edge-note``),
``loading`` (the button, ``aria-disabled``), ``complete`` ("Beginning of the conversation"),
``full`` (the log holds MAX_ENTRIES elements: nothing older is loaded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Locator, expect

from browser_support import (
    ChatPage,
    OpenChat,
    ScriptedServer,
    ServerProcess,
    chat_pages,
    chromium_browser,
    history,
    message,
    reconnect,
    routed_through,
    running_server,
    token,
    wait_until,
    welcome,
)
from wsclient import open_websocket

pytestmark = [pytest.mark.e2e, pytest.mark.process]

#: The server's TRIO_CHAT_HISTORY_SIZE here: what a join shows before any scrolling.
HISTORY_SIZE = 20
OLDER_PAGE = 50  # static/scrollback.js: messages asked for at once
MAX_ENTRIES = 1000  # static/message-log.js: elements in a room's log, its edge included
#: Said in the long room: HISTORY_SIZE on joining, then pages of 50, 50 and the last 10.
LONG_ROOM_MESSAGES = 130
#: How far a message may move on screen while older ones come in above it (rounding).
PLACE_TOLERANCE_PX = 2
PUBLISH_TIMEOUT_SECONDS = 30.0

#: Scrolls a log to its top and says where its first message is: its id, and how far below the
#: top of the log it is. One task, so that no older message can have come in meanwhile.
SCROLL_TO_TOP = """log => {
  log.scrollTop = 0;
  const first = log.querySelector('.message');
  return [first.dataset.id, first.getBoundingClientRect().top - log.getBoundingClientRect().top];
}"""
#: Scrolls a log to its top, and waits until the page has seen it (its scroll listeners ran,
#: and a frame went by). The log must not be at its top already.
SCROLL_TO_TOP_AND_SETTLE = """log => new Promise((resolve) => {
  log.addEventListener('scroll', () => requestAnimationFrame(() => resolve()), { once: true });
  log.scrollTop = 0;
})"""
#: How far below the top of a log its message with id ``id`` is.
OFFSET_OF = """(log, id) => {
  const node = log.querySelector(`.message[data-id="${id}"]`);
  return node.getBoundingClientRect().top - log.getBoundingClientRect().top;
}"""


# Fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def server(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server: a short history, no rate limit (the test's own client says many
    messages at once), and a message store of its own."""
    data_dir = tmp_path_factory.mktemp("store")
    env = {
        "TRIO_CHAT_HISTORY_SIZE": str(HISTORY_SIZE),
        "TRIO_CHAT_RATE": "0",
        "TRIO_CHAT_DATA_DIR": str(data_dir),
    }
    yield from running_server(env=env)


@pytest.fixture
def open_chat(browser: Browser, server: ServerProcess) -> Iterator[OpenChat]:
    """Opens pages on the module's server (options as for ``ChatPage.open``); closes them after
    the test, and checks that none threw or logged an error."""
    with chat_pages(browser, server.origin) as open_chat:
        yield open_chat


@pytest.fixture
def scripted(browser: Browser, server: ServerProcess) -> Iterator[tuple[ChatPage, ScriptedServer]]:
    """A page named "ann" whose WebSocket talks to a ScriptedServer (the page itself comes from
    the real server)."""
    script = ScriptedServer()
    chat = ChatPage.open(browser, server.origin, name="ann", before_load=routed_through(script))
    try:
        expect(chat.status).to_have_attribute("data-state", "online")
        yield chat, script
        assert chat.errors == []
    finally:
        chat.close()


# Helpers


def publish(server: ServerProcess, room: str, texts: list[str], sender: str = "bob") -> None:
    """Say ``texts`` in ``room``, in order, through a WebSocket client of the test's own; back
    once the last one came back to it (so every one is stored)."""

    async def say() -> None:
        with trio.fail_after(PUBLISH_TIMEOUT_SECONDS):
            async with open_websocket(server.port, f"/chat?room={room}") as client:
                await client.read_opening()
                for text in texts:
                    await client.send(sender, text, room=room)
                while (await client.receive(presence=False)).get("message") != texts[-1]:
                    pass

    trio.run(say)


def edge_of(log: Locator) -> Locator:
    return log.locator(".log-edge")


def older_sent(chat: ChatPage) -> list[dict[str, Any]]:
    return [frame for frame in chat.sent_frames if frame.get("type") == "older"]


def sent_older_frames(chat: ChatPage, count: int) -> Callable[[], bool]:
    """For ``wait_until``: whether the page has sent ``count`` older frames (or more)."""
    return lambda: len(older_sent(chat)) >= count


def ids_shown(log: Locator) -> list[int]:
    return [
        int(id) for id in log.locator(".message").evaluate_all("ms => ms.map(m => m.dataset.id)")
    ]


# Against the real server


def test_scrolling_to_the_top_loads_every_older_message_once_in_order_and_keeps_the_place(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    tag = token()
    room = f"long-{tag}"
    said = [f"message {n}" for n in range(1, LONG_ROOM_MESSAGES + 1)]
    publish(server, room, said)

    chat = open_chat(name=f"ann-{tag}", path=f"/#{room}")
    chat.wait_in_room(room)

    expect(chat.messages).to_have_count(HISTORY_SIZE)
    assert chat.texts() == said[-HISTORY_SIZE:]
    edge = edge_of(chat.log)
    expect(edge).to_have_attribute("data-state", "ready")
    expect(edge.get_by_role("button", name="Load older messages")).to_be_visible()
    assert older_sent(chat) == []  # nothing is asked before the reader goes up

    shown, loads = HISTORY_SIZE, 0
    while shown < LONG_ROOM_MESSAGES:
        oldest = min(ids_shown(chat.log))
        top_id, top_offset = chat.log.evaluate(SCROLL_TO_TOP)

        shown = min(LONG_ROOM_MESSAGES, shown + OLDER_PAGE)
        loads += 1
        expect(chat.messages).to_have_count(shown)
        # Asked once, for what is older than the oldest shown.
        wait_until(chat.page, sent_older_frames(chat, loads))
        assert len(older_sent(chat)) == loads
        assert older_sent(chat)[-1] == {
            "type": "older",
            "room": room,
            "before": oldest,
            "limit": OLDER_PAGE,
        }
        # What the reader was looking at stayed where it was; the new ones are above it.
        assert int(top_id) == oldest
        assert abs(chat.log.evaluate(OFFSET_OF, top_id) - top_offset) <= PLACE_TOLERANCE_PX
        expect(chat.log.locator(f'.message[data-id="{top_id}"]')).to_be_in_viewport()
        assert chat.log.evaluate("log => log.scrollTop") > 0

    expect(edge).to_have_attribute("data-state", "complete")
    expect(edge.locator(".edge-note")).to_have_text("Beginning of the conversation")
    expect(edge.get_by_role("button")).to_be_hidden()
    # Every message once, in order, and older ones marked as sent before this connection.
    assert chat.texts() == said
    ids = ids_shown(chat.log)
    assert ids == sorted(set(ids))
    expect(chat.message("message 1")).to_have_class(re.compile(r"\bhistory\b"))
    assert loads == 3

    # Nothing more is asked; back at the bottom, live messages show as ever.
    chat.log.evaluate(SCROLL_TO_TOP_AND_SETTLE)
    expect(edge).to_have_attribute("data-state", "complete")
    chat.log.evaluate("log => { log.scrollTop = log.scrollHeight; }")
    live = f"live {tag}"
    publish(server, room, [live])
    expect(chat.message(live)).to_be_in_viewport()
    assert chat.texts() == [*said, live]
    assert len(older_sent(chat)) == loads


def test_a_second_room_pages_back_from_the_keyboard(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    tag = token()
    second = f"second-{tag}"
    said = [f"{second} says {n}" for n in range(1, HISTORY_SIZE + OLDER_PAGE + 1)]
    publish(server, second, said)
    chat = open_chat(name=f"ann-{tag}")
    chat.wait_in_room("general")
    chat.join_room(second)  # a join frame on the connection opened in general
    expect(chat.messages).to_have_count(HISTORY_SIZE)

    button = edge_of(chat.log).get_by_role("button", name="Load older messages")
    button.focus()
    chat.page.keyboard.press("Enter")

    expect(chat.messages).to_have_count(len(said))
    assert chat.texts() == said
    # One page held the rest: the server said so, and the focus stayed in the log.
    expect(edge_of(chat.log)).to_have_attribute("data-state", "complete")
    expect(chat.log).to_be_focused()
    [asked] = older_sent(chat)
    assert asked["room"] == second
    assert [text for text in chat.texts("general") if tag in text] == []


def test_a_room_whose_history_holds_its_first_message_shows_the_beginning_at_once(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    tag = token()
    room = f"short-{tag}"
    said = [f"{room} says {n}" for n in range(1, HISTORY_SIZE)]
    publish(server, room, said)

    chat = open_chat(name=f"ann-{tag}", path=f"/#{room}")
    chat.wait_in_room(room)

    expect(chat.messages).to_have_count(len(said))
    # The history frame said nothing older is kept: no button, and nothing asked.
    edge = edge_of(chat.log)
    expect(edge).to_have_attribute("data-state", "complete")
    expect(edge.get_by_role("button")).to_be_hidden()
    assert older_sent(chat) == []


# Against a scripted server: errors, the bound, and a new run of ids


def test_scripted_hub_unavailable_lets_the_reader_try_again(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(
        welcome(max_rooms=32),
        history(
            *(message(id, "bob", f"m {id}") for id in range(100, 120)), room="general", epoch="e1"
        ),
    )
    edge = edge_of(chat.log)
    button = edge.get_by_role("button", name="Load older messages")
    button.click()

    wait_until(chat.page, lambda: older_asked(script) == [(100, 50)])
    expect(edge).to_have_attribute("data-state", "loading")
    loading = edge.get_by_role("button", name="Loading older messages…")
    expect(loading).to_have_attribute("aria-disabled", "true")
    loading.dispatch_event("click")  # one request at a time
    script.send(
        {
            "type": "error",
            "code": "hub_unavailable",
            "message": "Older messages cannot be fetched right now.",
            "room": "general",
        }
    )

    expect(edge).to_have_attribute("data-state", "failed")
    expect(edge.locator(".edge-note")).to_contain_text("temporarily unavailable")
    expect(button).not_to_have_attribute("aria-disabled", "true")
    expect(chat.page.locator("#error")).to_be_empty()  # not about anything the person sent
    assert older_asked(script) == [(100, 50)]

    button.click()
    wait_until(chat.page, lambda: older_asked(script) == [(100, 50)] * 2)
    script.send(older("general", range(90, 100), complete=True))

    expect(edge).to_have_attribute("data-state", "complete")
    assert chat.texts() == [f"m {id}" for id in range(90, 120)]


def test_scripted_a_full_log_stops_loading_and_live_messages_still_show(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    first, last = 1001, 1995  # with the edge, "Connected" and the divider: 998 elements
    script.send(
        welcome(max_rooms=32),
        history(*(message(id, "bob", f"m {id}") for id in range(first, last + 1)), room="general"),
    )
    expect(chat.messages).to_have_count(last - first + 1)
    edge = edge_of(chat.log)

    chat.log.evaluate(SCROLL_TO_TOP)
    wait_until(chat.page, lambda: older_asked(script) == [(first, 2)])  # the room left
    script.send(older("general", range(first - 2, first), complete=False))

    expect(edge).to_have_attribute("data-state", "full")
    expect(edge.locator(".edge-note")).to_contain_text(f"latest {MAX_ENTRIES} lines")
    expect(chat.log.locator("> *")).to_have_count(MAX_ENTRIES)
    expect(chat.message(f"m {first - 2}")).to_have_count(1)

    # The newest are never dropped for older ones: a live one comes in, the oldest goes.
    script.send(message(last + 1, "bob", "live"))
    chat.log.evaluate("log => { log.scrollTop = log.scrollHeight; }")
    expect(chat.message("live")).to_be_in_viewport()
    expect(chat.log.locator("> *")).to_have_count(MAX_ENTRIES)
    chat.log.evaluate(SCROLL_TO_TOP_AND_SETTLE)
    expect(edge).to_have_attribute("data-state", "full")  # and not "loading"
    assert older_asked(script) == [(first, 2)]


@pytest.mark.parametrize("first_new", [5, 50], ids=["ids-below-the-old", "ids-above-the-old"])
def test_scripted_a_history_of_a_new_run_of_ids_pages_back_from_its_own_messages(
    scripted: tuple[ChatPage, ScriptedServer], first_new: int
) -> None:
    chat, script = scripted
    script.send(
        welcome(max_rooms=32),
        history(
            message(10, "bob", "old ten"),
            message(11, "bob", "old eleven"),
            room="general",
            epoch="e1",
        ),
    )
    expect(chat.messages).to_have_count(2)
    reconnect(chat, script)

    # The server lost our place: a run of ids of its own, whose ids tell nothing by their size.
    script.send(
        welcome(max_rooms=32),
        {"type": "error", "code": "invalid_resume", "message": "Unknown epoch.", "room": "general"},
        history(message(first_new, "dan", "newest"), room="general", epoch="e2"),
    )
    expect(chat.message("newest")).to_have_count(1)
    edge_of(chat.log).get_by_role("button", name="Load older messages").click()

    wait_until(chat.page, lambda: older_asked(script) == [(first_new, 50)])
    earlier = [first_new - 2, first_new - 1]
    script.send(older("general", earlier, complete=True, sender="dan"))
    expect(chat.messages).to_have_count(5)
    # What was shown before stays, above the new run, whose older messages go below it.
    assert chat.texts() == ["old ten", "old eleven", *(f"m {id}" for id in earlier), "newest"]
    expect(edge_of(chat.log)).to_have_attribute("data-state", "complete")


def test_scripted_a_resume_carries_on_from_the_oldest_message_loaded(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    """Requests do not outlive their connection; a resume of the same run of ids keeps what was
    loaded, and the next page is asked from there."""
    chat, script = scripted
    script.send(
        welcome(max_rooms=32),
        history(
            *(message(id, "bob", f"m {id}") for id in range(60, 80)), room="general", epoch="e1"
        ),
    )
    button = edge_of(chat.log).get_by_role("button", name="Load older messages")
    button.click()
    wait_until(chat.page, lambda: older_asked(script) == [(60, 50)])
    script.send(older("general", range(40, 60), complete=False))
    expect(chat.messages).to_have_count(40)
    button.click()
    wait_until(chat.page, lambda: older_asked(script) == [(60, 50), (40, 50)])

    reconnect(chat, script)  # that request is lost with its connection
    expect(edge_of(chat.log)).to_be_hidden()  # nothing is asked while not in the room
    script.send(
        welcome(max_rooms=32),
        history(message(80, "bob", "m 80"), resumed=True, room="general", epoch="e1"),
    )
    expect(chat.message("m 80")).to_have_count(1)
    button.click()

    wait_until(chat.page, lambda: older_asked(script)[-1] == (40, 50))
    script.send(older("general", range(1, 40), complete=True))
    expect(edge_of(chat.log)).to_have_attribute("data-state", "complete")
    assert chat.texts() == [f"m {id}" for id in range(1, 81)]
    assert len(older_asked(script)) == 3


def test_scripted_a_server_without_scrollback_is_asked_once(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(
        welcome(max_rooms=32), history(message(7, "bob", "seven"), room="general", epoch="e1")
    )
    edge = edge_of(chat.log)
    edge.get_by_role("button", name="Load older messages").click()
    wait_until(chat.page, lambda: older_asked(script) == [(7, 50)])

    script.send({"type": "error", "code": "unknown_type", "message": "Unknown frame type older."})

    expect(edge).to_be_hidden()
    expect(chat.page.locator("#error")).to_be_empty()


def older_asked(script: ScriptedServer) -> list[tuple[int, int]]:
    """The ``older`` frames the page sent: (before, limit) of each."""
    return [
        (frame["before"], frame["limit"])
        for frame in script.received
        if frame.get("type") == "older"
    ]


def older(room: str, ids: range | list[int], complete: bool, sender: str = "bob") -> dict[str, Any]:
    """An ``older`` frame of ``room`` with a message "m <id>" for each of ``ids``."""
    messages = [message(id, sender, f"m {id}", room=room) for id in ids]
    return {"type": "older", "room": room, "complete": complete, "messages": messages}
