"""Who may read ``/metrics`` and ``/status``: ``TRIO_CHAT_METRICS``.

- ``on`` (the default): anyone who can reach the chat, like ``/healthz``. The figures hold no
  names and no message content, only counts.
- ``off``: both paths answer 404, as paths that do not exist.
- a comma-separated allowlist of client addresses and networks (``127.0.0.1,10.0.0.0/8,::1``):
  a client outside it gets 403.

The address checked is the peer of the TCP connection as Hypercorn reports it (ASGI
``scope["client"]``): behind a reverse proxy that is the proxy's address, so there the proxy
is what the allowlist admits or not. An IPv4 client reaching a dual-stack socket shows up as
``::ffff:a.b.c.d``; it is checked as the IPv4 address it is too, so ``127.0.0.1`` covers it. A
client whose address is unknown (a Unix socket) is outside every allowlist.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Verdict(enum.IntEnum):
    """What a request for the metrics gets, as the HTTP status that answers it."""

    ALLOWED = 200
    FORBIDDEN = 403
    #: The metrics are off: answered like a path that does not exist.
    HIDDEN = 404


@dataclasses.dataclass(frozen=True)
class MetricsAccess:
    """``enabled`` False: off. ``allowed`` None: anyone; else only clients in these networks."""

    enabled: bool = True
    allowed: tuple[Network, ...] | None = None

    def verdict(self, client_host: str | None) -> Verdict:
        """Whether a client at ``client_host`` (None: unknown) may read the metrics."""
        if not self.enabled:
            return Verdict.HIDDEN
        if self.allowed is None:
            return Verdict.ALLOWED
        addresses = _client_addresses(client_host)
        if any(address in network for address in addresses for network in self.allowed):
            return Verdict.ALLOWED
        return Verdict.FORBIDDEN

    def describe(self) -> str:
        """The setting as ``TRIO_CHAT_METRICS`` would spell it."""
        if not self.enabled:
            return "off"
        if self.allowed is None:
            return "on"
        return ",".join(str(network) for network in self.allowed)


#: ``on``: anyone who can reach the chat.
ANYONE = MetricsAccess()


def parse_metrics_access(raw: str) -> MetricsAccess:
    """``on``, ``off`` or an allowlist; raises ValueError naming the entry it cannot read."""
    word = raw.strip().lower()
    if word == "on":
        return ANYONE
    if word == "off":
        return MetricsAccess(enabled=False)
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if not entries:
        raise ValueError("expected on, off, or a comma-separated list of addresses and networks")
    return MetricsAccess(allowed=tuple(_network(entry) for entry in entries))


def _network(entry: str) -> Network:
    try:
        # strict=False: "10.1.2.3/8" means the /8 it is in, as firewalls read it.
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(
            f"{entry!r} is not an address or network (expected on, off, or a comma-separated "
            "list such as 127.0.0.1,10.0.0.0/8,::1)"
        ) from None


def _client_addresses(host: str | None) -> tuple[Address, ...]:
    """The client's address, and the IPv4 one an IPv4-mapped IPv6 address stands for."""
    if host is None:
        return ()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # Not an IP address: a Unix socket's path, or nothing we can place.
        return ()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return (address, address.ipv4_mapped)
    return (address,)
