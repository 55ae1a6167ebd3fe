"""The page in a real browser: Chromium driven by Playwright against ``hypercorn -k trio -w 4``.

Rules: a free loopback port; one browser and one server for the module (the screenshot gets a
server of its own, with nothing said before it); a browser context per person; no fixed sleeps:
Playwright's ``expect`` waits for what the page shows, with a timeout. Synchronous on purpose
(see browser_support.py). Skipped, saying how to install it, where Chromium is missing. Rooms
have tests of their own: test_browser_rooms.py.

The page's DOM contract, which these tests rely on:

- ``#status[data-state]``: ``connecting``, ``online`` or ``offline``; ``data-worker``: the pid
  of the worker holding the connection, while online (an attribute only: people are not shown
  it); while offline, ``#status-detail`` counts down to the next attempt ("retrying in N s") and
  ``#retry-button`` skips the wait.
- ``#messages`` holds one ``.room-log[data-room]`` (``role=log``, labelled "Messages in
  #room") per room joined; only the shown room's is visible (the others are ``hidden``).
  ``data-history``: ``fresh`` or ``resumed``, the kind of the room's last history frame
  (absent if none). Its first child is ``.log-edge[data-state]``, the top of the scrollback:
  ``idle`` (hidden), ``ready`` (a "Load older messages" button; scrolling to the top does
  the same), ``loading``, ``failed`` (the button again, the reason beside it), ``complete``
  ("Beginning of the conversation"), ``full`` (the log holds as many lines as it keeps).
- ``.message[data-id][data-sender]`` holding ``.sender``, ``time.time`` and ``.text`` (both
  ``dir=auto``); class ``own`` for this tab's name, ``history`` for messages sent before this
  connection.
- ``.system[data-kind]``: ``welcome`` ("Connected"), ``history`` (the "Earlier messages" /
  "While you were away" divider), ``presence`` ("bob joined", "ann is now bob", "bob left",
  held a few seconds), ``rename`` (our own: "You are now bob"), ``notice`` (with the server's
  ``data-code``), ``disconnect``.
- ``#online-count`` ("N online" in the shown room; "—" and hidden while unknown),
  ``#online-users li`` (class ``own`` for our name).
- ``#error[data-code]``: the last error for the sender: the server's error code, ``offline``
  (sent while not connected), ``unsent`` (the connection dropped before a message came back,
  and the page cannot tell whether it arrived), ``queue_full``; ``#name-input`` (``maxlength``:
  the server's name limit, from its welcome frame), ``#message-input`` (a textarea: Enter
  sends, Shift+Enter starts a new line), ``#message-counter[data-state]`` (``ok``, ``near``,
  ``over`` the server's message limit), ``#send-button``.
- The room list: ``#joined-rooms .room-button[data-room]`` (``aria-current`` on the shown
  one; ``.unread-badge`` its unread count), ``.leave-button``; ``#join-input`` in
  ``#join-form``, ``#join-hint`` (why a name is refused); ``#busiest-rooms``;
  ``#rooms-toggle`` folds the list at narrow widths.

Some tests import the page's modules into a document of their own (``module_page``) to drive
one module alone, with a stand-in for what it talks to.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Response, expect

from browser_support import (
    RECONNECT_TIMEOUT_MS,
    T0,
    ChatPage,
    FlakyLink,
    HandshakeLog,
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
from servers import ROOT
from wsclient import CHROMIUM_EXTENSION_OFFER

pytestmark = [pytest.mark.e2e, pytest.mark.process]

ARTIFACTS = ROOT / "test-artifacts"
#: The README's picture, retaken by test_screenshot_of_a_conversation when this variable is 1.
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"
REFRESH_SCREENSHOT_VARIABLE = "TRIO_CHAT_REFRESH_SCREENSHOT"
WORKER_ATTEMPTS = 16  # contexts to open, at most, to find a second worker
HOSTILE_TEXTS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "W" * 2000,
]
BATCH = "trio-chat.batch"
# The page's reconnect schedule (static/chat-connection.js): 0.5 s doubling to 10 s, ±20 %.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
BACKOFF_JITTER = 0.2
STABLE_AFTER_SECONDS = 5.0  # open this long, a connection resets the backoff
#: Failed attempts watched in the backoff test (the last wait is 4 s).
BACKOFF_STEPS = 4
#: The page's own check of a message's size: the server's default TRIO_CHAT_MAX_MESSAGE_BYTES.
MAX_MESSAGE_BYTES = 4096
#: The limit of small_limit_server, well under the page's own check.
SMALL_LIMIT_BYTES = 100
#: The server's default TRIO_CHAT_MAX_SENDER_CHARS, which the page keeps to until told.
MAX_SENDER_CHARS = 64
#: The name limit of short_name_server.
SHORT_NAME_CHARS = 10
MAX_ENTRIES = 1000  # static/message-log.js; the top of the scrollback counts as one.


# Fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def server(browser: Browser) -> Iterator[ServerProcess]:
    """The module's server. Depends on ``browser`` so that it is not started just to skip."""
    yield from running_server()


@pytest.fixture
def fresh_server(browser: Browser) -> Iterator[ServerProcess]:
    """A server of the test's own, for a conversation with nothing before it."""
    yield from running_server()


@pytest.fixture
def small_limit_server(browser: Browser) -> Iterator[ServerProcess]:
    """A server that refuses messages over SMALL_LIMIT_BYTES (its welcome frame says so)."""
    yield from running_server(
        workers=1, env={"TRIO_CHAT_MAX_MESSAGE_BYTES": str(SMALL_LIMIT_BYTES)}
    )


@pytest.fixture
def short_name_server(browser: Browser) -> Iterator[ServerProcess]:
    """A server that refuses names over SHORT_NAME_CHARS (its welcome frame says so)."""
    yield from running_server(workers=1, env={"TRIO_CHAT_MAX_SENDER_CHARS": str(SHORT_NAME_CHARS)})


@pytest.fixture
def compression_server(browser: Browser) -> Iterator[ServerProcess]:
    """A server that accepts the permessage-deflate browsers offer."""
    yield from running_server(env={"TRIO_CHAT_WEBSOCKET_COMPRESSION": "on"})


