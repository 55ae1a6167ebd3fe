"""The status page (``/status``) in Chromium, against ``hypercorn -k trio -w 4``: it shows the
whole server's figures from ``/metrics`` and plots them, says when it cannot have them (the
server unreachable, or this address not in ``TRIO_CHAT_METRICS``), and recovers by itself.

Same rules as test_browser.py: one browser and one server for the module, a browser context
per page, no fixed sleeps (every wait is on a condition, with a deadline), and no page may
throw or log an error, but for the failed fetches a test causes on purpose. The page polls
``/metrics`` every 2 s (static/status.js), so waits allow several polls.

The DOM contract of the page (static/status.html): ``#state`` (``data-state`` online /
offline / connecting, and a word), ``#problem`` (why the figures cannot be had, and
``data-kind`` forbidden / off / unreachable), the figures ``#connections``,
``#message-rate``, ``#rooms``, ``#workers``, ``#hub``, the tables ``#worker-rows`` and
``#disconnect-rows``, and the charts ``#connections-chart`` and ``#messages-chart`` (SVG,
``data-points`` / ``data-latest`` / ``data-highest``, and an ``aria-label`` saying the same).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from browser_support import (
    ChatPage,
    OpenChat,
    ServerProcess,
    chat_pages,
    chromium_browser,
    running_server,
    token,
)

pytestmark = [pytest.mark.e2e, pytest.mark.process]

#: static/status.js polls this often; a wait of several polls covers a figure's way from a
#: worker's report (every second) through the hub to a scrape.
POLL_MS = 2_000
FIGURES_TIMEOUT_MS = 6 * POLL_MS
WORKERS = 4
#: static/status-chart.js: the y of the charts' baseline (0) in the SVG's viewBox.
CHART_BASELINE_Y = 160 - 22
#: What Chromium logs for a fetch that failed or was refused, which a test may cause.
FAILED_FETCH = "Failed to load resource"
#: An address no test client has (TEST-NET-1, RFC 5737).
ELSEWHERE = "192.0.2.1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def server(browser: Browser) -> Iterator[ServerProcess]:
    """The module's server. Depends on ``browser`` so that it is not started just to skip."""
    yield from running_server(workers=WORKERS)


@pytest.fixture
def open_chat(browser: Browser, server: ServerProcess) -> Iterator[OpenChat]:
    with chat_pages(browser, server.origin) as open_chat:
        yield open_chat


@contextmanager
def status_page(
    browser: Browser,
    origin: str,
    path: str = "/status",
    route: Callable[[Route], None] | None = None,
    expected_errors: str | None = None,
) -> Iterator[Page]:
    """The status page at ``origin + path``; ``route(route)`` answers its ``/metrics``
    requests if given. At the end, checks that it logged no error but (with
    ``expected_errors``) failed fetches."""

    def before_load(page: Page) -> None:
        if route is not None:
            page.route(re.compile(r"/metrics$"), route)

    status = ChatPage.open(browser, origin, path=path, before_load=before_load)
    try:
        yield status.page
        errors = [e for e in status.errors if not (expected_errors and e.startswith(FAILED_FETCH))]
        assert errors == []
    finally:
        status.close()


def wait_for_chart(page: Page, chart: str, condition: str) -> None:
    """Wait until ``condition`` (JavaScript over ``points``, ``latest`` and ``highest``)
    holds for the chart ``chart``."""
    page.wait_for_function(
        f"""() => {{
            const svg = document.getElementById({chart!r});
            const points = Number(svg.dataset.points);
            const latest = svg.dataset.latest === '' ? null : Number(svg.dataset.latest);
            const highest = svg.dataset.highest === '' ? null : Number(svg.dataset.highest);
            return {condition};
        }}""",
        timeout=FIGURES_TIMEOUT_MS,
    )


def path_ys(page: Page, chart: str) -> list[float]:
    d = page.locator(f"#{chart} .chart-line").get_attribute("d") or ""
    return [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.-]+)", d)]


# What the page shows


