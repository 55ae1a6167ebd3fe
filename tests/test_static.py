"""static.py through the app: content types, Content-Length, caching and 304s, and no escape.

Escape attempts run against a temporary static folder with a secret file beside it, so a
successful escape would show the secret rather than depend on what the repository holds.
Paths are given decoded, as Hypercorn puts them in ``scope["path"]``.
"""

from __future__ import annotations

import os
import re
from email.utils import formatdate
from pathlib import Path

import pytest

from trio_chat.config import Settings
from trio_chat.hub_link.local import LocalHub
from trio_chat.static import default_static_dir, is_safe_relative_path

from asgi_driver import Response, chat_app, request

STATIC_DIR = default_static_dir()
SECRET = b"the secret outside static/"
#: A fixed mtime for temporary files: 2023-11-14 22:13:20 UTC.
MTIME = 1_700_000_000


async def fetch(
    path: str,
    *,
    static_dir: Path | None = None,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    """One request to an app serving ``static_dir`` (by default the shipped folder).

    Static files need no worker, so no lifespan runs here.
    """
    app = chat_app(LocalHub(), Settings(static_dir=static_dir))
    return await request(app, None, method, path, headers=headers or [])


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    """tmp/static/{a.txt, page.html, sub/b.txt, .hidden, links out}, and tmp/secret.txt."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    folder = tmp_path / "static"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"a")
    (folder / "page.html").write_bytes(b"<p>page</p>")
    (folder / "sub" / "b.txt").write_bytes(b"b")
    (folder / ".hidden").write_bytes(SECRET)
    (folder / "escape").symlink_to(tmp_path / "secret.txt")
    (folder / "escape-relative").symlink_to(Path("..") / "secret.txt")
    (folder / "outside-dir").symlink_to(tmp_path, target_is_directory=True)
    for path in (folder / "a.txt", folder / "page.html", folder / "sub" / "b.txt"):
        os.utime(path, (MTIME, MTIME))
    return folder


# Content


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/static/index.html", "index.html", "text/html; charset=utf-8"),
        ("/static/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/static/view.js", "view.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "style.css", "text/css; charset=utf-8"),
        ("/static/favicon.svg", "favicon.svg", "image/svg+xml"),
    ],
)
async def test_shipped_files_are_served_with_their_content_type(
    path: str, file: str, content_type: str
) -> None:
    response = await fetch(path)

    content = (STATIC_DIR / file).read_bytes()
    assert response.status == 200
    assert response.body == content
    assert response.headers["content-type"] == content_type
    assert response.headers["content-length"] == str(len(content))


async def test_unknown_suffix_is_served_as_octet_stream(static_dir: Path) -> None:
    (static_dir / "data.bin").write_bytes(b"\x00\x01")

    response = await fetch("/static/data.bin", static_dir=static_dir)

    assert response.headers["content-type"] == "application/octet-stream"
    assert response.body == b"\x00\x01"


async def test_file_in_a_subfolder_is_served(static_dir: Path) -> None:
    response = await fetch("/static/sub/b.txt", static_dir=static_dir)

    assert response.status == 200
    assert response.body == b"b"


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/favicon.svg"])
async def test_head_has_the_get_headers_and_an_empty_body(path: str) -> None:
    got = await fetch(path)
    head = await fetch(path, method="HEAD")

    assert head.status == 200
    assert head.headers == got.headers
    assert head.body == b""


async def test_assets_must_be_revalidated_and_carry_validators(static_dir: Path) -> None:
    response = await fetch("/static/a.txt", static_dir=static_dir)

    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])


async def test_etag_changes_when_the_file_changes(static_dir: Path) -> None:
    before = await fetch("/static/a.txt", static_dir=static_dir)
    (static_dir / "a.txt").write_bytes(b"changed")
    after = await fetch("/static/a.txt", static_dir=static_dir)

    assert after.body == b"changed"
    assert after.headers["etag"] != before.headers["etag"]


async def test_same_size_edit_that_keeps_the_mtime_is_not_served_stale(static_dir: Path) -> None:
    # What `rsync -t` or `tar x` leave: new content, same size, the old modification time.
    page = static_dir / "page.html"
    before = await fetch("/static/page.html", static_dir=static_dir)
    page.write_bytes(b"<p>PAGE</p>")
    os.utime(page, (MTIME, MTIME))

    revalidated = await fetch(
        "/static/page.html",
        static_dir=static_dir,
        headers=[(b"if-none-match", before.headers["etag"].encode())],
    )

    assert revalidated.status == 200
    assert revalidated.body == b"<p>PAGE</p>"
    assert revalidated.headers["etag"] != before.headers["etag"]


async def test_etag_follows_the_content_not_the_file(static_dir: Path) -> None:
    a = await fetch("/static/a.txt", static_dir=static_dir)
    (static_dir / "copy.txt").write_bytes(b"a")  # same bytes, another name and mtime

    copy = await fetch("/static/copy.txt", static_dir=static_dir)

    assert copy.headers["etag"] == a.headers["etag"]


# Conditional requests


async def _etag(static_dir: Path) -> str:
    return (await fetch("/static/a.txt", static_dir=static_dir)).headers["etag"]


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_matching_if_none_match_is_304_without_body(static_dir: Path, form: str) -> None:
    etag = await _etag(static_dir)

    response = await fetch(
        "/static/a.txt",
        static_dir=static_dir,
        headers=[(b"if-none-match", form.format(etag=etag).encode())],
    )

    assert response.status == 304
    assert response.body == b""
    assert response.headers["etag"] == etag
    assert "content-length" not in response.headers
    assert "content-type" not in response.headers


async def test_non_matching_if_none_match_is_200_even_if_not_modified_since(
    static_dir: Path,
) -> None:
    # RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    response = await fetch(
        "/static/a.txt",
        static_dir=static_dir,
        headers=[
            (b"if-none-match", b'"not-the-etag"'),
            (b"if-modified-since", formatdate(MTIME + 60, usegmt=True).encode()),
        ],
    )

    assert response.status == 200
    assert response.body == b"a"


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (formatdate(MTIME, usegmt=True), 304),  # exactly Last-Modified
        (formatdate(MTIME + 3600, usegmt=True), 304),
        (formatdate(MTIME - 1, usegmt=True), 200),
        ("not a date", 200),
        ("", 200),
    ],
)
async def test_if_modified_since(static_dir: Path, since: str, status: int) -> None:
    response = await fetch(
        "/static/a.txt", static_dir=static_dir, headers=[(b"if-modified-since", since.encode())]
    )

    assert response.status == status
    assert response.body == (b"" if status == 304 else b"a")


async def test_page_answers_its_own_etag_with_304() -> None:
    etag = (await fetch("/")).headers["etag"]

    response = await fetch("/", headers=[(b"if-none-match", etag.encode())])

    assert response.status == 304
    assert response.body == b""


# No escape from the folder


@pytest.mark.parametrize(
    "path",
    [
        "/static/../secret.txt",  # what Hypercorn makes of /static/%2e%2e/secret.txt
        "/static/%2e%2e/secret.txt",  # a literal %2e%2e (the client encoded the percent sign)
        "/static/sub/../../secret.txt",
        "/static/sub/../a.txt",  # '..' is refused anywhere, even when it would stay inside
        "/static/./a.txt",
        "/static/..",
        "/static//etc/passwd",
        "/static/..\\secret.txt",
        "/static/sub\\b.txt",
        "/static/a.txt\x00.html",
        "/static/.hidden",
        "/static/sub/",  # empty segment
        "/static/sub",  # a directory
        "/static/escape",  # symlink to an absolute path outside
        "/static/escape-relative",  # symlink to ../secret.txt
        "/static/outside-dir/secret.txt",  # through a symlinked directory
        "/static/missing.txt",
    ],
)
async def test_paths_that_do_not_name_a_file_inside_the_folder_are_404(
    static_dir: Path, path: str
) -> None:
    response = await fetch(path, static_dir=static_dir)

    assert response.status == 404
    assert SECRET not in response.body


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pyproject.toml",
        "/static/../trio_chat/asgi.py",
        "/static/%2e%2e/pyproject.toml",
        "/static/..\\pyproject.toml",
        "/static/../static/index.html",
    ],
)
async def test_shipped_folder_does_not_leak_the_repository(path: str) -> None:
    response = await fetch(path)

    assert response.status == 404


async def test_overlong_file_name_is_404(static_dir: Path) -> None:
    response = await fetch("/static/" + "a" * 300, static_dir=static_dir)

    assert response.status == 404


async def test_symlink_loop_in_the_folder_is_404(static_dir: Path) -> None:
    (static_dir / "loop").symlink_to("loop")

    response = await fetch("/static/loop", static_dir=static_dir)

    assert response.status == 404


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("app.js", True),
        ("sub/b.txt", True),
        ("a..b.txt", True),  # dots inside a name are fine
        ("", False),
        ("..", False),
        ("../x", False),
        ("sub/../x", False),
        (".", False),
        (".hidden", False),
        ("sub/.git/config", False),
        ("/etc/passwd", False),
        ("a//b", False),
        ("sub/", False),
        ("..\\x", False),
        ("a\x00b", False),
    ],
)
def test_is_safe_relative_path(name: str, safe: bool) -> None:
    assert is_safe_relative_path(name) is safe


# The shipped page works under its own Content-Security-Policy


def _page() -> str:
    return (STATIC_DIR / "index.html").read_text()


async def test_every_file_the_page_and_its_scripts_reference_is_served() -> None:
    references = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', _page()))
    for script in STATIC_DIR.glob("*.js"):
        imports = re.findall(r"from '\./([^']+)'", script.read_text())
        references.update(f"/static/{name}" for name in imports)
    assert "/static/app.js" in references

    statuses = {path: (await fetch(path)).status for path in sorted(references)}

    assert set(statuses.values()) == {200}, statuses


def test_page_has_no_inline_script_or_style_that_the_policy_would_block() -> None:
    page = _page()

    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert re.findall(r"\sstyle=", page) == []
    assert re.findall(r"\son[a-z]+=", page) == []
    assert "javascript:" not in page
