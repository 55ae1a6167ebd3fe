"""The cross-process hub: one total order of chat messages, delivered to every worker.

Backends share the ``Hub`` protocol of ``interface``; ``open_hub`` picks one from settings.
"""

from __future__ import annotations

from ..config import Settings
from .bridge import ManagerHub
from .interface import Hub, HubListener, HubUnavailable
from .local import LocalHub

__all__ = ["Hub", "HubListener", "HubUnavailable", "LocalHub", "ManagerHub", "open_hub"]


def open_hub(settings: Settings) -> Hub:
    if settings.hub == "local":
        return LocalHub()
    return ManagerHub(settings)
