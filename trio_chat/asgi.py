"""The ASGI entry point: dispatch by scope type and path, nothing else.

lifespan           -> lifespan.run_lifespan (join the hub)
http  /            -> the page (static/index.html)
http  /static/...  -> its assets
http  /healthz     -> this worker's health, as JSON
http  /rooms       -> the busiest rooms, as JSON
http  /metrics     -> the whole server's figures, in the Prometheus text format
http  /status      -> a page plotting them (static/status.html)
websocket /chat    -> session.serve_websocket
anything else      -> 404 / 405 / refused handshake; unknown scope types are ignored

``/metrics`` and ``/status`` follow ``TRIO_CHAT_METRICS`` (``metrics/access.py``): off, they
answer 404 like any unknown path; a client outside its allowlist gets 403 whatever it asks.
"""

from __future__ import annotations

import threading
from http import HTTPStatus

import trio

from .asgi_types import Receive, Scope, Send
from .config import Settings
from .hub_link import HubUnavailable, open_hub
from .lifespan import HubFactory, run_lifespan
from .metrics import exposition
from .metrics.access import Verdict
from .protocol import rooms_listing
from .responses import send_error, send_json, send_response
from .session import serve_websocket
from .static import StaticFiles, default_static_dir
from .worker import STATE_KEY, Worker

STATIC_PREFIX = "/static/"
INDEX_FILE = "index.html"
STATUS_FILE = "status.html"
#: Paths whose answers are not files of static/.
COMPUTED_PATHS = ("/healthz", "/rooms", "/metrics")
#: Paths that ``TRIO_CHAT_METRICS`` guards.
METRICS_PATHS = ("/metrics", "/status")
ALLOW = (b"allow", b"GET, HEAD")
#: The header of a ``/metrics`` answer that names the worker (pid) that gave it.
WORKER_HEADER = b"x-trio-chat-worker"


class ChatApp:
    def __init__(self, settings: Settings | None = None, hub_factory: HubFactory = open_hub):
        """``settings`` default to the environment, read at lifespan startup."""
        self._settings = settings
        self._hub_factory = hub_factory
        # Serves the page when there is no worker (a server without lifespan support).
        self._fallback_static = StaticFiles(
            (settings.static_dir if settings else None) or default_static_dir()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "websocket":
            await serve_websocket(scope, receive, send, _worker(scope))
        elif kind == "lifespan":
            await run_lifespan(scope, receive, send, self._settings, self._hub_factory)
        # Other scope types (from newer servers) are not ours: returning ignores them.

    async def _http(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        head = scope["method"] == "HEAD"
        if path == "/":
            route = INDEX_FILE
        elif path == "/status":
            route = STATUS_FILE
        elif path.startswith(STATIC_PREFIX):
            route = path.removeprefix(STATIC_PREFIX)
        elif path in COMPUTED_PATHS:
            route = None
        else:
            await send_error(send, 404, "Not Found", head=head)
            return
        if path in METRICS_PATHS and not await self._metrics_allowed(scope, send):
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await send_error(send, 405, "Method Not Allowed", headers=[ALLOW])
            return
        if path == "/healthz":
            await self._health(scope, send)
        elif path == "/rooms":
            await self._rooms(scope, send)
        elif path == "/metrics":
            await self._metrics(scope, send)
        elif route is not None:
            worker = _worker(scope)
            static = worker.static if worker else self._fallback_static
            await static.serve(scope, send, route)

    async def _health(self, scope: Scope, send: Send) -> None:
        worker = _worker(scope)
        hub_up = worker is not None and worker.link.connected
        await send_json(
            send,
            200 if hub_up else 503,
            {
                "status": "ok" if hub_up else "degraded",
                "pid": worker.pid if worker else None,
                "connections": worker.connections if worker else 0,
                "hub": hub_up,
                # For spotting leaks from outside (bench/soak.py): both stay flat under churn.
                "tasks": _count_tasks(),
                "threads": threading.active_count(),
            },
            head=scope["method"] == "HEAD",
        )

    async def _rooms(self, scope: Scope, send: Send) -> None:
        """The busiest rooms, as the ``rooms`` frame lists them."""
        worker = _worker(scope)
        head = scope["method"] == "HEAD"
        try:
            rooms = None if worker is None else await worker.busiest_rooms()
        except HubUnavailable:
            rooms = None
        if rooms is None:
            await send_json(send, 503, {"error": "hub_unavailable"}, head=head)
        else:
            await send_json(send, 200, {"rooms": rooms_listing(rooms)}, head=head)

    async def _metrics_allowed(self, scope: Scope, send: Send) -> bool:
        """Whether the client may have ``/metrics`` or ``/status``; if not, answers it."""
        head = scope["method"] == "HEAD"
        worker = _worker(scope)
        if worker is None:
            # No lifespan, so no settings read and no figures to give.
            await send_error(send, 503, "Service Unavailable", head=head)
            return False
        client = scope.get("client")
        verdict = worker.settings.metrics.verdict(client[0] if client else None)
        if verdict is not Verdict.ALLOWED:
            await send_error(send, verdict, HTTPStatus(verdict).phrase, head=head)
        return verdict is Verdict.ALLOWED

    async def _metrics(self, scope: Scope, send: Send) -> None:
        """The whole server's figures, whichever worker takes the scrape; 503 while the hub
        cannot be reached (the whole server's figures cannot be had, and this worker's alone
        would make the counters look reset)."""
        worker = _worker(scope)
        assert worker is not None  # _metrics_allowed answered 503 otherwise.
        head = scope["method"] == "HEAD"
        try:
            figures = await worker.server_figures()
        except HubUnavailable:
            await send_error(send, 503, "Service Unavailable: the hub cannot be reached", head=head)
            return
        body = await worker.render_metrics(figures)
        await send_response(
            send,
            200,
            body,
            content_type=exposition.CONTENT_TYPE,
            # Which worker answered: the figures are the whole server's whichever it was, and
            # this says so to whoever checks (the end-to-end tests do).
            headers=[(b"cache-control", b"no-store"), (WORKER_HEADER, str(worker.pid).encode())],
            head=head,
        )


def _count_tasks() -> int:
    """Trio tasks in this worker's run: Hypercorn's, this request's and the chat's."""
    count = 0
    waiting = [trio.lowlevel.current_root_task()]
    while waiting:
        task = waiting.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            waiting.extend(nursery.child_tasks)
    return count


def _worker(scope: Scope) -> Worker | None:
    worker = scope.get("state", {}).get(STATE_KEY)
    return worker if isinstance(worker, Worker) else None
