"""The cross-process hub: one total order of chat messages, delivered to every worker.

Backends share the ``Hub`` protocol of ``interface``; ``open_hub`` picks one from settings.
"""

from __future__ import annotations

from ..config import Settings
from .interface import Hub, HubLink, HubListener, HubUnavailable, Snapshot
from .local import LocalHub
from .manager_hub import ManagerHub
from .redis_hub import RedisHub, is_redis_url

__all__ = [
    "Hub",
    "HubLink",
    "HubListener",
    "HubUnavailable",
    "LocalHub",
    "ManagerHub",
    "RedisHub",
    "Snapshot",
    "open_hub",
]


def open_hub(settings: Settings) -> Hub:
    if settings.hub == "local":
        return LocalHub(settings.history_size)
    if is_redis_url(settings.hub):
        return RedisHub(settings)
    return ManagerHub(settings)
