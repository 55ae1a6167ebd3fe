"""GET/HEAD /metrics and /status, driven in-process: what they answer, who may have them
(TRIO_CHAT_METRICS), and that no name or message ever shows in them.

What each metric holds is in test_metrics_exposition.py; the whole server's figures across
real workers are in test_e2e_metrics.py; the page in Chromium is in test_browser_status.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from trio_chat import ChatApp
from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.metrics.access import parse_metrics_access
from trio_chat.static import default_static_dir

from asgi_driver import (
    NO_RATE_LIMIT,
    Response,
    StartedWorker,
    chat_app,
    open_chat,
    request,
    running_worker,
    worker,
)

STATIC_DIR = default_static_dir()
METRICS_PATHS = ["/metrics", "/status"]


async def get(app: ChatApp, state: dict[str, Any], path: str, method: str = "GET") -> Response:
    return await request(app, state, method, path)


def samples(response: Response) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics body, by name and labels."""
    families = text_string_to_metric_families(response.body.decode())
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }


def value(response: Response, name: str, **labels: str) -> float:
    return samples(response)[(name, frozenset(labels.items()))]


def with_metrics(setting: str) -> Settings:
    return dataclasses.replace(NO_RATE_LIMIT, metrics=parse_metrics_access(setting))


# GET and HEAD /metrics


async def test_metrics_are_the_prometheus_text_format(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/metrics")

    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-length"] == str(len(response.body))
    # The worker that answered names itself.
    assert response.headers["x-trio-chat-worker"] == str(os.getpid())
    assert value(response, "trio_chat_connections") == 0
    assert value(response, "trio_chat_workers") == 1
    assert value(response, "trio_chat_hub_up", worker=str(os.getpid())) == 1
    assert value(response, "trio_chat_messages_published_total") == 0


async def test_head_of_metrics_has_the_get_headers_and_no_body(
    started_worker: StartedWorker,
) -> None:
    app, state = started_worker.app, started_worker.state
    got = await get(app, state, "/metrics")
    head = await get(app, state, "/metrics", method="HEAD")

    assert head.status == 200
    assert head.body == b""
    # The length may differ by a digit or two: the process's own figures change meanwhile.
    assert {k: v for k, v in head.headers.items() if k != "content-length"} == {
        k: v for k, v in got.headers.items() if k != "content-length"
    }
    assert int(head.headers["content-length"]) > 0


async def test_metrics_count_connections_and_messages_published() -> None:
    async with worker(LocalHub()) as (app, state):
        async with open_chat(app, state) as ann, open_chat(app, state):
            for n in range(3):
                await ann.send_json({"type": "message", "sender": "ann", "message": f"hi {n}"})
                await ann.receive_json()
            during = await get(app, state, "/metrics")
        after = await get(app, state, "/metrics")

    assert value(during, "trio_chat_connections") == 2
    assert value(during, "trio_chat_worker_connections", worker=str(os.getpid())) == 2
    assert value(during, "trio_chat_messages_published_total") == 3
    assert value(after, "trio_chat_connections") == 0
    assert value(after, "trio_chat_messages_published_total") == 3


async def test_metrics_answer_503_while_the_hub_is_unreachable() -> None:
    """The whole server's figures cannot be had: this worker's alone would make every counter
    look reset to Prometheus, and the others' old ones could make one go backwards."""
    hub = LocalHub()
    app = chat_app(hub)
    async with running_worker(app) as state:
        hub.connected = False
        down = await get(app, state, "/metrics")
        hub.connected = True
        up = await get(app, state, "/metrics")

    assert down.status == 503
    assert b"hub" in down.body
    assert up.status == 200
    assert value(up, "trio_chat_hub_up", worker=str(os.getpid())) == 1


async def test_nothing_of_names_rooms_or_messages_is_in_the_metrics() -> None:
    secrets = ["zelda-the-sender", "secret-room-xyz", "the password is swordfish"]
    async with worker(LocalHub()) as (app, state):
        async with open_chat(app, state, query_string=b"name=zelda-the-sender") as zelda:
            await zelda.join("secret-room-xyz")
            await zelda.send_json(
                {
                    "type": "message",
                    "room": "secret-room-xyz",
                    "sender": "zelda-the-sender",
                    "message": "the password is swordfish",
                }
            )
            await zelda.receive_json()
            during = await get(app, state, "/metrics")
        after = await get(app, state, "/metrics")

    assert value(during, "trio_chat_messages_published_total") == 1
    for body in (during.body.decode(), after.body.decode()):
        for secret in secrets:
            assert secret not in body
            assert secret.split()[-1] not in body
    # Every label value is a pid, a code, a reason, a process kind or a bucket bound.
    label_values = {v for _, labels in samples(during) for _, v in labels}
    allowed = re.compile(r"^(\d+|[a-z_]+|\+Inf|\d+\.\d+(e-\d+)?)$")
    assert all(allowed.match(v) for v in label_values), label_values


async def test_metrics_without_a_started_worker_are_503() -> None:
    app = chat_app(LocalHub())

    for path in METRICS_PATHS:
        response = await request(app, None, "GET", path)
        assert response.status == 503


# /status


async def test_status_serves_the_status_page(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, "/status")

    assert response.status == 200
    assert response.body == (STATIC_DIR / "status.html").read_bytes()
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "content-security-policy" in response.headers
    head = await get(app, state, "/status", method="HEAD")
    assert (head.status, head.body) == (200, b"")


async def test_every_file_the_status_page_loads_is_served(started_worker: StartedWorker) -> None:
    app, state = started_worker.app, started_worker.state
    page = (STATIC_DIR / "status.html").read_text()
    wanted = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page))
    modules = ["status.js"]
    while modules:  # Follow the ES module imports.
        name = modules.pop()
        wanted.add(f"/static/{name}")
        source = (STATIC_DIR / name).read_text()
        imports = re.findall(r"from '\./([^']+)'", source)
        modules.extend(m for m in imports if f"/static/{m}" not in wanted)

    assert {"/static/status.js", "/static/style.css", "/static/status-chart.js"} <= wanted
    for path in sorted(wanted):
        response = await get(app, state, path)
        assert response.status == 200, path


