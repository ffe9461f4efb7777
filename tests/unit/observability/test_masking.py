from __future__ import annotations

import pytest

from app.observability.masking import EMAIL_MASK, REDACTED, mask_text, mask_value

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