@pytest.fixture
def module_page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    """A document of the page's origin (under its Content-Security-Policy) without the app in
    it, for a test to import the page's modules into."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.origin + "/static/texts.js")
        yield page
    finally:
        context.close()


@pytest.fixture
def open_chat(browser: Browser, server: ServerProcess) -> Iterator[OpenChat]:
    """Opens pages on the module's server (options as for ``ChatPage.open``); closes them after
    the test."""
    with chat_pages(browser, server.origin, check_errors=False) as open_chat:
        yield open_chat


def open_on_another_worker(open_chat: OpenChat, worker: int, **options: Any) -> ChatPage:
    """A page whose connection is held by a worker other than ``worker``."""
    for _ in range(WORKER_ATTEMPTS):
        chat = open_chat(**options)
        if chat.wait_online() != worker:
            return chat
        chat.close()
    raise AssertionError(f"{WORKER_ATTEMPTS} pages in a row landed on worker {worker}")


def no_horizontal_overflow(chat: ChatPage) -> None:
    widths = chat.page.evaluate(
        """() => {
            const list = document.querySelector('#messages .room-log:not([hidden])');
            const root = document.scrollingElement;
            return [list.scrollWidth, list.clientWidth, root.scrollWidth, root.clientWidth];
        }"""
    )
    list_scroll, list_client, page_scroll, page_client = widths
    assert list_scroll <= list_client, f"the message list scrolls sideways: {widths}"
    assert page_scroll <= page_client, f"the page scrolls sideways: {widths}"


# The conversation


def test_pages_on_different_workers_see_every_message_in_one_order(open_chat: OpenChat) -> None:
    ann = open_chat(name="ann")
    bob = open_on_another_worker(open_chat, ann.wait_online(), name="bob")
    tag = token()
    sent = [f"{tag} {n}" for n in range(6)]

    for n, text in enumerate(sent):
        (ann if n % 2 == 0 else bob).send(text)

    for chat in (ann, bob):
        for text in sent:
            expect(chat.message(text)).to_have_count(1)
    in_ann = [text for text in ann.texts() if text.startswith(tag)]
    in_bob = [text for text in bob.texts() if text.startswith(tag)]
    assert in_ann == in_bob
    assert sorted(in_ann) == sent
    ids = [int(ann.message(text).get_attribute("data-id") or 0) for text in in_ann]
    assert ids == sorted(ids), "shown out of the hub's order"
    expect(ann.message(sent[0])).to_have_class(re.compile(r"\bown\b"))
    expect(bob.message(sent[0])).not_to_have_class(re.compile(r"\bown\b"))
    expect(bob.message(sent[0]).locator(".sender")).to_have_text("ann")


def test_enter_sends_and_focus_stays_in_the_message_box(open_chat: OpenChat) -> None:
    chat = open_chat()
    chat.wait_online()
    box = chat.page.get_by_label(
        "Message", exact=True
    )  # labelled, so found the way a screen reader would
    text = f"keyboard {token()}"

    box.focus()
    chat.page.keyboard.type(text)
    chat.page.keyboard.press("Enter")

    log = chat.page.get_by_role("log", name="Messages in #general")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(log.locator(".message").filter(has_text=text)).to_have_count(1)
    expect(box).to_be_focused()
    expect(box).to_have_value("")
    expect(chat.message(text).locator("time")).to_have_text(re.compile(r"^\d\d:\d\d$"))


def test_on_a_phone_the_composer_fits_and_enter_sends(open_chat: OpenChat) -> None:
    width, height = 360, 740
    chat = open_chat(viewport={"width": width, "height": height}, is_mobile=True, has_touch=True)
    chat.wait_online()

    # A mobile browser widens its layout viewport (and zooms out) to fit content that is wider.
    assert chat.page.evaluate("() => window.innerWidth") == width
    for selector in ("#message-input", "#send-button"):
        box = chat.page.locator(selector).bounding_box()
        assert box is not None, selector
        inside = (
            box["x"] >= 0
            and box["y"] >= 0
            and box["x"] + box["width"] <= width
            and box["y"] + box["height"] <= height
        )
        assert inside, f"{selector} is not all on screen: {box}"
    no_horizontal_overflow(chat)
    text = f"from a phone {token()}"
    chat.send(text)
    expect(chat.message(text)).to_have_count(1)
    expect(chat.message(text)).to_be_in_viewport()
    no_horizontal_overflow(chat)


def test_hostile_text_renders_as_text_and_runs_nothing(open_chat: OpenChat) -> None:
    hostile_name = "<img src=x onerror=alert(2)>"
    sender = open_chat(name=hostile_name)
    phone = open_chat(viewport={"width": 360, "height": 740})
    sender.wait_online()
    phone.wait_online()

    for text in HOSTILE_TEXTS:
        sender.send(text)

    for chat in (sender, phone):
        for text in HOSTILE_TEXTS:
            expect(chat.message(text).last).to_be_visible()
        expect(chat.message(HOSTILE_TEXTS[0]).last.locator(".sender")).to_have_text(hostile_name)
        assert chat.page.locator("#messages img, #messages script").count() == 0
        no_horizontal_overflow(chat)
        assert chat.dialogs == []
        assert chat.errors == []
        # A parsed <img src=x> would have fetched /x.
        assert not [url for url in chat.requests if urlsplit(url).path == "/x"]


def test_page_talks_only_to_its_own_origin(open_chat: OpenChat, server: ServerProcess) -> None:
    chat = open_chat()
    chat.wait_online()
    text = f"origin {token()}"
    chat.send(text)
    expect(chat.message(text)).to_have_count(1)

    host = urlsplit(server.origin).netloc
    assert chat.requests, "no request was recorded"
    for url in chat.requests + chat.socket_urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) in {("http", host), ("ws", host)}, url
    # One WebSocket: the page asked for batch mode and the server granted it (a server that
    # ignores the subprotocol fails the handshake in Chromium, and the page tries again without).
    assert [urlsplit(url).path for url in chat.socket_urls] == ["/chat"]
    # Nothing the policy refused, nothing thrown.
    assert chat.errors == []


def test_page_and_assets_carry_the_security_headers_and_revalidate(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    responses: list[Response] = []
    chat = open_chat(
        before_load=lambda page: page.on("response", lambda r: responses.append(r)),
    )
    chat.wait_online()

    paths = {urlsplit(response.url).path: response for response in responses}
    assert {"/", "/static/app.js", "/static/style.css", "/static/view.js"} <= set(paths)
    for path, response in paths.items():
        headers = response.headers
        policy = headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy, path
        assert "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy, path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("referrer-policy"), path

    with httpx.Client(base_url=server.origin) as client:
        for path in ("/", "/static/app.js"):
            first = client.get(path)
            assert first.status_code == 200
            again = client.get(path, headers={"if-none-match": first.headers["etag"]})
            assert again.status_code == 304, path
            assert again.content == b""


# Errors, names, reconnects


def test_server_error_is_shown_to_the_sender_only(open_chat: OpenChat) -> None:
    sender = open_chat()
    other = open_chat()
    sender.wait_online()
    other.wait_online()
    refused = f"bell \x07 {token()}"  # control characters are refused (docs/protocol.md)

    sender.send(refused)

    expect(sender.page.locator("#error")).to_have_attribute("data-code", "invalid_text")
    expect(sender.page.locator("#error")).not_to_be_empty()
    expect(sender.page.locator("#message-input")).to_have_value(refused)  # given back
    fine = f"after the error {token()}"
    other.send(fine)
    expect(other.message(fine)).to_have_count(1)
    expect(other.page.locator("#error")).to_be_empty()
    assert other.message(refused).count() == 0


def test_a_new_name_is_used_for_new_messages(open_chat: OpenChat) -> None:
    tag = token()
    me = open_chat(name=f"dana-{tag}")
    other = open_chat()
    me.wait_online()
    other.wait_online()
    me.send(f"as dana {tag}")
    expect(other.message(f"as dana {tag}")).to_have_count(1)

    me.rename(f"erin-{tag}")
    expect(me.page.locator("#message-input")).to_be_focused()
    me.send(f"as erin {tag}")

    expect(other.message(f"as erin {tag}").locator(".sender")).to_have_text(f"erin-{tag}")
    expect(me.message(f"as erin {tag}")).to_have_class(re.compile(r"\bown\b"))
    # Own-message styling follows the name: the old name's messages are no longer ours.
    expect(me.message(f"as dana {tag}")).not_to_have_class(re.compile(r"\bown\b"))
    # The name sticks for the next visit.
    me.page.reload()
    expect(me.page.locator("#name-input")).to_have_value(f"erin-{tag}")
    me.wait_online()
    assert me.last_socket_query()["name"] == [f"erin-{tag}"]


@pytest.mark.parametrize(
    "text", ["x" * (MAX_MESSAGE_BYTES + 4), "é" * 5000], ids=["ascii", "two-byte"]
)
def test_over_long_message_is_refused_by_the_page_and_kept_in_the_box(
    open_chat: OpenChat, text: str
) -> None:
    sender = open_chat()
    other = open_chat()
    sender.wait_online()
    other.wait_online()
    box = sender.page.locator("#message-input")

    box.fill(text)  # as a paste would: the box takes all of it, nothing is cut
    box.press("Enter")

    error = sender.page.locator("#error")
    expect(error).to_have_attribute("data-code", "message_too_long")
    expect(error).to_contain_text(f"{len(text.encode())} bytes")  # the page's own check
    expect(box).to_have_value(text)
    expect(other.page.locator("#error")).to_be_empty()
    # Nothing went out: what the sender says next is the next thing the other sees.
    after = f"after the long one {token()}"
    sender.send(after)
    expect(other.message(after)).to_have_count(1)
    assert other.message(text).count() == 0
    assert sender.message(text).count() == 0


def test_a_server_set_to_a_lower_limit_has_the_page_keep_to_it(
    browser: Browser, small_limit_server: ServerProcess
) -> None:
    """The page learns the server's limit from its welcome frame: past it, the sender is told
    and keeps the text, and nothing goes out. (A server that does not say is answered by its
    message_too_long error: the scripted tests.)"""
    origin = small_limit_server.origin
    sender = ChatPage.open(browser, origin)
    other = ChatPage.open(browser, origin)
    try:
        sender.wait_online()
        other.wait_online()
        text = "y" * (SMALL_LIMIT_BYTES + 1)

        sender.send(text)

        error = sender.page.locator("#error")
        expect(error).to_have_attribute("data-code", "message_too_long")
        expect(error).to_contain_text(f"max {SMALL_LIMIT_BYTES}")
        expect(sender.page.locator("#message-input")).to_have_value(text)  # given back
        expect(other.page.locator("#error")).to_be_empty()
        fine = "short enough"
        sender.send(fine)
        expect(other.message(fine)).to_have_count(1)
        assert other.message(text).count() == 0
        assert sender.message(text).count() == 0
    finally:
        sender.close()
        other.close()


def test_a_server_set_to_a_shorter_name_limit_has_the_page_keep_to_it(
    browser: Browser, short_name_server: ServerProcess
) -> None:
    """The page learns the server's name limit from its welcome frame: the name box takes no
    more, a longer name is cut as a typed one is, and messages go out under the cut name. A
    name kept from a visit to a server that allowed more is cut too, and sticks."""
    origin = short_name_server.origin
    sender = ChatPage.open(browser, origin, name="ann")
    other = ChatPage.open(browser, origin)
    returning = ChatPage.open(browser, origin, name="maximiliana-rose")
    try:
        sender.wait_online()
        other.wait_online()
        name_box = sender.page.locator("#name-input")
        expect(name_box).to_have_attribute("maxlength", str(SHORT_NAME_CHARS))

        sender.rename("bartholomew-the-great")
        expect(name_box).to_have_value("bartholome")
        text = f"under a short name {token()}"
        sender.send(text)

        expect(other.message(text).locator(".sender")).to_have_text("bartholome")
        expect(sender.message(text)).to_have_class(re.compile(r"\bown\b"))
        expect(sender.page.locator("#error")).to_be_empty()

        # Its first URL carried the long name, which the server refused; the page cut it on
        # the welcome frame and renamed the connection, and the name sticks.
        returning.wait_online()
        expect(returning.page.locator("#name-input")).to_have_value("maximilian")
        users = other.page.locator("#online-users li")
        expect(users.filter(has_text=re.compile("^maximilian$"))).to_have_count(1)
        returning.page.reload()
        returning.wait_online()
        assert returning.last_socket_query()["name"] == ["maximilian"]
        expect(returning.page.locator("#error")).to_be_empty()
    finally:
        sender.close()
        other.close()
        returning.close()


def chat_both_ways_recording_handshakes(
    browser: Browser, server: ServerProcess
) -> tuple[HandshakeLog, ChatPage]:
    """Two people chat on ``server``; returns the first one's handshakes, and its page."""
    handshakes = HandshakeLog()
    ann = ChatPage.open(browser, server.origin, name="ann", before_load=handshakes.record)
    bob = ChatPage.open(browser, server.origin, name="bob")
    try:
        ann.wait_online()
        bob.wait_online()
        tag = token()
        ann.send(f"from ann {tag}")
        expect(bob.message(f"from ann {tag}")).to_have_count(1)
        bob.send(f"from bob {tag}")
        expect(ann.message(f"from bob {tag}")).to_have_count(1)
        assert ann.errors == [] and bob.errors == []
    finally:
        bob.close()
    return handshakes, ann


