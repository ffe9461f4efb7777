from __future__ import annotations

import time

import pytest

from app.limits.limiter import Budget, LimitState, most_restrictive, storage_uri
from app.security.proxies import TrustedProxies, address_bucket

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///data/redis/redis.sock", "async+redis+unix:///data/redis/redis.sock"),
        ("redis://cache:6379/0", "async+redis://cache:6379/0"),
        ("rediss://:pw@cache:6380", "async+rediss://:pw@cache:6380"),
    ],
)
def test_storage_uri_maps_redis_py_urls_to_limits_schemes(url: str, expected: str) -> None:
    assert storage_uri(url) == expected


def test_storage_uri_refuses_unknown_schemes_without_echoing_credentials() -> None:
    with pytest.raises(ValueError) as caught:
        storage_uri("memcached://user:secret@host")
    assert "secret" not in str(caught.value)


def test_refused_state_carries_retry_after_and_zero_remaining() -> None:
    state = LimitState(Budget.chat, 60, 0, time.time() + 12.2, "60 per 1 minute", allowed=False)
    headers = state.headers()
    assert headers["X-RateLimit-Limit"] == "60"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["Retry-After"] == "13" == headers["X-RateLimit-Reset"]


def test_allowed_state_has_no_retry_after() -> None:
    assert "Retry-After" not in LimitState(Budget.ip, 5, 3, time.time() + 5, "5 per 1 minute").headers()


def test_most_restrictive_prefers_refusal_then_least_remaining() -> None:
    now = time.time()
    roomy = LimitState(Budget.ip, 120, 100, now + 30, "")
    tight = LimitState(Budget.chat, 60, 2, now + 30, "")
    refused = LimitState(Budget.uploads, 30, 0, now + 900, "", allowed=False)
    assert most_restrictive([roomy, tight]) is tight
    assert most_restrictive([roomy, refused, tight]) is refused


def scope(peer: str, forwarded: str | None = None, proto: str | None = None, scheme: str = "http") -> dict:  # type: ignore[type-arg]
    headers = []
    if forwarded is not None:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return {"type": "http", "client": (peer, 1234), "headers": headers, "scheme": scheme}


def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",))
    assert proxies.client_ip(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",))
    assert proxies.client_ip(scope("10.0.0.2", "198.51.100.1")) == "198.51.100.1"


def test_spoofed_leading_entries_do_not_move_the_client() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",))
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the real address.
    assert proxies.client_ip(scope("10.0.0.2", "1.2.3.4, 198.51.100.1")) == "198.51.100.1"
    # Chains of trusted proxies are skipped from the right.
    assert proxies.client_ip(scope("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.7")) == "198.51.100.1"


def test_garbage_forwarded_for_falls_back_to_the_peer() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",))
    assert proxies.client_ip(scope("10.0.0.2", "not-an-ip")) == "10.0.0.2"
    assert proxies.client_ip(scope("10.0.0.2")) == "10.0.0.2"


def test_ipv6_proxies_and_clients() -> None:
    proxies = TrustedProxies(("::1/128",))
    assert proxies.client_ip(scope("::1", "2001:db8::5")) == "2001:db8::5"


def test_https_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",))
    assert proxies.is_https(scope("10.0.0.2", proto="https"))
    assert not proxies.is_https(scope("203.0.113.9", proto="https"))
    assert proxies.is_https(scope("203.0.113.9", scheme="https"))


@pytest.mark.parametrize(
    ("address", "prefix", "bucket"),
    [
        ("203.0.113.9", 64, "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 56, "2001:db8:1::/56"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
        ("::ffff:198.51.100.7", 64, "198.51.100.7"),
        ("unknown", 64, "unknown"),
    ],
)
def test_ipv6_clients_share_a_bucket_per_network(address: str, prefix: int, bucket: str) -> None:
    assert address_bucket(address, prefix) == bucket
