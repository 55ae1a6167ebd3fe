"""The cross-process hub: one total order of chat messages, delivered to every worker.

Backends share the ``Hub`` protocol of ``interface``; ``open_hub`` picks one from settings.
"""

from __future__ import annotations

from ..config import Settings
from .interface import Hub, HubLink, HubListener, HubUnavailable, Snapshot
from .local import LocalHub
from .manager_hub import ManagerHub

__all__ = [
    "Hub",
    "HubLink",
    "HubListener",
    "HubUnavailable",
    "LocalHub",
    "ManagerHub",
    "Snapshot",
    "open_hub",
]


def open_hub(settings: Settings) -> Hub:
    if settings.hub == "local":
        return LocalHub(settings.history_size)
    return ManagerHub(settings)