def test_by_default_the_browsers_compression_offer_is_answered_with_plain_frames(
    browser: Browser, server: ServerProcess
) -> None:
    handshakes, ann = chat_both_ways_recording_handshakes(browser, server)
    ann.close()

    assert handshakes.offered[:1] == [CHROMIUM_EXTENSION_OFFER]
    assert handshakes.answered[:1] == [None]


def test_with_compression_on_the_browser_compresses_and_the_page_works(
    browser: Browser, compression_server: ServerProcess
) -> None:
    handshakes, ann = chat_both_ways_recording_handshakes(browser, compression_server)
    extensions = ann.page.evaluate(
        """url => new Promise((resolve, reject) => {
            const socket = new WebSocket(url);
            socket.onopen = () => { resolve(socket.extensions); socket.close(); };
            socket.onerror = reject;
        })""",
        compression_server.origin.replace("http", "ws", 1) + "/chat",
    )
    ann.close()

    assert handshakes.offered[:1] == [CHROMIUM_EXTENSION_OFFER]
    [answer] = handshakes.answered[:1]
    assert answer is not None
    assert answer.split("; ")[0] == "permessage-deflate"
    assert "client_no_context_takeover" in answer.split("; ")
    assert extensions.startswith("permessage-deflate")  # as the page's own script sees it


