"""The package's layout keeps its promises: the hub process loads none of the worker's code,
and threads are entered in one place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import trio_chat

PACKAGE = Path(trio_chat.__file__).parent
#: What the hub process must not load: Trio, redis-py, the ASGI app and its sessions.
WORKER_ONLY_MODULES = ("trio", "redis", "trio_chat.asgi", "trio_chat.session", "trio_chat.fanout")


@pytest.mark.process
def test_the_hub_process_loads_neither_trio_nor_redis_nor_the_app() -> None:
    """What ``python -m trio_chat.hub`` imports, short of serving."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, trio_chat.hub.__main__; print('\\n'.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert "trio_chat.hub.server" in loaded
    assert [
        name
        for name in loaded
        if name in WORKER_ONLY_MODULES or name.split(".")[0] in WORKER_ONLY_MODULES
    ] == []


def test_threads_are_entered_in_two_named_places() -> None:
    """The hub bridge, whose calls block on the hub; and the rendering of ``/metrics``, whose
    reading of ``/proc`` takes milliseconds with thousands of connections
    (``Worker.render_metrics``)."""
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "to_thread" in path.read_text()
    )

    assert users == ["hub_link/bridge/threads.py", "worker.py"]
