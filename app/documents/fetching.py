"""Fetching a document from a URL without becoming a proxy into the operator's network (SSRF).

Safe by construction, not by filtering text:

* only ``http`` and ``https``, without credentials in the URL;
* the host name is resolved once per hop, and *every* address it resolves to must be public
  (``is_forbidden_address``): loopback, private, link-local, shared (CGNAT), multicast, reserved,
  unspecified and documentation ranges are refused, in IPv4 and IPv6, and so is an IPv6 address
  that embeds a forbidden IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo);
* the connection goes to the address that was checked, never to a second lookup of the name (no
  DNS rebinding): the request is made to the IP, with the original ``Host`` header and, for
  https, the original name as TLS SNI and as the name the certificate is verified against;
* redirects are followed here, one hop at a time, each hop checked like the first, at most
  ``max_redirects`` of them;
* the body is streamed and abandoned as soon as it passes ``max_bytes`` (decoded bytes, so a
  gzip bomb is cut too), and the whole fetch, lookups and redirects included, has one deadline;
* proxies from the environment are ignored (a proxy would resolve the name itself).

Operators reach intranet servers by listing their networks in ``URL_FETCH_ALLOW_CIDRS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from app.documents.errors import UrlForbiddenError, UrlTimeoutError, UrlTooLargeError, UrlUnreachableError

if TYPE_CHECKING:
    from app.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) → the addresses the name resolves to. Injected in tests; ``system_resolver`` otherwise.
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

USER_AGENT = "ragchat-url-ingestion/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 64 * 1024

# IPv6 ranges that carry an IPv4 address in their last 32 bits (NAT64 well-known and local-use
# prefixes; IPv4-compatible ``::a.b.c.d``). Mapped (``::ffff:``), 6to4 and Teredo have accessors.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The operating system's resolver, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, compatible, 6to4, NAT64, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in network for network in (*_NAT64, _IPV4_COMPATIBLE)):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _not_public(address: IPAddress) -> bool:
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def is_forbidden_address(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> bool:
    """True unless the address (and every IPv4 address it embeds) is public or in ``allow``. An
    IPv4-mapped address is the IPv4 address it maps, judged as that."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for candidate in (address, *embedded_ipv4(address)):
        if any(candidate in network for network in allow):
            continue
        if _not_public(candidate):
            return True
    return False


def parse_allow_list(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_s: float
    max_redirects: int
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.url_fetch_timeout_s,
            max_redirects=settings.url_fetch_max_redirects,
            allow=parse_allow_list(settings.url_fetch_allow_cidrs),
        )


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the content last fetched (for a conditional request)."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class VettedTarget:
    url: httpx.URL
    address: IPAddress


@dataclass(frozen=True)
class FetchedDocument:
    url: str  # after redirects
    content: bytes | None  # None: 304 Not Modified
    content_type: str | None
    validators: Validators

    @property
    def not_modified(self) -> bool:
        return self.content is None


def _header(value: str | None, limit: int) -> str | None:
    """A validator worth storing: present, printable and short (servers send what they like)."""
    if not value or len(value) > limit or not value.isprintable():
        return None
    return value