def test_the_page_shows_the_whole_servers_connections_and_plots_messages_per_second(
    browser: Browser, server: ServerProcess, open_chat: OpenChat
) -> None:
    tag = token()
    with status_page(browser, server.origin) as page:
        expect(page.locator("#state")).to_have_attribute("data-state", "online")
        expect(page.locator("#workers")).to_have_text(str(WORKERS), timeout=FIGURES_TIMEOUT_MS)
        expect(page.locator("#hub")).to_have_text(f"up on {WORKERS} of {WORKERS} workers")
        expect(page.locator("#worker-rows tr")).to_have_count(WORKERS)
        expect(page.locator("#problem")).to_be_hidden()

        people = [open_chat(name=f"p{n}-{tag}") for n in range(3)]
        for person in people:
            person.wait_online()
        # Whichever worker each scrape lands on, it counts the three on every worker.
        expect(page.locator("#connections")).to_have_text("3", timeout=FIGURES_TIMEOUT_MS)
        wait_for_chart(page, "connections-chart", "points >= 2 && latest === 3")
        expect(page.locator("#connections-chart")).to_have_attribute(
            "aria-label", re.compile(r"^Connections over the last 10 minutes: now 3, highest 3$")
        )

        for n in range(5):
            people[0].send(f"counted {n} {tag}")
        expect(people[1].message(f"counted 4 {tag}")).to_be_visible()
        wait_for_chart(page, "messages-chart", "points >= 1 && highest > 0")
        rate = page.locator("#message-rate").text_content() or ""
        assert re.fullmatch(r"\d+(\.\d)?|measuring…", rate), rate
        assert all(y <= CHART_BASELINE_Y for y in path_ys(page, "messages-chart"))

        for person in people:
            person.close()
        expect(page.locator("#connections")).to_have_text("0", timeout=FIGURES_TIMEOUT_MS)
        # Their sessions ended: counted by close code, shown as text.
        expect(page.locator("#disconnect-rows td.empty-row")).to_have_count(0)
        expect(page.locator("#disconnect-rows tr").first).to_have_text(re.compile(r"^10\d\d"))


def test_the_page_says_when_the_figures_cannot_be_had_and_recovers(
    browser: Browser, server: ServerProcess
) -> None:
    down = False

    def metrics(route: Route) -> None:
        if down:
            route.abort("connectionrefused")
        else:
            route.continue_()

    with status_page(browser, server.origin, route=metrics, expected_errors=FAILED_FETCH) as page:
        state, problem = page.locator("#state"), page.locator("#problem")
        expect(state).to_have_attribute("data-state", "online")
        wait_for_chart(page, "connections-chart", "points >= 1")

        down = True
        expect(state).to_have_attribute("data-state", "offline", timeout=FIGURES_TIMEOUT_MS)
        expect(state).to_have_text("unreachable")
        expect(problem).to_have_attribute("data-kind", "unreachable")
        expect(problem).to_contain_text(re.compile(r"^Cannot reach the server.s figures at /"))
        expect(problem).to_contain_text("The figures shown are from")
        # The chart has a gap where the figures were missing.
        wait_for_chart(page, "connections-chart", "latest === null")

        down = False
        expect(state).to_have_attribute("data-state", "online", timeout=FIGURES_TIMEOUT_MS)
        expect(state).to_have_text("live")
        expect(problem).to_be_hidden()
        wait_for_chart(page, "connections-chart", "latest !== null")


def test_a_counter_that_went_down_is_a_restart_not_a_negative_rate(
    browser: Browser, server: ServerProcess
) -> None:
    # A server restarted between two polls: its counters started again from 0.
    totals = [100, 110, 3, 9]
    served: list[int] = []

    def metrics(route: Route) -> None:
        total = totals[min(len(served), len(totals) - 1)]
        served.append(total)
        body = (
            "# TYPE trio_chat_connections gauge\ntrio_chat_connections 1\n"
            "# TYPE trio_chat_messages_published_total counter\n"
            f"trio_chat_messages_published_total {total}.0\n"
        )
        route.fulfill(status=200, content_type="text/plain; version=0.0.4", body=body)

    with status_page(browser, server.origin, route=metrics) as page:
        # Four readings give three rates: 5/s, then 3 since the restart, then 6 more.
        wait_for_chart(page, "messages-chart", "points >= 3")

        assert served[:4] == totals
        ys = path_ys(page, "messages-chart")
        assert len(ys) >= 3
        assert all(y <= CHART_BASELINE_Y for y in ys), ys
        highest = float(page.locator("#messages-chart").get_attribute("data-highest") or "")
        assert 2 < highest < 10  # 10 more in about 2 s; never 110 - 3 the other way
        assert not (page.locator("#message-rate").text_content() or "").startswith("-")


def test_the_page_says_forbidden_outside_the_allowlist(browser: Browser) -> None:
    with contextmanager(running_server)(workers=1, env={"TRIO_CHAT_METRICS": ELSEWHERE}) as other:
        context = browser.new_context()
        try:
            # /status itself follows the allowlist...
            assert context.request.get(f"{other.origin}/status").status == 403
            assert context.request.get(f"{other.origin}/metrics").status == 403
        finally:
            context.close()
        # ...and the page, loaded from its file, says why it has no figures.
        path = "/static/status.html"
        with status_page(browser, other.origin, path, expected_errors=FAILED_FETCH) as page:
            state, problem = page.locator("#state"), page.locator("#problem")
            expect(problem).to_have_attribute("data-kind", "forbidden")
            expect(problem).to_contain_text("Forbidden: this address may not read")
            expect(state).to_have_attribute("data-state", "offline")
            expect(state).to_have_text("forbidden")
            expect(page.locator("#connections")).to_have_text("—")