def test_reconnects_back_off_while_every_connection_is_dropped_at_once(
    open_chat: OpenChat,
) -> None:
    """A server (or proxy) that accepts and hangs up at once: an open alone must not reset the
    backoff. While down the page says so and offers Retry; once the link is back, Retry
    reconnects at once, and the page resumes and carries on."""
    link = FlakyLink()
    chat = open_chat(before_load=routed_through(link))
    chat.wait_online()

    link.drop("accept_and_drop")
    # The drop, then a "Disconnected" line for each attempt that opened and was hung up on.
    expect(chat.system("disconnect")).to_have_count(1 + BACKOFF_STEPS, timeout=RECONNECT_TIMEOUT_MS)

    assert link.dropped_at is not None
    attempts = link.times[1 : 1 + BACKOFF_STEPS]
    gaps = [later - earlier for earlier, later in itertools.pairwise([link.dropped_at, *attempts])]
    for step, gap in enumerate(gaps):
        # At least the wait's lower bound, less a quarter for when the route was recorded.
        lowest = (1 - BACKOFF_JITTER) * BACKOFF_BASE_SECONDS * 2**step
        assert gap >= 0.75 * lowest, f"wait {step} too short: {gaps}"
    assert gaps[-1] >= 2.5, gaps

    expect(chat.status).to_have_attribute("data-state", "offline")
    expect(chat.page.locator("#status-detail")).to_have_text(re.compile(r"retrying in \d+ s"))
    retry = chat.page.locator("#retry-button")
    expect(retry).to_be_visible()
    link.restore()
    retry.click()

    chat.wait_online()
    assert len(link.times) == 2 + BACKOFF_STEPS, "one attempt, the one Retry made"
    # Made before the backoff's timer could have fired (its next wait is 8 s less 20 %).
    next_wait = (1 - BACKOFF_JITTER) * BACKOFF_BASE_SECONDS * 2**BACKOFF_STEPS
    assert link.times[-1] - link.times[-2] < next_wait
    expect(retry).to_be_hidden()
    expect(chat.log).to_have_attribute("data-history", "resumed")
    text = f"after the flaky link {token()}"
    chat.send(text)
    expect(chat.message(text)).to_have_count(1)
    expect(chat.page.locator("#error")).to_be_empty()


def test_page_reconnects_by_itself_after_a_restart_and_carries_on(
    open_chat: OpenChat, server: ServerProcess
) -> None:
    """The module's server is restarted on its port, as a deploy would; later tests carry on
    with the new one."""
    tag = token()
    chat = open_chat(name=f"fay-{tag}")
    chat.wait_online()
    assert chat.last_socket_query() == {"room": ["general"], "name": [f"fay-{tag}"]}
    before = [f"before the restart {tag} {n}" for n in range(2)]
    for text in before:
        chat.send(text)
        expect(chat.message(text)).to_have_count(1)
    last_id = chat.message(before[-1]).get_attribute("data-id")
    chat.rename(f"gus-{tag}")

    server.stop()
    expect(chat.status).to_have_attribute("data-state", "offline")
    expect(chat.status).to_contain_text("disconnected")
    expect(chat.system("disconnect").last).to_be_visible()
    sockets_before = len(chat.socket_urls)
    server.start()

    chat.wait_online(timeout=RECONNECT_TIMEOUT_MS)
    # The new server went on from the store, in the same run of ids: the page resumed where it
    # was, with nothing missing and nothing to say about it.
    expect(chat.log).to_have_attribute("data-history", "resumed")
    expect(chat.page.locator(".system[data-code=invalid_resume]")).to_have_count(0)
    expect(chat.page.locator(".system[data-code=messages_missed]")).to_have_count(0)
    after = f"after the restart {tag}"
    chat.send(after)
    expect(chat.message(after)).to_have_count(1)
    for text in before:
        expect(chat.message(text)).to_have_count(1)
    assert len(chat.socket_urls) > sockets_before
    # The reconnect asked under the new name, for what came after what it had seen, in the
    # run of ids it had seen it in.
    query = chat.last_socket_query()
    assert query["name"] == [f"gus-{tag}"]
    epoch, _, since = query["since"][0].rpartition(":")
    assert (since, bool(epoch)) == (last_id, True)