def _unreachable(host: str, exc: httpx.HTTPError) -> str:
    """In words, without the exception's class or text (job errors are shown to readers)."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc.__context__, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {host} could not be verified"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {host}"
    return f"the connection to {host} failed while reading the answer"


@dataclass(frozen=True)
class UrlFetcher:
    limits: FetchLimits
    resolver: Resolver = system_resolver
    verify: ssl.SSLContext | bool = True

    async def vet(self, url: str | httpx.URL) -> VettedTarget:
        """Check the URL and pick the address to connect to; raises ``UrlForbiddenError`` (scheme,
        credentials, forbidden address) or ``UrlUnreachableError`` (the name does not resolve)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise UrlForbiddenError("the URL cannot be parsed") from exc
        if parsed.scheme not in ("http", "https"):
            raise UrlForbiddenError("only http and https URLs can be fetched")
        if parsed.userinfo:
            raise UrlForbiddenError("a URL with credentials (user:password@) is not fetched")
        host = parsed.raw_host.decode("ascii")
        if not host:
            raise UrlForbiddenError("the URL has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses: Sequence[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise UrlUnreachableError(f"the host name {host!r} does not resolve") from exc
        if not addresses:
            raise UrlUnreachableError(f"the host name {host!r} does not resolve")
        for address in addresses:
            if is_forbidden_address(address, self.limits.allow):
                where = f"{address} is" if str(address) == host else f"{host} resolves to {address},"
                raise UrlForbiddenError(
                    f"{where} a loopback, private, link-local, multicast or reserved address; only "
                    "public addresses (or the networks in URL_FETCH_ALLOW_CIDRS) are fetched"
                )
        return VettedTarget(parsed, addresses[0])

    async def fetch(self, url: str, validators: Validators | None = None) -> FetchedDocument:
        """GET the URL, following at most ``max_redirects`` redirects, each one vetted; raises the
        ``Url*Error``s. ``validators`` make it a conditional request (a 304 has no content)."""
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await self._fetch(url, validators or Validators())
        except TimeoutError as exc:
            raise UrlTimeoutError(
                f"fetching the URL took longer than {self.limits.timeout_s:g} s (URL_FETCH_TIMEOUT_S)"
            ) from exc

    async def _fetch(self, url: str, validators: Validators) -> FetchedDocument:
        current = httpx.URL(url)
        timeout = httpx.Timeout(self.limits.timeout_s)
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, verify=self.verify, timeout=timeout
        ) as client:
            for _hop in range(self.limits.max_redirects + 1):
                target = await self.vet(current)
                try:
                    async with client.stream(
                        "GET",
                        target.url.copy_with(host=str(target.address)),
                        headers=self._headers(target.url, validators),
                        extensions=self._extensions(target.url),
                    ) as response:
                        location = response.headers.get("location")
                        if response.status_code in REDIRECT_STATUSES and location:
                            current = current.join(location)
                            continue
                        return await self._read(current, response)
                except httpx.TimeoutException as exc:
                    raise UrlTimeoutError("the server did not answer in time") from exc
                except httpx.HTTPError as exc:
                    raise UrlUnreachableError(_unreachable(target.url.host, exc)) from exc
        raise UrlUnreachableError(
            f"more than {self.limits.max_redirects} redirects (URL_FETCH_MAX_REDIRECTS)"
        )

    @staticmethod
    def _headers(url: httpx.URL, validators: Validators) -> dict[str, str]:
        return {
            "Host": url.netloc.decode("ascii"),
            "User-Agent": USER_AGENT,
            "Accept": "text/html, application/pdf, text/markdown, text/plain;q=0.9, */*;q=0.5",
            **validators.headers(),
        }

    @staticmethod
    def _extensions(url: httpx.URL) -> dict[str, str]:
        # TLS: SNI and certificate verification against the name, the socket to the vetted IP.
        return {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}

    async def _read(self, url: httpx.URL, response: httpx.Response) -> FetchedDocument:
        validators = Validators(
            etag=_header(response.headers.get("etag"), 500),
            last_modified=_header(response.headers.get("last-modified"), 100),
        )
        if response.status_code == 304:
            return FetchedDocument(str(url), None, None, validators)
        if response.status_code != 200:
            raise UrlUnreachableError(f"the server answered HTTP {response.status_code}")
        limit = self.limits.max_bytes
        too_large = UrlTooLargeError(
            f"the document is larger than {limit // 2**20} MB (MAX_UPLOAD_MB)"
            if limit >= 2**20
            else f"the document is larger than {limit} bytes"
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for piece in response.aiter_bytes(READ_CHUNK):
            body.extend(piece)
            if len(body) > limit:
                raise too_large
        return FetchedDocument(str(url), bytes(body), response.headers.get("content-type"), validators)
