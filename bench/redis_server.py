"""A throwaway ``redis-server`` for the benchmarks of the Redis hub: a free loopback port, no
persistence, stopped by its owner (``hubs.py``, ``run.py --scenario rooms``)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import psutil

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_START_TIMEOUT_SECONDS = 10.0


def available() -> bool:
    """``redis-server`` is installed, and so is the client trio_chat's Redis hub uses."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return Path(REDIS_SERVER).exists() or shutil.which("redis-server") is not None


class RedisProcess:
    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        executable = REDIS_SERVER if Path(REDIS_SERVER).exists() else "redis-server"
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + REDIS_START_TIMEOUT_SECONDS
        while not _answers(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _answers(port: int) -> bool:
    import redis

    with contextlib.suppress(redis.RedisError):
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    return False
