"""Rooms in a real browser (the rooms protocol), and what new users tripped over: presence lines,
fast typing, line breaks, the length limit, right-to-left text, phones and keyboards.

Same rules as test_browser.py (whose module docstring states the page's DOM contract): Chromium
driven by Playwright against ``hypercorn -k trio -w 4`` on a free loopback port, one browser and
one server for the module, a browser context per person, and no fixed sleeps: every wait is on a
condition, with a deadline. Each test works in rooms of its own (named with a token), so that
tests sharing the server do not see each other's messages or presence.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from browser_support import (
    RECONNECT_TIMEOUT_MS,
    ChatPage,
    OpenChat,
    ScriptedServer,
    ServerProcess,
    chat_pages,
    chromium_browser,
    history,
    message,
    presence,
    reconnect,
    routed_through,
    running_server,
    token,
    wait_until,
    welcome,
)

pytestmark = [pytest.mark.e2e, pytest.mark.process]

#: static/presence-lines.js: leaves are held this long, and dropped if the name comes back.
LEFT_HOLD_MS = 5_000
#: static/presence-lines.js: above this many online, no join or leave lines at all.
QUIET_ABOVE = 20
#: The server's default TRIO_CHAT_BURST: more messages than this at once were refused before.
SERVER_BURST = 10
#: The server's default TRIO_CHAT_MAX_MESSAGE_BYTES, and the share where the counter shows.
MAX_MESSAGE_BYTES = 4096
NEAR_SHARE = 0.8
MAX_QUEUED = 50  # static/outbox.js
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
#: Presses of Tab to reach any control of the page, at most.
MAX_TABS = 40


# Fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def server(browser: Browser) -> Iterator[ServerProcess]:
    """The module's server. Depends on ``browser`` so that it is not started just to skip."""
    yield from running_server()


@pytest.fixture
def open_chat(browser: Browser, server: ServerProcess) -> Iterator[OpenChat]:
    """Opens pages on the module's server (options as for ``ChatPage.open``); closes them after
    the test, and checks that none threw or was refused anything by its policy."""
    with chat_pages(browser, server.origin) as open_chat:
        yield open_chat


@pytest.fixture
def scripted(browser: Browser, server: ServerProcess) -> Iterator[tuple[ChatPage, ScriptedServer]]:
    """A page named "ann" whose WebSocket talks to a ScriptedServer that speaks rooms once it
    has sent ``welcome(max_rooms=...)`` (the page itself comes from the real server)."""
    script = ScriptedServer()
    chat = ChatPage.open(browser, server.origin, name="ann", before_load=routed_through(script))
    try:
        expect(chat.status).to_have_attribute("data-state", "online")
        yield chat, script
        assert chat.errors == []
    finally:
        chat.close()


def rooms_of(chat: ChatPage) -> list[str]:
    return [
        button.get_attribute("data-room") or ""
        for button in chat.page.locator("#joined-rooms .room-button").all()
    ]


def joins_sent(chat: ChatPage) -> list[dict[str, Any]]:
    return [frame for frame in chat.sent_frames if frame.get("type") == "join"]


# Rooms


def test_switching_rooms_shows_each_its_own_conversation_and_counts_what_was_missed(
    open_chat: OpenChat,
) -> None:
    tag = token()
    dev, ops = f"dev-{tag}", f"ops-{tag}"
    ann = open_chat(name=f"ann-{tag}")
    bob = open_chat(name=f"bob-{tag}")
    ann.wait_online()
    ann.join_room(dev)
    ann.join_room(ops)
    bob.wait_online()
    bob.join_room(dev)
    assert rooms_of(ann) == ["general", dev, ops]
    expect(ann.room_button(ops)).to_have_attribute("aria-current", "true")

    bob.send(f"in dev {tag}")
    bob.send(f"again in dev {tag}")

    # Shown in dev's log, which is hidden; counted, and the count is part of the room's name.
    expect(ann.message(f"again in dev {tag}", room=dev)).to_have_count(1)
    expect(ann.unread(dev)).to_have_text("2")
    expect(ann.room_button(dev)).to_have_accessible_name(f"#{dev}, 2 unread")
    expect(ann.unread(ops)).to_be_hidden()
    expect(ann.room_log(dev)).to_be_hidden()
    assert ann.texts() == []  # ops, shown, has none of it

    ann.show_room(dev)

    expect(ann.message(f"in dev {tag}")).to_be_visible()
    expect(ann.unread(dev)).to_be_hidden()
    expect(ann.room_button(dev)).to_have_attribute("aria-current", "true")
    expect(ann.room_button(ops)).not_to_have_attribute("aria-current", "true")
    expect(ann.page.locator("#room-title")).to_have_text(f"#{dev}")
    # Presence is the shown room's: ann and bob are in dev.
    users = ann.page.locator("#online-users li")
    expect(users).to_have_text([f"ann-{tag}", f"bob-{tag}"])

    bob.show_room("general")
    bob.send(f"in general {tag}")
    expect(ann.unread("general")).to_have_text("1")
    ann.send(f"answer in dev {tag}")
    expect(bob.unread(dev)).to_have_text("1")
    expect(ann.unread(dev)).to_be_hidden()  # our own messages are never unread


