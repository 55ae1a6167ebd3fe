"""The hub's state: the total order and one mailbox per worker. Lives in the hub process.

``HubCore`` is called from the multiprocessing manager's server threads (one thread per client
connection), so every method is thread-safe under one lock. ``Sequencer`` is the pure part,
shared with the in-process ``LocalHub``.

Mailbox policy: a mailbox holds at most ``mailbox_size`` frames. A worker that falls that far
behind (or died without leaving) has its mailbox removed, freeing the memory; its next ``fetch``
returns ``None`` and it re-joins and tells its clients that messages were missed.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence

from ..protocol import stamp_chat_frame


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Sequencer:
    """Numbers and stamps messages: ids start at 1 and never repeat or skip."""

    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._next_id = 1
        self._clock_ms = clock_ms

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def stamp(self, bodies: Sequence[str]) -> list[str]:
        ts_ms = self._clock_ms()
        first = self._next_id
        self._next_id += len(bodies)
        return [stamp_chat_frame(first + i, ts_ms, body) for i, body in enumerate(bodies)]


class _Mailbox:
    __slots__ = ("frames", "label", "ready")

    def __init__(self, label: str, lock: threading.Lock) -> None:
        self.label = label
        self.frames: collections.deque[str] = collections.deque()
        self.ready = threading.Condition(lock)


class HubCore:
    def __init__(self, mailbox_size: int, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._lock = threading.Lock()
        self._sequencer = Sequencer(clock_ms)
        self._mailboxes: dict[str, _Mailbox] = {}
        self._mailbox_ids = itertools.count(1)
        self._mailbox_size = mailbox_size
        self._evicted = 0

    def join(self, label: str) -> str:
        """Open a mailbox for a worker (``label`` is for statistics, e.g. ``host:pid``)."""
        with self._lock:
            mailbox_id = f"m{next(self._mailbox_ids)}"
            self._mailboxes[mailbox_id] = _Mailbox(label, self._lock)
            return mailbox_id

    def leave(self, mailbox_id: str) -> None:
        """Remove a mailbox; a ``fetch`` blocked on it returns ``None`` at once."""
        with self._lock:
            self._remove(mailbox_id)

    def publish(self, bodies: Sequence[str]) -> int:
        """Stamp ``bodies`` in order, put them in every mailbox; returns the last id given."""
        with self._lock:
            frames = self._sequencer.stamp(bodies)
            for mailbox_id, mailbox in list(self._mailboxes.items()):
                if len(mailbox.frames) + len(frames) > self._mailbox_size:
                    self._evicted += 1
                    self._remove(mailbox_id)
                    continue
                mailbox.frames.extend(frames)
                mailbox.ready.notify()
            return self._sequencer.last_id

    def fetch(self, mailbox_id: str, max_frames: int) -> list[str] | None:
        """Wait for frames, then take up to ``max_frames``; ``None`` once the mailbox is gone.

        Blocks without a timeout: a new frame wakes it at once, and ``leave`` (or eviction)
        wakes it to return ``None``, so the worker's reader never polls.
        """
        with self._lock:
            mailbox = self._mailboxes.get(mailbox_id)
            while mailbox is not None and not mailbox.frames:
                mailbox.ready.wait()
                mailbox = self._mailboxes.get(mailbox_id)
            if mailbox is None:
                return None
            frames = mailbox.frames
            if len(frames) <= max_frames:
                mailbox.frames = collections.deque()
                return list(frames)
            return [frames.popleft() for _ in range(max_frames)]

    def statistics(self) -> dict[str, object]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "last_id": self._sequencer.last_id,
                "mailboxes": {
                    mailbox_id: {"label": mailbox.label, "waiting": len(mailbox.frames)}
                    for mailbox_id, mailbox in self._mailboxes.items()
                },
                "evicted": self._evicted,
            }

    def _remove(self, mailbox_id: str) -> None:
        mailbox = self._mailboxes.pop(mailbox_id, None)
        if mailbox is not None:
            mailbox.frames.clear()
            mailbox.ready.notify_all()
