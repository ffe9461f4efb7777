"""Who the client is and which scheme it used, believing forwarded headers only from trusted proxies."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import Scope

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ip_address(value.strip())
    except ValueError:
        return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def address_bucket(address: str, ipv6_prefix: int) -> str:
    """The per-IP rate-limit bucket of a client address: an IPv4 address itself, an IPv6 address's
    network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``), since one subscriber is handed a whole
    /64 (or more) and could otherwise pick a fresh bucket per request. An IPv4-mapped IPv6 address
    is its IPv4 address; anything unparsable stays as it is."""
    parsed = _parse_ip(address)
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    if isinstance(parsed, IPv6Address):
        return str(IPv6Network((parsed, ipv6_prefix), strict=False))
    return address


@dataclass(frozen=True)
class TrustedProxies:
    """``X-Forwarded-For`` and ``X-Forwarded-Proto`` are honoured only when the peer that sent the
    request is inside one of ``cidrs``; otherwise anyone could pick their own rate-limit bucket."""

    cidrs: tuple[str, ...] = ()

    @cached_property
    def networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ip_network(cidr, strict=False) for cidr in self.cidrs)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def _peer(self, scope: Scope) -> str | None:
        client = scope.get("client")
        return str(client[0]) if client else None

    def client_ip(self, scope: Scope) -> str:
        """The nearest untrusted address in the forwarding chain (right to left), so a client
        cannot spoof its address by prepending entries to X-Forwarded-For."""
        peer = self._peer(scope)
        if peer is None:
            return "unknown"
        if not self.trusts(_parse_ip(peer)):
            return peer
        hops = [hop.strip() for hop in _header(scope, b"x-forwarded-for").split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _parse_ip(hop)
            if address is None:
                return peer  # a garbled chain is not evidence of anything: use the proxy itself
            if not self.trusts(address):
                return str(address)
        return str(_parse_ip(hops[0])) if hops else peer

    def is_https(self, scope: Scope) -> bool:
        if scope.get("scheme") == "https":
            return True
        if not self.trusts(_parse_ip(self._peer(scope) or "")):
            return False
        forwarded = _header(scope, b"x-forwarded-proto").split(",")[0].strip().lower()
        return forwarded == "https"
