"""Sending plain HTTP responses over ASGI, and the headers every response carries."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .asgi_types import Send

# The page loads only its own files and talks only to its own server; nothing inline, nothing
# from elsewhere (not even data: URLs: the page has no image but its own favicon.svg), so what
# someone types can never become code on another's page.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


async def send_response(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes | None = b"text/plain; charset=utf-8",
    headers: Iterable[tuple[bytes, bytes]] = (),
    head: bool = False,
    with_length: bool = True,
) -> None:
    """Send a whole response; with ``head``, the headers of it without the body.

    ``with_length=False`` is for 304s, whose Content-Length would describe the body not sent.
    """
    all_headers = [*SECURITY_HEADERS, *headers]
    if content_type is not None:
        all_headers.append((b"content-type", content_type))
    if with_length:
        all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_json(send: Send, status: int, document: Any, *, head: bool = False) -> None:
    await send_response(
        send,
        status,
        json.dumps(document).encode(),
        content_type=b"application/json",
        headers=[(b"cache-control", b"no-store")],
        head=head,
    )


async def send_error(
    send: Send,
    status: int,
    reason: str,
    *,
    head: bool = False,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send_response(send, status, f"{status} {reason}\n".encode(), head=head, headers=headers)
