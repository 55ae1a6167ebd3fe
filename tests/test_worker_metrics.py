"""A worker's side of ``/metrics``: the whole server's figures asked of the hub one exchange at
a time, each answer fresher than its scrape, and one rendering per exchange.

A fake hub link stands in for the hub: its exchanges wait for the test to let them finish.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chat.config import Settings
from trio_chat.hub_link import HubUnavailable
from trio_chat.metrics import exposition
from trio_chat.metrics.figures import Counts, ServerFigures, WorkerReport
from trio_chat.worker import FIGURES_TIMEOUT_SECONDS, Worker


class GatedLink:
    """Answers each exchange with figures numbered by the exchange, once let through."""

    connected = True

    def __init__(self) -> None:
        self.started = 0
        self.gate = trio.Event()
        self.unavailable = False

    async def exchange_figures(self, report: WorkerReport) -> ServerFigures:
        self.started += 1
        number = self.started
        await self.gate.wait()
        if self.unavailable:
            raise HubUnavailable("down")
        return ServerFigures(workers=(report,), retired=Counts(), rooms=number, hub_pid=None)


def worker_with(link: GatedLink) -> Worker:
    worker = Worker(Settings())
    worker.link = link  # type: ignore[assignment]
    return worker


async def test_scrapes_during_an_exchange_share_the_next_one() -> None:
    link = GatedLink()
    worker = worker_with(link)
    answers: dict[str, int | None] = {}

    async def scrape(name: str) -> None:
        answers[name] = (await worker.server_figures()).rooms

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrape, "first")
        await trio.testing.wait_all_tasks_blocked()
        for n in range(10):  # Ten more come while the first exchange is under way.
            nursery.start_soon(scrape, f"later {n}")
        await trio.testing.wait_all_tasks_blocked()
        link.gate.set()

    # The first got the first exchange; every later one an exchange begun after it came, and
    # all of them the same one: two exchanges for eleven scrapes.
    assert link.started == 2
    assert answers.pop("first") == 1
    assert set(answers.values()) == {2}


async def test_a_scrape_after_an_exchange_asks_again() -> None:
    link = GatedLink()
    link.gate.set()
    worker = worker_with(link)

    first = await worker.server_figures()
    second = await worker.server_figures()

    assert (first.rooms, second.rooms) == (1, 2)


async def test_figures_cannot_be_had_while_the_hub_is_unreachable() -> None:
    link = GatedLink()
    link.gate.set()
    link.unavailable = True
    worker = worker_with(link)

    with pytest.raises(HubUnavailable):
        await worker.server_figures()


async def test_a_hub_that_does_not_answer_is_given_up_on(autojump_clock: trio.abc.Clock) -> None:
    link = GatedLink()  # Never let through.
    worker = worker_with(link)
    started = trio.current_time()

    with pytest.raises(HubUnavailable):
        await worker.server_figures()

    assert trio.current_time() - started == pytest.approx(FIGURES_TIMEOUT_SECONDS)


async def test_figures_are_rendered_once_however_many_scrapes_share_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[ServerFigures] = []

    def render(figures: ServerFigures) -> bytes:
        rendered.append(figures)
        return b"figures %d\n" % len(rendered)

    monkeypatch.setattr(exposition, "render", render)
    worker = worker_with(GatedLink())
    figures = ServerFigures(workers=(), retired=Counts(), rooms=1, hub_pid=None)
    other = ServerFigures(workers=(), retired=Counts(), rooms=2, hub_pid=None)

    bodies = [await worker.render_metrics(figures) for _ in range(3)]
    bodies.append(await worker.render_metrics(other))

    assert bodies == [b"figures 1\n"] * 3 + [b"figures 2\n"]
    assert rendered == [figures, other]
