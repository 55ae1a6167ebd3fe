"""The garbage collector tuning a worker process applies once started (lifespan.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from trio_chat.hub import LocalHub
from trio_chat.lifespan import GC_THRESHOLDS, tune_garbage_collector

from asgi_driver import chat_app, running_worker


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_startup_made_and_collects_less_often() -> None:
    made_at_startup: list[list[object]] = [
        [] for _ in range(10)
    ]  # Containers: tracked by the collector.
    tune_garbage_collector()
    assert gc.get_freeze_count() >= len(made_at_startup)
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # Python's default.


async def test_a_worker_started_outside_a_worker_process_leaves_the_collector_alone() -> None:
    thresholds = gc.get_threshold()
    async with running_worker(chat_app(LocalHub())):
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() == 0