def test_screenshot_of_a_conversation(browser: Browser, fresh_server: ServerProcess) -> None:
    """Saved for people to look at: test-artifacts/conversation.png and conversation-phone.png,
    a conversation in one room of several. The first becomes docs/screenshot.png, the README's
    picture, on purpose only (with TRIO_CHAT_REFRESH_SCREENSHOT=1): a test run leaves the
    checkout as it found it."""
    opened: list[ChatPage] = []

    def open_as(name: str, room: str, **options: Any) -> ChatPage:
        chat = ChatPage.open(browser, fresh_server.origin, name=name, path=f"/#{room}", **options)
        opened.append(chat)
        chat.wait_in_room(room)
        return chat

    try:
        bob = open_as("bob", "deploys", viewport={"width": 390, "height": 720})
        bob.send("Morning! The deploy went out at 10, shout if anything looks odd.")
        cleo = open_as("cleo", "design")
        ann = open_as("ann", "design", viewport={"width": 900, "height": 600})
        ann.join_room("deploys")  # last: the busiest rooms, fetched a moment later, count all
        lines = [
            (ann, "Morning! Four workers and one hub, and I see every message in one order."),
            (bob, "And <script>alert('hi')</script> shows up as plain text."),
            (ann, "As it should. I restarted the server: the page reconnected by itself."),
        ]
        for chat, text in lines:
            chat.send(text)
            expect(ann.message(text)).to_have_count(1)
            expect(bob.message(text)).to_have_count(1)
        # News in the rooms ann is not looking at.
        cleo.send("New icons for the room list are up for review.")
        cleo.show_room("general")
        cleo.send("Lunch at 12:30?")
        expect(ann.unread("general")).to_have_text("1")
        expect(ann.unread("design")).to_have_text("1")
        busiest = ann.page.locator("#busiest-rooms .room-button")
        expect(busiest).to_have_text(["#general3 online", "#deploys2 online", "#design2 online"])
        ann.page.locator("#message-input").fill("Shipping it")

        ARTIFACTS.mkdir(exist_ok=True)
        for chat, name in ((ann, "conversation.png"), (bob, "conversation-phone.png")):
            path = ARTIFACTS / name
            chat.page.screenshot(path=path, animations="disabled", caret="initial")
            assert path.stat().st_size > 0
        if os.environ.get(REFRESH_SCREENSHOT_VARIABLE) == "1":
            shutil.copyfile(ARTIFACTS / "conversation.png", README_SCREENSHOT)
    finally:
        for chat in opened:
            chat.close()


# History, resume and presence (docs/protocol.md; issue 3)


def test_newcomer_sees_earlier_messages_once_marked_as_history(open_chat: OpenChat) -> None:
    tag = token()
    earlier = [f"earlier {tag} {n}" for n in range(3)]
    author = open_chat()
    author.wait_online()
    for text in earlier:
        author.send(text)
        expect(author.message(text)).to_have_count(1)

    newcomer = open_chat()
    newcomer.wait_online()

    expect(newcomer.log).to_have_attribute("data-history", "fresh")
    expect(newcomer.system("history")).to_have_text("Earlier messages")
    for text in earlier:
        expect(newcomer.message(text)).to_have_count(1)
        expect(newcomer.message(text)).to_have_class(re.compile(r"\bhistory\b"))
    assert [t for t in newcomer.texts() if tag in t] == earlier
    live = f"live {tag}"
    author.send(live)
    expect(newcomer.message(live)).to_have_count(1)
    expect(newcomer.message(live)).not_to_have_class(re.compile(r"\bhistory\b"))


def test_dropped_page_resumes_with_exactly_what_it_missed(open_chat: OpenChat) -> None:
    tag = token()
    link = FlakyLink()
    author = open_chat()
    reader = open_chat(before_load=routed_through(link))
    author.wait_online()
    reader.wait_online()
    author.send(f"seen {tag}")
    expect(reader.message(f"seen {tag}")).to_have_count(1)
    seen_id = reader.message(f"seen {tag}").get_attribute("data-id")

    link.drop()
    expect(reader.status).to_have_attribute("data-state", re.compile("offline|connecting"))
    missed = [f"missed {tag} {n}" for n in range(3)]
    for text in missed:
        author.send(text)
        expect(author.message(text)).to_have_count(1)
    link.restore()

    reader.wait_online(timeout=RECONNECT_TIMEOUT_MS)
    for text in missed:
        expect(reader.message(text)).to_have_count(1)
    expect(reader.log).to_have_attribute("data-history", "resumed")
    after = f"after {tag}"
    author.send(after)
    expect(reader.message(after)).to_have_count(1)
    assert [t for t in reader.texts() if tag in t] == [f"seen {tag}", *missed, after]
    # It asked for what came after the last message it had seen.
    since = parse_qs(urlsplit(link.urls[-1]).query)["since"][0]
    assert since.rpartition(":")[2] == seen_id


def test_presence_shows_who_is_online_and_who_came_and_went(open_chat: OpenChat) -> None:
    tag = token()
    ann = open_chat(name=f"ann-{tag}")
    ann.wait_online()
    expect(ann.page.locator("#online-count")).to_have_text(re.compile(r"^\d+ online$"))
    expect(ann.page.locator("#online-users li.own")).to_have_text(f"ann-{tag}")

    bob = open_chat(name=f"bob-{tag}")
    bob.wait_online()
    expect(ann.system("presence").filter(has_text=f"bob-{tag} joined")).to_have_count(1)
    for chat in (ann, bob):
        users = chat.page.locator("#online-users li")
        expect(users.filter(has_text=re.compile(f"^ann-{tag}$"))).to_have_count(1)
        expect(users.filter(has_text=re.compile(f"^bob-{tag}$"))).to_have_count(1)
    count = ann.page.locator("#online-count").text_content() or ""
    assert int(count.split()[0]) >= 2

    ann.rename(f"cleo-{tag}")
    ann.send(f"renamed {tag}")
    expect(bob.page.locator("#online-users li").filter(has_text=f"cleo-{tag}")).to_have_count(1)
    expect(bob.page.locator("#online-users li").filter(has_text=f"ann-{tag}")).to_have_count(0)

    bob.close()
    expect(ann.system("presence").filter(has_text=f"bob-{tag} left")).to_have_count(1)
    expect(ann.page.locator("#online-users li").filter(has_text=f"bob-{tag}")).to_have_count(0)
    # Our own rename is not news to us.
    expect(ann.system("presence").filter(has_text=f"ann-{tag} left")).to_have_count(0)


