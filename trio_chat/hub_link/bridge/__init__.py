"""The Trio side of a hub backend with a blocking client: the only place trio_chat enters threads.

Both networked backends (the multiprocessing manager hub and Redis Streams) have blocking
clients: each call is a socket round trip, made in a worker thread. A worker's ``BridgedHub``
drives a ``Backend`` in three parts, each in its module:

- ``membership``: ``BridgedHub`` itself, the worker's ``Hub`` and ``HubLink``: it joins the
  hub, runs the other two, re-joins after a break (telling the listener what may be missing)
  and leaves;
- ``reader``: what a membership fetches goes to the listener (the room) the moment it
  arrives, from one fetching thread (``fetcher``); a hub that fails or hangs ends the read;
- ``publisher``: sessions' bodies (queued in the ``outbox``) and the worker's presence
  changes go to the hub, paced and batched, one round trip at a time.

Shared by them: ``backend`` (what a backend provides, and ``Fetched``) and ``threads`` (the
one place blocking calls are made, and what happens to them on cancellation).
"""

from __future__ import annotations

from .backend import Backend, Fetched, Membership
from .fetcher import READ_AHEAD, Fetcher
from .membership import BridgedHub
from .publisher import UPDATE_BURST, UPDATES_PER_SECOND
from .reader import HUB_SILENCE_SECONDS
from .threads import HUB_CALL_TIMEOUT_SECONDS

__all__ = [
    "HUB_CALL_TIMEOUT_SECONDS",
    "HUB_SILENCE_SECONDS",
    "READ_AHEAD",
    "UPDATES_PER_SECOND",
    "UPDATE_BURST",
    "Backend",
    "BridgedHub",
    "Fetched",
    "Fetcher",
    "Membership",
]
