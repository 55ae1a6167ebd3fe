"""Who may connect, and how fast they may talk: the handshake's Origin check, a per-address
connection cap and a per-connection token bucket. Pure rules, no I/O.

Cross-site WebSocket hijacking: a browser sends the page's ``Origin`` with every handshake and
lets any site open a WebSocket anywhere, so a handshake from another origin is refused unless
allowed. A handshake without ``Origin`` does not come from a browser page (which cannot omit
it), so it cannot be hijacked that way: it is allowed unless configured otherwise.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit


def origin_allowed(
    headers: Iterable[tuple[bytes, bytes]],
    allowed: frozenset[str],
    *,
    require_origin: bool = False,
) -> bool:
    """Whether a handshake with these headers may open a session.

    The page's own origin (the ``Host`` the browser asked for) is always allowed; ``allowed``
    adds others, as ``scheme://host[:port]``. The scheme of the page's own origin is not
    compared with the connection's: behind a proxy that ends TLS, an ``https`` page reaches us
    over plain ``ws``, and a page on ``http`` at the very same host and port is our own server.
    A handshake with two ``Origin`` (or ``Host``) headers is ambiguous, and refused.
    """
    found = _headers(headers)
    origins = found.get(b"origin", [])
    if not origins:
        return not require_origin
    hosts = found.get(b"host", [])
    if len(origins) > 1 or len(hosts) > 1:
        return False
    text = origins[0].decode("latin-1").strip().lower()
    if text in allowed:
        return True
    host = hosts[0].decode("latin-1").strip().lower() if hosts else ""
    # A browser's origin and host are plain ASCII with no spaces or controls; anything else is
    # not one (and ``urlsplit`` would drop tabs and line breaks before comparing).
    if not (_is_token(text) and _is_token(host)):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:  # Not a URL at all (e.g. an unclosed IPv6 bracket): not our origin.
        return False
    return parts.scheme in ("http", "https") and parts.netloc == host


def _is_token(text: str) -> bool:
    return bool(text) and all("!" <= char <= "~" for char in text)


def _headers(headers: Iterable[tuple[bytes, bytes]]) -> Mapping[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``rate`` 0 means no limit."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        """Spend a token if there is one."""
        if not self._rate:
            return True
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def next_token_at(self) -> float:
        """When a token will be there, on the bucket's clock: now if there is one."""
        if not self._rate:
            return self._clock()
        now = self._refill()
        return now if self._tokens >= 1 else now + (1 - self._tokens) / self._rate

    def spend(self) -> None:
        """Spend a token even if there is none: no debt runs up, so after any quiet spell the
        next token is never more than ``1 / rate`` away."""
        if self._rate:
            self._refill()
            self._tokens = max(0.0, self._tokens - 1)

    def _refill(self) -> float:
        """Add what the time since the last refill earned; returns the time now."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return now


class AddressCounter:
    """Open connections per client address, to cap them (``limit`` 0: no cap)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: collections.Counter[str] = collections.Counter()

    def try_open(self, address: str) -> bool:
        if self._limit and self._open[address] >= self._limit:
            return False
        self._open[address] += 1
        return True

    def close(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]