def test_messages_of_one_room_never_show_in_another(open_chat: OpenChat) -> None:
    tag = token()
    rooms = [f"red-{tag}", f"green-{tag}", f"blue-{tag}"]
    ann = open_chat(name=f"ann-{tag}")
    bob = open_chat(name=f"bob-{tag}")
    for chat in (ann, bob):
        chat.wait_online()
        for room in rooms:
            chat.join_room(room)

    said: dict[str, list[str]] = {room: [] for room in rooms}
    for n in range(6):
        room, chat = rooms[n % 3], (ann, bob)[n % 2]
        chat.show_room(room)
        text = f"{room} {n}"
        chat.send(text)
        said[room].append(text)
        expect(chat.message(text)).to_have_count(1)

    for chat in (ann, bob):
        for room in rooms:
            expect(chat.message(said[room][-1], room=room)).to_have_count(1)
            assert chat.texts(room) == said[room], (chat, room)
        assert [t for t in chat.texts("general") if tag in t] == []


def test_a_link_to_a_room_opens_it_and_the_address_follows_the_room_shown(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    tag = token()
    linked, other = f"linked-{tag}", f"other-{tag}"
    chat = open_chat(path=f"/#{linked}")

    chat.wait_in_room(linked)
    assert rooms_of(chat) == ["general", linked]
    expect(chat.room_button(linked)).to_have_attribute("aria-current", "true")
    # It opened in the first room, and asked for the linked one once welcomed.
    assert chat.last_socket_query()["room"] == ["general"]
    assert joins_sent(chat) == [{"type": "join", "room": linked}]

    chat.show_room("general")
    assert urlsplit(chat.page.url).fragment == "general"
    chat.page.go_back()  # the address bar's history follows the rooms shown
    expect(chat.log).to_have_attribute("data-room", linked)

    # The address changes under the page (a link clicked in a message, one typed): it follows.
    chat.page.evaluate("name => { location.hash = name; }", other)
    chat.wait_in_room(other)
    assert rooms_of(chat) == ["general", linked, other]

    # A link to no room is refused, saying why, and changes nothing.
    chat.page.evaluate("() => { location.hash = 'Not A Room'; }")
    expect(chat.page.locator("#error")).to_contain_text("Not A Room")
    expect(chat.page.locator("#error")).to_have_attribute("data-code", "invalid_room")
    assert rooms_of(chat) == ["general", linked, other]
    expect(chat.log).to_have_attribute("data-room", other)


def test_a_reload_rejoins_every_room_and_resumes_each(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    tag = token()
    dev, ops = f"dev-{tag}", f"ops-{tag}"
    ann = open_chat(name=f"ann-{tag}")
    bob = open_chat(name=f"bob-{tag}")
    for chat in (ann, bob):
        chat.wait_online()
        chat.join_room(dev)
        chat.join_room(ops)
    seen = {room: f"seen in {room}" for room in ("general", dev, ops)}
    for room, text in seen.items():
        bob.show_room(room)
        bob.send(text)
        expect(ann.message(text, room=room)).to_have_count(1)
    last_ids = {
        room: ann.message(text, room=room).get_attribute("data-id") for room, text in seen.items()
    }
    ann.show_room(dev)

    # Away (another site in the same tab), while bob talks on; then back.
    ann.page.goto("about:blank")
    missed = {room: f"missed in {room}" for room in (dev, ops)}
    for room, text in missed.items():
        bob.show_room(room)
        bob.send(text)
        expect(bob.message(text)).to_have_count(1)
    ann.page.goto(server.origin + "/")

    ann.wait_in_room(dev)  # the room shown last
    assert rooms_of(ann) == ["general", dev, ops]
    # Each room resumed after the last message seen in it (ids skip within a room: one sequence
    # for the whole server), the first in the URL, the others in join frames.
    query = ann.last_socket_query()
    assert query["room"] == ["general"]
    assert query["since"][0].rpartition(":")[2] == last_ids["general"]
    resumes = {frame["room"]: frame["since"] for frame in joins_sent(ann)[-2:]}
    assert set(resumes) == {dev, ops}
    for room in (dev, ops):
        assert resumes[room].rpartition(":")[2] == last_ids[room]
        expect(ann.room_log(room)).to_have_attribute("data-history", "resumed")
        expect(ann.message(missed[room], room=room)).to_have_count(1)
        # What was shown before comes back from this tab, once; what was missed, from the server.
        assert ann.texts(room) == [seen[room], missed[room]]
    expect(ann.unread(ops)).to_have_text("1")


def test_leaving_a_room_takes_it_off_and_the_last_room_stays(open_chat: OpenChat) -> None:
    tag = token()
    dev = f"dev-{tag}"
    chat = open_chat()
    chat.wait_online()
    chat.join_room(dev)

    chat.room_button(dev).locator("xpath=..").locator(".leave-button").click()

    expect(chat.room_button(dev)).to_have_count(0)
    expect(chat.room_log(dev)).to_have_count(0)
    expect(chat.log).to_have_attribute("data-room", "general")
    wait_until(chat.page, lambda: {"type": "leave", "room": dev} in chat.sent_frames)
    # The page is always in a room: the last one has no Leave button.
    expect(chat.page.locator("#joined-rooms .leave-button")).to_be_hidden()
    chat.page.reload()
    chat.wait_in_room("general")
    assert rooms_of(chat) == ["general"]


def test_the_busiest_rooms_are_listed_and_one_click_joins(open_chat: OpenChat) -> None:
    tag = token()
    busy = f"busy-{tag}"
    for _ in range(2):
        open_chat(path=f"/#{busy}").wait_in_room(busy)
    chat = open_chat()
    chat.wait_online()

    listed = chat.page.locator(f"#busiest-rooms .room-button[data-room={busy!r}]")
    expect(listed).to_contain_text("2 online")
    listed.click()

    chat.wait_in_room(busy)
    assert rooms_of(chat) == ["general", busy]
    # A moment later the list counts us, and marks the room as one we are in.
    expect(listed).to_contain_text("3 online")
    expect(listed).to_have_accessible_name(f"#{busy}, 3 online, joined")
    expect(listed).to_be_focused()  # the list changed around it, not under it


def test_a_room_name_is_checked_before_asking_and_the_reason_shown(open_chat: OpenChat) -> None:
    chat = open_chat()
    chat.wait_online()
    box, hint = chat.page.locator("#join-input"), chat.page.locator("#join-hint")
    joins_before = len(joins_sent(chat))

    for typed, reason in [
        ("Dev", "lower case"),
        ("dev room", "spaces"),
        ("-dev", "starts with a letter or a digit"),
        ("d" * 65, "at most 64"),
    ]:
        box.fill(typed)
        box.press("Enter")
        expect(hint).to_contain_text(reason)
        expect(box).to_have_attribute("aria-invalid", "true")

    assert rooms_of(chat) == ["general"]
    assert len(joins_sent(chat)) == joins_before
    box.fill("#dev-" + token())  # a leading "#" is no part of the name
    box.press("Enter")
    expect(hint).to_be_empty()
    assert len(rooms_of(chat)) == 2


# Presence lines


def test_a_rename_reads_as_a_rename_and_a_quick_reconnect_shows_nothing(
    open_chat: OpenChat,
) -> None:
    tag = token()
    room = f"lobby-{tag}"
    bob = open_chat(name=f"bob-{tag}", path=f"/#{room}")
    bob.wait_in_room(room)
    newcomer = open_chat(path=f"/#{room}")  # under a random name, as everyone arrives
    newcomer.wait_in_room(room)
    random_name = newcomer.page.locator("#name-input").input_value()
    lines = bob.system("presence")
    expect(lines).to_have_text([f"{random_name} joined"])

    newcomer.rename(f"ann-{tag}")

    expect(lines).to_have_text([f"{random_name} joined", f"{random_name} is now ann-{tag}"])
    expect(newcomer.system("rename")).to_have_text([f"You are now ann-{tag}"])
    assert newcomer.system("presence").count() == 0  # our own rename is said once, our way

    # A reload: gone and back within a moment. Then someone really leaves; by the time that is
    # said (it is held as long), the reload's leave would have been.
    newcomer.page.reload()
    newcomer.wait_in_room(room)
    carl = open_chat(name=f"carl-{tag}", path=f"/#{room}")
    carl.wait_in_room(room)
    expect(lines.last).to_have_text(f"carl-{tag} joined")
    carl.close()
    expect(lines.last).to_have_text(f"carl-{tag} left", timeout=LEFT_HOLD_MS + 10_000)
    assert lines.all_text_contents() == [
        f"{random_name} joined",
        f"{random_name} is now ann-{tag}",
        f"carl-{tag} joined",
        f"carl-{tag} left",
    ]


def test_scripted_busy_room_shows_the_count_and_no_comings_and_goings(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    crowd = [f"user-{n:02}" for n in range(QUIET_ABOVE + 5)]
    script.send(welcome(max_rooms=32), history(room="general"), presence(crowd, room="general"))
    expect(chat.page.locator("#online-count")).to_have_text(f"{len(crowd) + 1} online")

    script.send(presence([*crowd, "zed"], joined=("zed",), room="general"))
    script.send(presence(crowd[1:], left=(crowd[0], "zed"), room="general"))
    # Then, in a small room (one the server put us in), a join is said: by then the busy room's
    # frames have been read.
    script.send(
        history(room="small"),
        presence(["ann"], room="small"),
        presence(["ann", "zoe"], joined=("zoe",), room="small"),
    )

    expect(chat.room_log("small").locator(".system[data-kind=presence]")).to_have_text(
        ["zoe joined"]
    )
    expect(chat.page.locator("#online-count")).to_have_text(f"{len(crowd)} online")
    assert chat.system("presence").count() == 0


# Sending


def test_fifteen_messages_typed_quickly_all_arrive_in_order(open_chat: OpenChat) -> None:
    """The server takes a burst of 10 and then refuses; the page queues what is typed and sends
    it at a pace the server takes, so that nothing typed is lost."""
    tag = token()
    room = f"fast-{tag}"
    ann = open_chat(path=f"/#{room}")
    bob = open_chat(path=f"/#{room}")
    ann.wait_in_room(room)
    bob.wait_in_room(room)
    typed = [f"quick {n} {tag}" for n in range(SERVER_BURST + 5)]

    for text in typed:
        ann.send(text)

    for chat in (ann, bob):
        expect(chat.message(typed[-1])).to_have_count(1)
        assert chat.texts() == typed
    expect(ann.page.locator("#error")).to_be_empty()
    expect(ann.page.locator("#queue-status")).to_be_empty()
    assert not [f for f in ann.sent_frames if f.get("type") == "message" and f["room"] != room]


def test_shift_enter_makes_a_two_line_message(open_chat: OpenChat) -> None:
    tag = token()
    ann = open_chat()
    bob = open_chat()
    ann.wait_online()
    bob.wait_online()
    box = ann.page.get_by_label("Message", exact=True)

    box.focus()
    ann.page.keyboard.type(f"first line {tag}")
    ann.page.keyboard.press("Shift+Enter")
    ann.page.keyboard.type("second line")
    expect(box).to_have_value(f"first line {tag}\nsecond line")
    ann.page.keyboard.press("Enter")

    text = f"first line {tag}\nsecond line"
    for chat in (ann, bob):
        shown = chat.message(text).locator(".text")
        expect(shown).to_have_count(1)
        assert shown.evaluate("el => getComputedStyle(el).whiteSpace") == "pre-wrap"
        lines = shown.evaluate("el => el.getClientRects().length && el.innerText.split('\\n')")
        assert lines == [f"first line {tag}", "second line"]
    expect(box).to_have_value("")


def test_the_length_counter_warns_near_the_limit_and_send_is_off_past_it(
    open_chat: OpenChat,
) -> None:
    chat = open_chat()
    chat.wait_online()
    box = chat.page.locator("#message-input")
    counter = chat.page.locator("#message-counter")
    send = chat.page.locator("#send-button")
    near_chars = int(0.9 * MAX_MESSAGE_BYTES) // 2  # past NEAR_SHARE, in two-byte characters

    box.fill("short")
    expect(counter).to_have_attribute("data-state", "ok")
    expect(counter).to_be_empty()

    box.fill("é" * near_chars)  # bytes are what counts
    assert 2 * near_chars >= NEAR_SHARE * MAX_MESSAGE_BYTES > near_chars
    expect(counter).to_have_attribute("data-state", "near")
    expect(counter).to_have_text(f"{2 * near_chars} / {MAX_MESSAGE_BYTES} bytes")
    expect(send).to_be_enabled()

    box.fill("x" * MAX_MESSAGE_BYTES)
    box.press("End")
    box.press("x")  # one more, typed
    expect(counter).to_have_attribute("data-state", "over")
    expect(counter).to_have_text(f"{MAX_MESSAGE_BYTES + 1} / {MAX_MESSAGE_BYTES} bytes")
    expect(send).to_be_disabled()
    expect(chat.page.locator("#length-status")).to_have_text("The message is too long to send.")

    box.press("Backspace")
    expect(counter).to_have_attribute("data-state", "near")
    expect(send).to_be_enabled()


def test_scripted_rate_limited_message_is_sent_again_in_its_place(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    chat.wait_online()
    slow_down = {"type": "error", "code": "rate_limited", "message": "Too many messages."}

    chat.send("one")
    wait_until(chat.page, lambda: messages_sent(script) == ["one"])
    chat.send("two")  # typed while "one" is out: it waits its turn
    script.send(slow_down)

    wait_until(chat.page, lambda: messages_sent(script) == ["one", "one"])
    script.send(message(1, "ann", "one", room="general"))
    wait_until(chat.page, lambda: messages_sent(script) == ["one", "one", "two"])
    script.send(message(2, "ann", "two", room="general"))
    expect(chat.messages).to_have_count(2)
    assert chat.texts() == ["one", "two"]
    expect(chat.page.locator("#error")).to_be_empty()  # the page's doing, not the person's


def test_scripted_a_message_to_a_room_the_server_says_we_are_not_in_goes_back(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    chat.wait_online()

    chat.send("hello?")
    wait_until(chat.page, lambda: messages_sent(script) == ["hello?"])
    script.send({"type": "error", "code": "not_joined", "message": "No.", "room": "general"})

    error = chat.page.locator("#error")
    expect(error).to_have_attribute("data-code", "not_joined")
    expect(error).to_contain_text("#general")
    expect(chat.page.locator("#message-input")).to_have_value("hello?")


def messages_sent(script: ScriptedServer) -> list[str]:
    return [frame["message"] for frame in script.received if frame.get("type") == "message"]


def test_scripted_messages_typed_past_the_queue_stay_in_the_box(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    chat.wait_online()
    box = chat.page.locator("#message-input")

    # The server never answers: every message waits for the first to come back.
    for n in range(MAX_QUEUED):
        chat.send(f"waiting {n}")
    expect(chat.page.locator("#queue-status")).to_have_text(f"Sending {MAX_QUEUED} messages…")
    chat.send("one too many")

    expect(chat.page.locator("#error")).to_have_attribute("data-code", "queue_full")
    expect(box).to_have_value("one too many")
    assert messages_sent(script) == ["waiting 0"]


# Text


def test_message_text_and_names_take_their_direction_from_their_content(
    open_chat: OpenChat,
) -> None:
    tag = token()
    hebrew = f"שלום לכולם {tag}"
    arabic_name = f"سارة-{tag}"
    sender = open_chat(name=arabic_name)
    reader = open_chat()
    sender.wait_online()
    reader.wait_online()

    sender.send(hebrew)
    sender.send(f"plain English {tag}")

    rtl = reader.message(hebrew)
    expect(rtl).to_have_count(1)
    for part in (rtl.locator(".text"), rtl.locator(".sender")):
        expect(part).to_have_attribute("dir", "auto")
        assert part.evaluate("el => el.matches(':dir(rtl)')")
    ltr = reader.message(f"plain English {tag}").locator(".text")
    expect(ltr).to_have_attribute("dir", "auto")
    assert ltr.evaluate("el => el.matches(':dir(ltr)')")


def test_the_worker_is_not_shown_to_people(open_chat: OpenChat) -> None:
    chat = open_chat()
    worker = chat.wait_online()

    visible = chat.page.locator("body").inner_text()
    assert str(worker) not in visible
    assert "worker" not in visible.lower()
    assert chat.status.get_attribute("title") in (None, "")
    expect(chat.system("welcome").last).to_have_text("Connected")


# Phones and keyboards


def test_on_a_phone_the_room_list_folds_behind_a_button(open_chat: OpenChat) -> None:
    tag = token()
    dev = f"dev-{tag}"
    chat = open_chat(**PHONE)
    chat.wait_online()
    panel, toggle = chat.page.locator("#room-panel"), chat.page.locator("#rooms-toggle")
    expect(panel).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    toggle.click()

    expect(panel).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    box = panel.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, box
    chat.join_room(dev)  # choosing a room puts the list away, and the message box is next
    expect(panel).to_be_hidden()
    expect(chat.page.locator("#message-input")).to_be_focused()

    other = open_chat(path=f"/#{dev}")
    other.wait_in_room(dev)
    other.show_room("general")
    other.send(f"for the phone {tag}")
    expect(toggle.locator(".unread-badge")).to_have_text("1")  # a room has news
    toggle.click()
    chat.show_room("general")
    expect(chat.message(f"for the phone {tag}")).to_be_in_viewport()
    expect(panel).to_be_hidden()
    assert chat.page.evaluate("() => document.scrollingElement.scrollWidth") <= 360


def test_rooms_can_be_switched_with_the_keyboard_alone(open_chat: OpenChat) -> None:
    tag = token()
    dev = f"dev-{tag}"
    chat = open_chat()
    chat.wait_online()
    chat.join_room(dev)
    keyboard = chat.page.keyboard
    chat.page.evaluate("() => document.activeElement.blur()")  # from the top of the page

    general = tab_to(chat.page, chat.room_button("general"))
    outline = general.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none", "the focus is not visible"
    keyboard.press("Enter")
    expect(chat.log).to_have_attribute("data-room", "general")
    expect(general).to_be_focused()  # the focus stays in the list

    tab_to(chat.page, chat.room_button(dev))
    keyboard.press("Space")
    expect(chat.log).to_have_attribute("data-room", dev)
    expect(chat.room_button(dev)).to_have_attribute("aria-current", "true")

    # On to the message box, and say something there, all from the keyboard.
    tab_to(chat.page, chat.page.locator("#message-input"))
    keyboard.type(f"typed only {tag}")
    keyboard.press("Enter")
    expect(chat.message(f"typed only {tag}")).to_have_count(1)


def tab_to(page: Page, target: Locator) -> Locator:
    """Press Tab until ``target`` has the focus; returns it."""
    for _ in range(MAX_TABS):
        if target.evaluate("el => el === document.activeElement"):
            return target
        page.keyboard.press("Tab")
    raise AssertionError(f"{MAX_TABS} presses of Tab did not reach {target}")


# The rooms protocol, exactly (a scripted server)


def test_scripted_reconnect_resumes_each_room_after_its_own_last_message(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(
        welcome(max_rooms=32),
        history(message(3, "bob", "three", room="general"), room="general", epoch="e1"),
    )
    box = chat.page.locator("#join-input")
    box.fill("dev")
    box.press("Enter")
    wait_until(chat.page, lambda: {"type": "join", "room": "dev"} in script.received)
    script.send(history(message(5, "cleo", "five", room="dev"), room="dev", epoch="e1"))
    # Ids are one sequence for the server: general's 4 is another room's, 6 is general's next.
    script.send(message(6, "bob", "six", room="general"))
    expect(chat.message("five")).to_have_count(1)
    expect(chat.unread("general")).to_have_text("1")

    reconnect(chat, script)

    assert parse_qs(urlsplit(script.sockets[-1].url).query)["since"] == ["e1:6"]
    script.send(welcome(max_rooms=32))
    wait_until(
        chat.page, lambda: script.received[-1] == {"type": "join", "room": "dev", "since": "e1:5"}
    )
    partial = {"type": "notice", "code": "resume_partial", "message": "...", "room": "dev"}
    script.send(
        {**partial, "first_available": 7},
        history(message(7, "cleo", "seven", room="dev"), room="dev", resumed=True, epoch="e1"),
    )
    expect(chat.message("seven")).to_have_count(1)
    expect(chat.log).to_have_attribute("data-history", "resumed")
    assert chat.texts() == ["five", "seven"]
    # Said in the room it is about, and only there.
    expect(chat.log.locator(".system[data-code=resume_partial]")).to_have_count(1)
    gaps = chat.room_log("general").locator(".system[data-code=resume_partial]")
    expect(gaps).to_have_count(0)


def test_scripted_missed_messages_concern_every_room(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    chat.page.locator("#join-input").fill("dev")
    chat.page.locator("#join-input").press("Enter")
    script.send(history(message(4, "bob", "four", room="dev"), room="dev", epoch="e1"))
    expect(chat.message("four")).to_have_count(1)

    script.send({"type": "notice", "code": "messages_missed", "message": "...", "epoch": "e2"})
    # The new run's ids may repeat the old one's: a repeated id is a new message now.
    script.send(message(4, "dan", "new four", room="dev", ts=1))

    expect(chat.message("new four")).to_have_count(1)
    for room in ("general", "dev"):
        notices = chat.room_log(room).locator(".system[data-code=messages_missed]")
        expect(notices).to_have_count(1)
    reconnect(chat, script)
    assert parse_qs(urlsplit(script.sockets[-1].url).query)["since"] == ["e2:0"]


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("room_limit", "cannot open a new room"),
        ("too_many_rooms", "32 rooms"),
        ("invalid_room", "lower-case letters"),
    ],
)
def test_scripted_a_join_the_server_refuses_is_said_with_its_room(
    scripted: tuple[ChatPage, ScriptedServer], code: str, says: str
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    box = chat.page.locator("#join-input")
    box.fill("new-room")
    box.press("Enter")
    wait_until(chat.page, lambda: {"type": "join", "room": "new-room"} in script.received)
    expect(chat.log).to_have_attribute("data-room", "new-room")

    script.send({"type": "error", "code": code, "message": "No.", "room": "new-room"})

    error = chat.page.locator("#error")
    expect(error).to_have_attribute("data-code", code)
    expect(error).to_contain_text("#new-room")
    expect(error).to_contain_text(says)
    expect(chat.log).to_have_attribute("data-room", "general")
    assert rooms_of(chat) == ["general"]


def test_scripted_a_join_refused_for_want_of_the_hub_is_tried_again(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(max_rooms=32), history(room="general", epoch="e1"))
    box = chat.page.locator("#join-input")
    box.fill("dev")
    box.press("Enter")
    wait_until(chat.page, lambda: {"type": "join", "room": "dev"} in script.received)

    script.send({"type": "error", "code": "hub_unavailable", "message": "...", "room": "dev"})

    expect(chat.system("notice")).to_contain_text("trying again")
    wait_until(
        chat.page,
        lambda: script.received.count({"type": "join", "room": "dev"}) == 2,
        timeout=RECONNECT_TIMEOUT_MS,
    )
    script.send(history(message(1, "bob", "at last", room="dev"), room="dev", epoch="e1"))
    expect(chat.message("at last")).to_have_count(1)
    assert rooms_of(chat) == ["general", "dev"]


# The page's modules alone


def test_room_names_follow_the_protocols_rule(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.origin + "/static/texts.js")
        checked = page.evaluate(
            """async (names) => {
              const { isRoomName, roomNameProblem } = await import('/static/room-names.js');
              return names.map((name) => [isRoomName(name), roomNameProblem(name) === '']);
            }""",
            ["general", "a", "0-day", "dev_ops", "x" * 64, "", "x" * 65, "_x", "Dev", "dév"],
        )
    finally:
        context.close()
    assert checked == [[True, True]] * 5 + [[False, False]] * 5