# The page against a scripted server: exactly the frames of docs/protocol.md, edge cases too


@pytest.fixture
def scripted(browser: Browser, server: ServerProcess) -> Iterator[tuple[ChatPage, ScriptedServer]]:
    """A page named "ann" whose WebSocket talks to a ScriptedServer (the page itself comes from
    the real one)."""
    script = ScriptedServer()
    chat = ChatPage.open(browser, server.origin, name="ann", before_load=routed_through(script))
    try:
        expect(chat.status).to_have_attribute("data-state", "online")
        yield chat, script
        assert chat.errors == []
        assert chat.dialogs == []
    finally:
        chat.close()


def test_scripted_join_shows_history_presence_and_every_message_once(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    assert script.sockets[0].protocols == ["trio-chat.batch"]
    assert script.query() == {"room": ["general"], "name": ["ann"]}

    script.send(
        welcome(worker=7),
        history(message(1, "bob", "one"), message(2, "ann", "two")),
        presence(["ann", "bob"]),
    )

    assert chat.wait_online() == 7
    expect(chat.system("history")).to_have_text("Earlier messages")
    expect(chat.messages).to_have_count(2)
    expect(chat.message("one")).to_have_class(re.compile(r"\bhistory\b"))
    expect(chat.message("two")).to_have_class(re.compile(r"\bown\b"))
    expect(chat.page.locator("#online-count")).to_have_text("3 online")
    expect(chat.page.locator("#online-users li")).to_have_text(["ann", "bob"])
    expect(chat.page.locator("#online-users li.own")).to_have_text("ann")

    script.send(
        message(2, "ann", "two"),  # a repeat
        message(3, "bob", "three"),
        presence(["ann", "bob", "carl"], joined=("carl",), online=4),
    )

    expect(chat.message("three")).to_have_count(1)
    expect(chat.message("three")).not_to_have_class(re.compile(r"\bhistory\b"))
    expect(chat.messages).to_have_count(3)
    expect(chat.system("presence")).to_have_text(["carl joined"])
    expect(chat.page.locator("#online-users li")).to_have_text(["ann", "bob", "carl"])


def test_scripted_reconnect_resumes_and_says_what_was_lost(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(), history(message(3, "bob", "three")), presence(["ann", "bob"]))
    expect(chat.message("three")).to_have_count(1)

    reconnect(chat, script)

    assert script.query() == {"room": ["general"], "since": ["3"], "name": ["ann"]}
    script.send(
        welcome(),
        {"type": "notice", "code": "resume_partial", "message": "...", "first_available": 6},
        history(message(6, "bob", "six"), resumed=True),
        presence(["ann", "bob"]),
    )
    lost = chat.page.locator(".system[data-code=resume_partial]")
    expect(lost).to_have_text("Some messages from while you were away could not be recovered")
    expect(chat.system("history").last).to_have_text("While you were away")
    expect(chat.message("six")).to_have_class(re.compile(r"\bhistory\b"))
    expect(chat.log).to_have_attribute("data-history", "resumed")
    assert chat.texts() == ["three", "six"]


def test_scripted_restarted_server_starts_its_ids_again(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(), history(message(1, "bob", "old one"), message(2, "bob", "old two")))
    expect(chat.messages).to_have_count(2)

    reconnect(chat, script)
    assert script.query()["since"] == ["2"]
    script.send(
        welcome(),
        {"type": "error", "code": "invalid_resume", "message": "That id is in the future."},
        history(message(4, "dan", "new four", ts=T0 + 1000)),
    )

    expect(chat.message("new four")).to_have_count(1)
    expect(chat.page.locator(".system[data-code=invalid_resume]")).to_have_count(1)
    expect(chat.page.locator("#error")).to_be_empty()  # not an error about what we sent

    # A hub restarted under a live connection: ids start again with no warning at all. An id
    # below the highest one seen that is no repeat can only mean that, and since follows it.
    script.send(message(5, "dan", "new five", ts=T0 + 1001), message(1, "eve", "newest one"))
    expect(chat.message("newest one")).to_have_count(1)
    reconnect(chat, script)
    assert script.query()["since"] == ["1"]
    assert chat.texts() == ["old one", "old two", "new four", "new five", "newest one"]


def test_scripted_new_hub_under_a_live_connection_brings_its_own_run_of_ids(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(), history(message(5, "bob", "old five"), epoch="e1"))
    expect(chat.messages).to_have_count(1)

    # The hub was replaced: the notice names the new run, whose ids may repeat ours, even
    # with the same timestamp.
    new_hub = {"type": "notice", "code": "messages_missed", "message": "...", "epoch": "e2"}
    script.send(new_hub, message(5, "dan", "new five", ts=T0 + 5))
    expect(chat.message("new five")).to_have_count(1)
    expect(chat.page.locator(".system[data-code=messages_missed]")).to_have_count(1)

    reconnect(chat, script)
    assert script.query()["since"] == ["e2:5"]
    assert chat.texts() == ["old five", "new five"]


def test_scripted_errors_go_to_the_sender_and_bad_lines_are_skipped(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome())
    chat.wait_online()

    script.send(
        "not json",
        '{"type": "from the future"}',
        "[1, 2]",
        message(1, "bob", "still shown"),
        {"type": "error", "code": "message_too_long", "message": "Longer than 4096 bytes."},
    )

    expect(chat.message("still shown")).to_have_count(1)
    expect(chat.page.locator("#error")).to_have_text("Longer than 4096 bytes.")
    expect(chat.page.locator("#error")).to_have_attribute("data-code", "message_too_long")


def test_scripted_reconnect_from_an_empty_room_asks_for_everything_since_its_start(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    """A page that has seen no message still resumes: since=<epoch>:0, so that what was said
    while it was away reaches it (a fresh join would leave it to the history's size)."""
    chat, script = scripted
    script.send(welcome(), history(epoch="e1"), presence(["ann"]))
    expect(chat.log).to_have_attribute("data-history", "fresh")

    reconnect(chat, script)

    assert script.query() == {"room": ["general"], "since": ["e1:0"], "name": ["ann"]}


def send_in_a_room_with_history(chat: ChatPage, script: ScriptedServer, text: str) -> Locator:
    """Join a room of run "e1" with one message, then send ``text``; returns the message box,
    which the send emptied."""
    script.send(welcome(), history(message(1, "bob", "one"), epoch="e1"))
    expect(chat.message("one")).to_have_count(1)
    box = chat.page.locator("#message-input")
    chat.send(text)
    expect(box).to_have_value("")
    return box


def sent_texts(script: ScriptedServer) -> list[str]:
    return [frame["message"] for frame in script.received if "message" in frame]


def test_scripted_message_lost_with_the_connection_is_sent_again_after_a_clean_resume(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    """A resume without a gap that does not have it proves the message never arrived: it goes
    out again, by itself, and nothing is said."""
    chat, script = scripted
    box = send_in_a_room_with_history(chat, script, "lost on the way")

    reconnect(chat, script)
    script.send(welcome(), history(resumed=True, epoch="e1"))

    wait_until(chat.page, lambda: sent_texts(script) == ["lost on the way"] * 2)
    script.send(message(2, "ann", "lost on the way"))
    expect(chat.message("lost on the way")).to_have_count(1)
    expect(box).to_have_value("")
    expect(chat.page.locator("#error")).to_be_empty()


def test_scripted_message_lost_before_a_fresh_history_is_given_back(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    """After a fresh history (the server lost our place) the page cannot tell whether the
    message arrived: it goes back to the person, into the box if empty, else quoted."""
    chat, script = scripted
    box = send_in_a_room_with_history(chat, script, "lost on the way")
    error = chat.page.locator("#error")
    restarted = {"type": "error", "code": "invalid_resume", "message": "Unknown epoch."}

    reconnect(chat, script)
    script.send(welcome(), restarted, history(epoch="e2"))

    expect(box).to_have_value("lost on the way")
    expect(error).to_have_attribute("data-code", "unsent")
    assert chat.message("lost on the way").count() == 0

    # Again, with something new in the box by then: that stays, and the page says what was lost.
    chat.send("lost again")
    expect(box).to_have_value("")
    reconnect(chat, script)
    box.fill("a new draft")
    script.send(welcome(), restarted, history(epoch="e3"))

    expect(error).to_contain_text("lost again")
    expect(error).to_have_attribute("data-code", "unsent")
    expect(box).to_have_value("a new draft")
    assert sent_texts(script) == ["lost on the way", "lost again"]


def test_scripted_message_that_came_back_in_the_resume_is_not_given_back(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    box = send_in_a_room_with_history(chat, script, "made it")

    reconnect(chat, script)
    script.send(welcome(), history(message(2, "ann", "made it"), resumed=True, epoch="e1"))

    expect(chat.message("made it")).to_have_count(1)
    expect(box).to_have_value("")
    expect(chat.page.locator("#error")).to_be_empty()


def test_scripted_name_limit_comes_from_the_welcome_frame(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    name_box = chat.page.locator("#name-input")
    # Before any welcome frame, the server's default.
    expect(name_box).to_have_attribute("maxlength", str(MAX_SENDER_CHARS))

    script.send({**welcome(), "max_sender_chars": 2}, history())

    expect(name_box).to_have_attribute("maxlength", "2")
    expect(name_box).to_have_value("an")  # "ann", cut as a typed name is
    script.send({"type": "error", "code": "sender_too_long"})  # no message: the page words it
    expect(chat.page.locator("#error")).to_have_text("Name is too long (max 2 characters).")
    assert {"type": "rename", "name": "an"} in script.received
    # A welcome that does not say keeps the limit; the next connection asks under the cut name.
    reconnect(chat, script)
    assert script.query()["name"] == ["an"]
    script.send(welcome())
    chat.wait_online()
    expect(name_box).to_have_attribute("maxlength", "2")


def test_scripted_long_session_keeps_the_page_bounded(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome())
    total, per_frame = 1100, 275
    for first in range(1, total + 1, per_frame):
        script.send(*(message(id, "bob", f"m {id}") for id in range(first, first + per_frame)))

    expect(chat.message(f"m {total}")).to_be_in_viewport()  # the newest, scrolled to
    expect(chat.log.locator("> *")).to_have_count(MAX_ENTRIES)
    expect(chat.message("m 1")).to_have_count(0)  # the oldest made room
    # A repeat of a recent id is still known as one.
    script.send(message(total - 50, "bob", f"m {total - 50}"), message(total + 1, "bob", "next"))
    expect(chat.message("next")).to_have_count(1)
    expect(chat.message(f"m {total - 50}")).to_have_count(1)


def test_scripted_someone_leaving_under_our_old_name_is_shown(
    scripted: tuple[ChatPage, ScriptedServer],
) -> None:
    chat, script = scripted
    script.send(welcome(), history(), presence(["ann", "bob"]))
    expect(chat.page.locator("#online-users li.own")).to_have_text("ann")

    chat.rename("cleo")
    # Another tab is called ann too, so our rename is no leave of "ann": we only join as cleo.
    script.send(presence(["ann", "bob", "cleo"], joined=("cleo",)))
    expect(chat.page.locator("#online-users li.own")).to_have_text("cleo")
    # Then that other ann leaves: news to us.
    script.send(presence(["bob", "cleo"], left=("ann",)))

    expect(chat.system("presence")).to_have_text(["ann left"])


# The page's modules alone, in a document of its origin (module_page)

CONNECTION_SCENARIO = """async (outcomes) => {
  const { ChatConnection } = await import('/static/chat-connection.js');
  const attempts = [];  // {protocols, at, closedAt}
  const delays = [];  // the wait announced after each failure
  const attemptAtOpen = [];  // the backoff step when a connection opened
  let stayed;
  const stayedOpen = new Promise((resolve) => { stayed = resolve; });

  // Stands in for the browser's WebSocket: attempt n plays outcomes[n]: "refuse" (closes
  // during the handshake, as a failed one does), "accept_and_drop" or "stay" (opens).
  globalThis.WebSocket = class extends EventTarget {
    static OPEN = 1;
    constructor(url, protocols) {
      super();
      const attempt = { protocols: [...protocols], at: performance.now() };
      attempts.push(attempt);
      const outcome = outcomes[attempts.length - 1];
      this.readyState = 0;
      setTimeout(() => {
        if (outcome !== 'refuse') {
          this.readyState = 1;
          this.dispatchEvent(new Event('open'));
        }
        if (outcome === 'stay') return stayed(performance.now());
        this.readyState = 3;
        attempt.closedAt = performance.now();
        this.dispatchEvent(new CloseEvent('close', { code: 1006 }));
      }, 0);
    }
    send() {}
    close() {}
  };

  const conn = new ChatConnection(() => 'ws://stand-in/chat', {
    onState(state, info) {
      if (state === 'online') attemptAtOpen.push(conn.attempt);
      if (state !== 'offline') return;
      delays.push(info.retryInMs);
      // The first wait is waited out; the others are skipped, as the Retry button does.
      if (delays.length > 1) queueMicrotask(() => conn.retryNow());
    },
  });
  const deadline = (ms, what) => new Promise((_, reject) => {
    setTimeout(() => reject(new Error(`${what} after ${ms} ms`)), ms);
  });
  conn.start();
  const openedAt = await Promise.race([stayedOpen, deadline(20000, 'no lasting connection')]);
  // The backoff is reset once the connection has lasted: wait for it, with a deadline.
  while (conn.attempt !== 0) {
    if (performance.now() - openedAt > 20000) throw new Error('the backoff was never reset');
    await new Promise((resolve) => { setTimeout(resolve, 50); });
  }
  return { attempts, delays, attemptAtOpen, resetAfterMs: performance.now() - openedAt };
}"""


def test_failed_handshakes_back_off_and_alternate_batch_mode(module_page: Page) -> None:
    """A failed handshake looks the same whether the server is down or refuses batch mode: the
    page waits its normal backoff, then tries without batch mode, and so on by turns; once a
    connection has opened, the next cycle asks for batch mode again."""
    result = module_page.evaluate(
        CONNECTION_SCENARIO, ["refuse", "refuse", "refuse", "accept_and_drop", "stay"]
    )

    attempts = result["attempts"]
    assert [attempt["protocols"] for attempt in attempts] == [[BATCH], [], [BATCH], [], [BATCH]]
    # No immediate retry without batch mode: the first wait was waited out.
    first_wait = attempts[1]["at"] - attempts[0]["closedAt"]
    assert first_wait >= result["delays"][0] - 2  # timers are rounded to the millisecond
    # One backoff across failed handshakes and the connection that opened and dropped at once.
    delays = result["delays"]
    for step, delay in enumerate(delays):
        nominal = 1000 * BACKOFF_BASE_SECONDS * 2**step
        assert (1 - BACKOFF_JITTER) * nominal <= delay <= (1 + BACKOFF_JITTER) * nominal, delays
    assert result["attemptAtOpen"] == [3, 4], "an open alone must not reset the backoff"
    assert result["resetAfterMs"] >= 1000 * STABLE_AFTER_SECONDS - 100


def test_backoff_doubles_to_its_cap_with_jitter_around_it(module_page: Page) -> None:
    rows = module_page.evaluate(
        """async (steps) => {
          const { backoffDelay } = await import('/static/chat-connection.js');
          return Array.from({ length: steps }, (_, attempt) =>
            [0, 0.5, 0.999999].map((random) => backoffDelay(attempt, random)));
        }""",
        20,
    )

    for attempt, (lowest, middle, highest) in enumerate(rows):
        nominal = 1000 * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
        assert (lowest, middle) == ((1 - BACKOFF_JITTER) * nominal, nominal), attempt
        assert (1 + BACKOFF_JITTER) * nominal - 1 <= highest <= (1 + BACKOFF_JITTER) * nominal


def test_seen_ids_are_bounded_and_still_know_recent_repeats(module_page: Page) -> None:
    result = module_page.evaluate(
        """async (count) => {
          const { SeenIds } = await import('/static/seen-ids.js');
          const seen = new SeenIds();
          for (let id = 1; id <= count; id += 1) seen.accept(id, id);
          return {
            remembered: seen.tsById.size,
            oldest: Math.min(...seen.tsById.keys()),
            recentRepeat: seen.accept(count - 10, count - 10),
            next: seen.accept(count + 1, count + 1),
          };
        }""",
        6000,
    )

    assert result == {"remembered": 5000, "oldest": 1001, "recentRepeat": False, "next": True}


def test_the_chat_url_follows_the_page_scheme_and_host(module_page: Page) -> None:
    urls = module_page.evaluate(
        """async () => {
          const { chatUrl } = await import('/static/chat-connection.js');
          const secure = { protocol: 'https:', host: 'chat.example:8443' };
          const plain = { protocol: 'http:', host: '127.0.0.1:8000' };
          return [
            chatUrl({}, plain),
            chatUrl({ room: 'dev', name: 'ann b&c', since: 'e1:5' }, secure),
            chatUrl({ name: 'ann', since: '0' }, plain),
          ];
        }"""
    )
    assert urls == [
        "ws://127.0.0.1:8000/chat",
        "wss://chat.example:8443/chat?room=dev&since=e1:5&name=ann%20b%26c",
        "ws://127.0.0.1:8000/chat?since=0&name=ann",
    ]


def test_a_newcomer_gets_a_random_name_that_it_keeps(module_page: Page) -> None:
    result = module_page.evaluate(
        """async () => {
          const { loadName, randomName } = await import('/static/names.js');
          localStorage.clear();
          const first = loadName();
          return {
            first,
            again: loadName(),
            stored: localStorage.getItem('trio_chat.name'),
            others: Array.from({ length: 20 }, randomName),
          };
        }"""
    )
    names = [result["first"], *result["others"]]
    assert all(re.fullmatch(r"[a-z]+-[a-z]+-\d\d", name) for name in names), names
    assert len(set(names)) > 10  # Random, not one default for everyone.
    assert result["again"] == result["stored"] == result["first"]


def test_a_new_message_fades_in(scripted: tuple[ChatPage, ScriptedServer]) -> None:
    chat, script = scripted
    script.send(welcome(), history(), message(1, "bob", "hello"))
    expect(chat.message("hello")).to_have_count(1)
    animation = chat.message("hello").evaluate("(el) => getComputedStyle(el).animationName")
    assert animation == "fade-in"