# TRIO_CHAT_METRICS


@pytest.mark.parametrize("path", METRICS_PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
async def test_off_answers_404_as_for_a_path_that_does_not_exist(path: str, method: str) -> None:
    async with worker(LocalHub(), with_metrics("off")) as (app, state):
        response = await get(app, state, path, method=method)
        unknown = await get(app, state, "/nope", method=method)

    assert (response.status, response.body, response.headers) == (
        unknown.status,
        unknown.body,
        unknown.headers,
    )


@pytest.mark.parametrize("path", METRICS_PATHS)
@pytest.mark.parametrize("allowlist", ["127.0.0.1", "10.0.0.0/8,127.0.0.0/8", "::1,127.0.0.1"])
async def test_a_client_in_the_allowlist_is_served(path: str, allowlist: str) -> None:
    # The driver's requests come from 127.0.0.1.
    async with worker(LocalHub(), with_metrics(allowlist)) as (app, state):
        response = await get(app, state, path)

    assert response.status == 200


@pytest.mark.parametrize("path", METRICS_PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
async def test_a_client_outside_the_allowlist_is_403(path: str, method: str) -> None:
    async with worker(LocalHub(), with_metrics("10.0.0.0/8,::1")) as (app, state):
        response = await get(app, state, path, method=method)
        health = await get(app, state, "/healthz")

    assert response.status == 403
    assert response.body == (b"" if method == "HEAD" else b"403 Forbidden\n")
    assert "x-content-type-options" in response.headers
    assert health.status == 200  # Only the metrics are limited.


async def test_the_allowlist_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_CHAT_HUB", "local")
    monkeypatch.setenv("TRIO_CHAT_METRICS", "192.0.2.0/24")
    app = ChatApp()
    async with running_worker(app) as state:
        response = await get(app, state, "/metrics")

    assert response.status == 403


@pytest.mark.parametrize("path", METRICS_PATHS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_other_methods_are_405_for_an_allowed_client(
    path: str, method: str, started_worker: StartedWorker
) -> None:
    app, state = started_worker.app, started_worker.state
    response = await get(app, state, path, method=method)

    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
