from __future__ import annotations

from typing import Any

import pytest

from app.observability.masking import EMAIL_MASK, REDACTED, TRUNCATED, mask_text, mask_value

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

API_KEY = "rk_0123456789ab_Zm9vYmFyYmF6cXV4LXNlY3JldC1wYXJ0LTEyMzQ1Njc4"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"


def test_api_key_keeps_its_lookup_prefix_but_loses_the_secret() -> None:
    masked = mask_text(f"auth failed for {API_KEY} today")
    assert masked == f"auth failed for rk_0123456789ab_{REDACTED} today"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("Authorization: Bearer abcdefghijklmnop123", "abcdefghijklmnop123"),
        (f"token {JWT} expired", JWT),
        ("login with password=hunter2hunter2 failed", "hunter2hunter2"),
        ('{"api_key": "s3cr3t-value"}', "s3cr3t-value"),
        ("postgresql+psycopg://app:pa55word@db:5432/ragchat", "pa55word"),
        ("OPENAI key sk-proj-abcdefghijklmnopqrstuvwx used", "sk-proj-abcdefghijklmnopqrstuvwx"),
        ("groq gsk_abcdefghijklmnopqrstuvwxyz012345", "gsk_abcdefghijklmnopqrstuvwxyz012345"),
        ("Basic dXNlcjpwYXNzd29yZGxvbmc=", "dXNlcjpwYXNzd29yZGxvbmc="),
    ],
)
def test_credentials_in_free_text_are_masked(text: str, secret: str) -> None:
    assert secret not in mask_text(text)


def test_email_addresses_are_masked() -> None:
    assert mask_text("mail alice.smith+rag@example.co.uk now") == f"mail {EMAIL_MASK} now"


def test_ordinary_text_is_left_alone() -> None:
    text = "Basic information about tokens: max_tokens=512, 3 passages, route /api/v1/me"
    assert mask_text(text) == text


def test_masking_is_idempotent() -> None:
    once = mask_text(f"{API_KEY} Bearer {JWT} password=x a@b.io")
    assert mask_text(once) == once


def test_sensitive_keys_lose_their_value_whatever_its_type() -> None:
    masked = mask_value(
        {
            "password": "hunter2",
            "Authorization": "whatever",
            "x-api-key": API_KEY,
            "client_secret": 1234,
            "nested": [{"token": "t"}, "write to bob@example.com"],
            "prompt_tokens": 12,
            "key_id": "abc",
        }
    )
    assert masked == {
        "password": REDACTED,
        "Authorization": REDACTED,
        "x-api-key": REDACTED,
        "client_secret": REDACTED,
        "nested": [{"token": REDACTED}, f"write to {EMAIL_MASK}"],
        "prompt_tokens": 12,
        "key_id": "abc",
    }


def test_tuples_stay_tuples_and_other_objects_pass_through() -> None:
    marker = object()
    assert mask_value(("a@b.io", 3, marker)) == (EMAIL_MASK, 3, marker)


def test_url_password_with_an_empty_user_is_masked() -> None:
    masked = mask_text("cache at redis://:s3cret@host:6379/0 is down")
    assert "s3cret" not in masked
    assert masked == f"cache at redis://:{REDACTED}@host:6379/0 is down"


def test_url_credentials_keep_the_scheme_and_user() -> None:
    assert mask_text("see http://alice:pw@h/x") == f"see http://alice:{REDACTED}@h/x"


def test_addresses_one_after_another_are_all_masked() -> None:
    assert mask_text("a@b.com-x@c.org, dev.ops@example.io") == f"{EMAIL_MASK}{EMAIL_MASK}, {EMAIL_MASK}"


def test_secrets_nested_deeper_than_the_limit_never_come_back() -> None:
    secret = "Bearer abcdefghijklmnop123"
    value: Any = {"note": secret, "password": "hunter2", "raw": b"mail bob@example.com"}
    for level in range(20):
        value = {"level": level, "child": [value]} if level % 2 else ({"child": value},)
    masked = repr(mask_value(value))
    for leaked in ("abcdefghijklmnop123", "hunter2", "bob@example.com"):
        assert leaked not in masked
    assert TRUNCATED in masked


def test_strings_and_bytes_are_masked_at_the_depth_limit() -> None:
    value: Any = ["write to bob@example.com", b"password=hunter2"]
    for _ in range(7):
        value = [value]
    masked = repr(mask_value(value))
    assert "bob@example.com" not in masked and "hunter2" not in masked
    assert TRUNCATED not in masked
