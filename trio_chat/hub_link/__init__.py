"""What a worker uses to reach its hub: one total order of chat messages, delivered to every
worker.

Backends share the ``Hub`` protocol of ``interface``; ``open_hub`` picks one from settings:
``local.LocalHub`` (in-process), ``manager.hub.ManagerHub`` (the hub process, ``trio_chat.hub``;
the default) or ``redis.hub.RedisHub``. Importing this package loads none of them, nor Trio:
the hub process imports ``interface`` from here, and a backend (redis-py for the Redis hub) is
imported only once it is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .interface import Hub, HubLink, HubListener, HubUnavailable, Member, RoomCount, Snapshot

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "Hub",
    "HubLink",
    "HubListener",
    "HubUnavailable",
    "Member",
    "RoomCount",
    "Snapshot",
    "open_hub",
]

#: ``TRIO_CHAT_HUB`` schemes of the Redis hub.
REDIS_SCHEMES = ("redis://", "rediss://")


def open_hub(settings: Settings) -> Hub:
    if settings.hub == "local":
        from .local import LocalHub

        return LocalHub(settings.history_size, max_rooms=settings.max_rooms)
    if is_redis_url(settings.hub):
        from .redis.hub import RedisHub

        return RedisHub(settings)
    from .manager.hub import ManagerHub

    return ManagerHub(settings)


def is_redis_url(hub: str) -> bool:
    return hub.startswith(REDIS_SCHEMES)
