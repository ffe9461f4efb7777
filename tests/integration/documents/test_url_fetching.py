"""The URL fetcher against local web servers: what it refuses (and that the refused server never
sees a request), that it connects to the address it checked, and its bounds."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.documents.errors import UrlForbiddenError, UrlTimeoutError, UrlTooLargeError, UrlUnreachableError
from app.documents.fetching import (
    FetchLimits,
    IPAddress,
    UrlFetcher,
    Validators,
    is_forbidden_address,
    parse_allow_list,
)
from tests.support.web import Route, web_server

pytestmark = pytest.mark.integration

LOCAL = parse_allow_list(["127.0.0.1/32"])
PAGE = b"<!doctype html><html><body><h1>Rotation</h1><p>Rotate keys every 90 days.</p></body></html>"


def fetcher(
    allow: Sequence[str] = ("127.0.0.1/32",),
    *,
    max_bytes: int = 1 << 20,
    timeout_s: float = 10.0,
    max_redirects: int = 5,
    names: dict[str, list[str]] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> tuple[UrlFetcher, list[str]]:
    """A fetcher whose resolver answers from ``names`` (and records the names it was asked)."""
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        if names is None or host not in names:
            raise OSError(f"{host} does not resolve")
        return [ipaddress.ip_address(address) for address in names[host]]

    limits = FetchLimits(max_bytes, timeout_s, max_redirects, parse_allow_list(allow))
    return UrlFetcher(limits, resolver=resolver, verify=verify), asked


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # shared address space (CGNAT)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::127.0.0.1",  # IPv4-compatible
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2001:db8::1",
    ],
)
def test_non_public_addresses_and_ipv6_forms_of_them_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "::ffff:93.184.215.14"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_the_allow_list_admits_a_network_in_its_v4_and_mapped_forms_only() -> None:
    assert not is_forbidden_address(ipaddress.ip_address("127.0.0.1"), LOCAL)
    assert not is_forbidden_address(ipaddress.ip_address("::ffff:127.0.0.1"), LOCAL)
    assert is_forbidden_address(ipaddress.ip_address("127.0.0.2"), LOCAL)
    assert is_forbidden_address(ipaddress.ip_address("::1"), LOCAL)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.org/x", "gopher://example.org/", "http://user:pw@example.org/"],
)
async def test_only_plain_http_and_https_urls_are_fetched(url: str) -> None:
    fetch, asked = fetcher(names={"example.org": ["93.184.215.14"]})
    with pytest.raises(UrlForbiddenError):
        await fetch.vet(url)
    assert asked == []


async def test_a_name_is_fetched_from_the_address_it_resolved_to_with_its_own_host_header() -> None:
    with web_server() as server:
        server.routes["/guide"] = Route(PAGE, headers={"Content-Type": "text/html", "ETag": '"v1"'})
        # `docs.test` exists only in the injected resolver: the socket can only have gone to the
        # address it answered, and the server still saw the name.
        fetch, asked = fetcher(names={"docs.test": ["127.0.0.1"]})
        fetched = await fetch.fetch(server.url("/guide", host="docs.test"))
    assert fetched.content == PAGE and fetched.validators.etag == '"v1"'
    assert asked == ["docs.test"]
    assert server.requests[0].headers["host"] == f"docs.test:{server.port}"


async def test_loopback_is_refused_without_the_allow_list_and_nothing_is_sent() -> None:
    with web_server() as server:
        server.routes["/guide"] = Route(PAGE)
        fetch, _ = fetcher(allow=())
        with pytest.raises(UrlForbiddenError):
            await fetch.fetch(server.url("/guide"))
        with pytest.raises(UrlForbiddenError):
            await fetch.fetch(server.url("/guide", host="[::ffff:127.0.0.1]"))
    assert server.requests == []


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    fetch, _ = fetcher(
        allow=(), names={"intranet.test": ["10.0.0.5"], "mixed.test": ["93.184.215.14", "10.0.0.5"]}
    )
    with pytest.raises(UrlForbiddenError, match=re.escape("10.0.0.5")):
        await fetch.vet("https://intranet.test/wiki")
    with pytest.raises(UrlForbiddenError, match=re.escape("10.0.0.5")):  # one bad answer is enough
        await fetch.vet("https://mixed.test/wiki")


async def test_a_redirect_to_127_0_0_1_is_refused_at_the_hop() -> None:
    with web_server("127.0.0.1") as inner, web_server("127.0.0.2") as outer:
        inner.routes["/secret"] = Route(b"metadata credentials")
        outer.routes["/start"] = Route(status=302, headers={"Location": inner.url("/secret")})
        fetch, _ = fetcher(allow=("127.0.0.2/32",))
        with pytest.raises(UrlForbiddenError, match=re.escape("127.0.0.1")):
            await fetch.fetch(outer.url("/start"))
    assert outer.paths() == ["/start"] and inner.requests == []


async def test_redirects_are_followed_and_capped() -> None:
    with web_server() as server:
        for hop in range(5):
            server.routes[f"/r{hop}"] = Route(status=301, headers={"Location": f"/r{hop + 1}"})
        server.routes["/r5"] = Route(b"arrived")
        followed, _ = fetcher(max_redirects=5)
        assert (await followed.fetch(server.url("/r0"))).content == b"arrived"
        server.requests.clear()
        capped, _ = fetcher(max_redirects=2)
        with pytest.raises(UrlUnreachableError, match="more than 2 redirects"):
            await capped.fetch(server.url("/r0"))
    assert server.paths() == ["/r0", "/r1", "/r2"]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "streamed"])
async def test_a_body_over_the_byte_cap_is_refused(chunked: bool) -> None:
    with web_server() as server:
        server.routes["/big"] = Route(b"x" * 50_000, chunked=chunked)
        fetch, _ = fetcher(max_bytes=10_000)
        with pytest.raises(UrlTooLargeError):
            await fetch.fetch(server.url("/big"))
        fits, _ = fetcher(max_bytes=50_000)
        assert (await fits.fetch(server.url("/big"))).content == b"x" * 50_000


async def test_a_server_that_never_answers_times_out() -> None:
    with web_server() as server:
        server.routes["/slow"] = Route(hang=True)
        fetch, _ = fetcher(timeout_s=0.2)
        with pytest.raises(UrlTimeoutError):
            await fetch.fetch(server.url("/slow"))


async def test_an_error_status_is_unreachable() -> None:
    with web_server() as server:
        fetch, _ = fetcher()
        with pytest.raises(UrlUnreachableError, match="HTTP 404"):
            await fetch.fetch(server.url("/missing"))


async def test_a_conditional_request_sends_the_validators_and_reads_304_as_not_modified() -> None:
    with web_server() as server:
        server.routes["/guide"] = Route(
            PAGE, headers={"ETag": '"v1"', "Last-Modified": "Mon, 07 Dec 2026 01:00:00 GMT"}
        )
        fetch, _ = fetcher()
        first = await fetch.fetch(server.url("/guide"))
        again = await fetch.fetch(server.url("/guide"), first.validators)
    assert first.validators == Validators('"v1"', "Mon, 07 Dec 2026 01:00:00 GMT")
    assert again.not_modified and again.content is None
    assert server.requests[1].headers["if-none-match"] == '"v1"'
    assert server.requests[1].headers["if-modified-since"] == "Mon, 07 Dec 2026 01:00:00 GMT"


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the server's TLS context and a client one trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_verifies_the_certificate_against_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    server_tls, client_tls = _certificate(tmp_path, "docs.test")
    with web_server(tls=server_tls) as server:
        server.routes["/guide"] = Route(PAGE)
        names = {"docs.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        fetch, _ = fetcher(names=names, verify=client_tls)
        fetched = await fetch.fetch(server.url("/guide", host="docs.test"))
        assert fetched.content == PAGE
        with pytest.raises(UrlUnreachableError, match=re.escape("TLS certificate of other.test")):
            await fetch.fetch(server.url("/guide", host="other.test"))
