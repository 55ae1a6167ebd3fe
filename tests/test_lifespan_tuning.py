"""The interpreter tuning a worker process applies once started (supervision.py)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from trio_chat.hub_link.local import LocalHub
from trio_chat.supervision import GC_THRESHOLDS, SWITCH_INTERVAL_SECONDS, tune_worker_process

from asgi_driver import chat_app, running_worker


@pytest.fixture
def restored_interpreter() -> Iterator[None]:
    thresholds = gc.get_threshold()
    switch_interval = sys.getswitchinterval()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(switch_interval)


@pytest.mark.usefixtures("restored_interpreter")
def test_tuning_freezes_what_startup_made_and_collects_less_often() -> None:
    made_at_startup: list[list[object]] = [
        [] for _ in range(10)
    ]  # Containers: tracked by the collector.
    tune_worker_process()
    assert gc.get_freeze_count() >= len(made_at_startup)
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # Python's default.


@pytest.mark.usefixtures("restored_interpreter")
def test_tuning_lets_waiting_threads_take_the_gil_sooner() -> None:
    tune_worker_process()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
    assert SWITCH_INTERVAL_SECONDS < 0.005  # Python's default.


async def test_a_worker_started_outside_a_worker_process_leaves_the_collector_alone() -> None:
    thresholds = gc.get_threshold()
    switch_interval = sys.getswitchinterval()
    async with running_worker(chat_app(LocalHub())):
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() == 0
        assert sys.getswitchinterval() == switch_interval
