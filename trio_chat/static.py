"""The page and its assets, served from the ``static/`` folder, and never anything outside it.

Paths are checked twice: by rule first (no ``..``, no empty, dot or hidden segment, no
backslash, NUL or absolute path; Hypercorn has already decoded ``%2e%2e`` into ``..``), then by
resolving the real path and requiring it to stay under the folder (which also defeats symlinks
pointing out). Responses carry an ETag and Last-Modified and answer a matching conditional
request with 304; assets are marked ``no-cache`` so that browsers revalidate them every time.

The ETag is a hash of the content, computed on every request: modification time and size are
not enough, since an edit that keeps the size, copied with its mtime (``rsync -t``, ``tar``),
would keep them too and be served stale for ever. The files are small, and a request reads the
whole file anyway for its body, so this costs a hash of a few kilobytes. (A cache keyed on the
file's stat would be right only with ``st_ctime_ns`` in the key, and saves next to nothing.)
"""

from __future__ import annotations

import hashlib
import os
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import trio

from .asgi_types import Scope, Send
from .responses import send_error, send_response

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
    ".webmanifest": b"application/manifest+json",
}
DEFAULT_CONTENT_TYPE = b"application/octet-stream"


def default_static_dir() -> Path:
    """``trio_chat/static`` in an installed wheel, else ``static/`` beside the package."""
    package_dir = Path(__file__).resolve().parent
    packaged = package_dir / "static"
    return packaged if packaged.is_dir() else package_dir.parent / "static"


def is_safe_relative_path(name: str) -> bool:
    """Whether ``name`` (what follows ``/static/``) may name a file under the folder."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return False
    return all(segment and not segment.startswith(".") for segment in name.split("/"))


class StaticFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    async def resolve(self, name: str) -> Path | None:
        """The file ``name`` stands for, or None if it is not a file inside the folder."""
        if not is_safe_relative_path(name):
            return None
        try:
            path = await trio.Path(self.directory, name).resolve()
            if os.path.commonpath([self.directory, path]) != str(self.directory):
                return None
            return Path(path) if await trio.Path(path).is_file() else None
        except (OSError, RuntimeError):
            # A name too long for the file system, a symlink loop (RuntimeError on 3.11):
            # whatever the client asked for, it is not a file we serve.
            return None

    async def serve(self, scope: Scope, send: Send, name: str) -> None:
        head = scope["method"] == "HEAD"
        path = await self.resolve(name)
        try:
            if path is None:
                raise FileNotFoundError(name)
            info = await trio.Path(path).stat()
            # Read for HEAD and 304s too: the ETag is the content's.
            body = await trio.Path(path).read_bytes()
        except OSError:  # Not there, or gone between the check and the read.
            await send_error(send, 404, "Not Found", head=head)
            return
        etag = content_etag(body)
        headers = [
            (b"etag", etag),
            (b"last-modified", formatdate(info.st_mtime, usegmt=True).encode()),
            (b"cache-control", b"no-cache"),
        ]
        if _not_modified(scope, etag, info.st_mtime):
            await send_response(send, 304, headers=headers, content_type=None, with_length=False)
            return
        content_type = CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)
        await send_response(send, 200, body, headers=headers, content_type=content_type, head=head)


def content_etag(body: bytes) -> bytes:
    """A strong ETag naming ``body``: 128 bits of its SHA-256, quoted."""
    return b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


def _not_modified(scope: Scope, etag: bytes, mtime: float) -> bool:
    headers = dict(scope["headers"])
    if_none_match = headers.get(b"if-none-match")
    if if_none_match is not None:
        # RFC 9110 13.1.2: a weak comparison, and If-Modified-Since is ignored when present.
        candidates = {tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")}
        return b"*" in candidates or etag in candidates
    if_modified_since = headers.get(b"if-modified-since")
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since.decode("latin-1")).timestamp()
    except (ValueError, TypeError, OverflowError):  # Not a date we can compare: ignore it.
        return False
    return int(mtime) <= since
