"""The app's HTTP routes, driven in-process: the page, /healthz, 404 and 405, security headers.

What ``static.py`` does with a file (content types, caching, path safety) is in test_static.py;
what ``GET /rooms`` lists is in test_app_rooms.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.static import default_static_dir

from asgi_driver import (
    APP_TIMEOUT_SECONDS,
    Response,
    StartedWorker,
    chat_app,
    open_chat,
    request,
    running_worker,
)

STATIC_DIR = default_static_dir()


async def get(app: ChatApp, state: dict[str, Any], path: str, method: str = "GET") -> Response:
    return await request(app, state, method, path)


async def test_root_serves_the_page_as_utf8_html(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/")

    page = (STATIC_DIR / "index.html").read_bytes()
    assert response.status == 200
    assert response.body == page
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(page))
    assert response.headers["etag"]
    assert response.headers["last-modified"].endswith(" GMT")
    # Revalidated on every load, like its assets, so a deploy shows at once.
    assert response.headers["cache-control"] == "no-cache"


async def test_assets_are_revalidated_on_every_load(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/static/app.js")

    assert response.status == 200
    assert response.headers["cache-control"] == "no-cache"


async def test_head_of_the_page_has_the_get_headers_and_no_body(
    started_worker: StartedWorker,
) -> None:
    app, state = started_worker.app, started_worker.state
    got = await get(app, state, "/")
    head = await get(app, state, "/", method="HEAD")

    assert head.status == 200
    assert head.headers == got.headers
    assert head.body == b""


async def test_static_dir_setting_chooses_the_folder_the_page_comes_from(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>mine</p>")
    app = chat_app(LocalHub(), Settings(static_dir=tmp_path))
    async with running_worker(app) as state:
        response = await get(app, state, "/")

    assert response.body == b"<p>mine</p>"


async def test_static_dir_from_the_environment_chooses_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "index.html").write_text("<p>from env</p>")
    monkeypatch.setenv("TRIO_CHAT_HUB", "local")
    monkeypatch.setenv("TRIO_CHAT_STATIC_DIR", str(tmp_path))
    app = ChatApp()
    async with running_worker(app) as state:
        response = await get(app, state, "/")

    assert response.body == b"<p>from env</p>"


@pytest.mark.parametrize(
    "path",
    [
        "/index.html",  # the page is at /, not under its file name
        "/static",
        "/static/",
        "/staticx/app.js",
        "/chat",  # the WebSocket endpoint is not a page
        "/healthz/",
        "/rooms/",
        "/room",
        "/favicon.ico",
        "/nope",
    ],
)
async def test_unknown_path_is_404(path: str, started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, path)

    assert response.status == 404
    assert response.body == b"404 Not Found\n"


async def test_head_of_unknown_path_is_404_without_body(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/nope", method="HEAD")

    assert response.status == 404
    assert response.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/static/app.js", "/healthz", "/rooms"])
async def test_other_methods_on_known_paths_are_405_with_allow(
    method: str, path: str, started_worker: StartedWorker
) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, path, method=method)

    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_other_methods_on_unknown_paths_are_404_not_405(
    method: str, started_worker: StartedWorker
) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/nope", method=method)

    assert response.status == 404
    assert "allow" not in response.headers


# Security headers: every kind of response carries them.


async def _responses_of_every_kind() -> dict[str, Response]:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state:
        page = await get(app, state, "/")
        responses = {
            "page": page,
            "asset": await get(app, state, "/static/app.js"),
            "not_modified": await request(
                app, state, "GET", "/", headers=[(b"if-none-match", page.headers["etag"].encode())]
            ),
            "not_found": await get(app, state, "/nope"),
            "method_not_allowed": await get(app, state, "/", method="POST"),
            "health": await get(app, state, "/healthz"),
        }
        hub.connected = False
        responses["health_degraded"] = await get(app, state, "/healthz")
        responses["rooms_unavailable"] = await get(app, state, "/rooms")
        hub.connected = True
        responses["rooms"] = await get(app, state, "/rooms")
    return responses


async def test_every_response_carries_the_security_headers() -> None:
    responses = await _responses_of_every_kind()

    statuses = sorted(response.status for response in responses.values())
    assert statuses == [200, 200, 200, 200, 304, 404, 405, 503, 503]
    for kind, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", kind
        assert response.headers["referrer-policy"] == "no-referrer", kind
        assert "content-security-policy" in response.headers, kind


async def test_content_security_policy_allows_only_own_files_and_nothing_inline(
    started_worker: StartedWorker,
) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/")

    directives = [
        directive.split() for directive in response.headers["content-security-policy"].split(";")
    ]
    # Every directive, exactly: a source added anywhere (data:, a CDN, 'unsafe-inline') fails.
    assert directives == [
        ["default-src", "'self'"],
        ["script-src", "'self'"],
        ["style-src", "'self'"],
        ["img-src", "'self'"],
        ["connect-src", "'self'"],
        ["base-uri", "'none'"],
        ["frame-ancestors", "'none'"],
        ["form-action", "'self'"],
    ]


# /healthz


async def test_healthz_reports_pid_connections_and_hub(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/healthz")

    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    health = response.json()
    tasks, threads = health.pop("tasks"), health.pop("threads")
    assert health == {"status": "ok", "pid": os.getpid(), "connections": 0, "hub": True}
    # This run's tasks (the worker's, the lifespan's, this request's), and live threads.
    assert tasks >= 3 and threads == threading.active_count()


async def test_healthz_counts_open_websocket_sessions(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    async with open_chat(app, state), open_chat(app, state) as bob:
        two = (await get(app, state, "/healthz")).json()
        await bob.disconnect()
        one = (await get(app, state, "/healthz")).json()
    none = (await get(app, state, "/healthz")).json()

    assert (two["connections"], one["connections"], none["connections"]) == (2, 1, 0)


async def test_healthz_is_503_while_the_hub_is_unreachable() -> None:
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state:
        hub.connected = False
        down = await get(app, state, "/healthz")
        hub.connected = True
        up = await get(app, state, "/healthz")

    assert down.status == 503
    assert down.json()["hub"] is False
    assert down.json()["status"] == "degraded"
    assert up.status == 200


async def test_healthz_is_503_when_the_worker_never_started() -> None:
    app = chat_app(LocalHub())

    response = await request(app, None, "GET", "/healthz")

    assert response.status == 503
    assert response.json()["hub"] is False


async def test_head_of_healthz_has_status_and_no_body(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/healthz", method="HEAD")

    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-type"] == "application/json"


# Scope types


async def test_unknown_scope_type_is_ignored() -> None:
    app = chat_app(LocalHub())

    async def receive() -> Any:
        raise AssertionError("the app must not receive on a scope it does not handle")

    async def send(message: Any) -> None:
        raise AssertionError(f"the app must not send on a scope it does not handle: {message}")

    with trio.fail_after(APP_TIMEOUT_SECONDS):
        await app({"type": "foo", "asgi": {"version": "3.0"}}, receive, send)
