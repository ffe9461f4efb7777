"""Masking of secrets and personal data before anything leaves the process (logs, traces).

Two layers: values under a sensitive key (``password``, ``authorization``, ``api_key`` …) are
replaced outright; every other string is scanned for things that look like credentials or
e-mail addresses. Masking is idempotent, so applying it twice (log processor and Langfuse
``mask`` hook) is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

REDACTED: Final = "[REDACTED]"
EMAIL_MASK: Final = "[EMAIL]"

_MAX_DEPTH = 8

_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|authorization|auth|cookie|"
    r"set-cookie|credentials?|private[_-]?key)$",
    re.IGNORECASE,
)
# Keys that end like a sensitive key but are safe to show.
_SAFE_KEYS = frozenset({"key_id", "prefix", "token_count", "tokens", "max_tokens", "usage"})

# Order matters: specific credential shapes first, generic key=value last.
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Our API keys: rk_<12 hex prefix>_<secret>. The prefix is a lookup handle, not a secret.
    (re.compile(r"\b(rk_[0-9a-f]{12})_[A-Za-z0-9_\-]+"), r"\1_" + REDACTED),
    # JSON Web Tokens (three base64url segments, header starting with {" → eyJ).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), "[JWT]"),
    # Authorization headers: Bearer / Basic credentials.
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1 " + REDACTED),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/]{16,}={0,2}", re.IGNORECASE), r"\1 " + REDACTED),
    # Provider keys: OpenAI / Langfuse (sk-…, pk-lf-…), Groq (gsk_…), Google (AIza…).
    (re.compile(r"\b(sk|pk)-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\bgsk_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),
    # Credentials inside URLs: scheme://user:password@host.
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+):[^@\s/]+@", re.IGNORECASE), r"\1:" + REDACTED + "@"),
    # E-mail addresses.
    (re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), EMAIL_MASK),
    # password=…, "api_key": "…", token: … inside free text.
    (
        re.compile(
            r"""(?P<key>\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|client[_-]?secret)\b"""
            r"""["']?\s*[:=]\s*["']?)(?P<value>[^\s"',;&}]+)""",
            re.IGNORECASE,
        ),
        r"\g<key>" + REDACTED,
    ),
)


def mask_text(text: str) -> str:
    """``text`` with credentials, tokens and e-mail addresses replaced by placeholders."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return lowered not in _SAFE_KEYS and _SENSITIVE_KEY.search(lowered) is not None


def mask_value(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` (str, mapping, sequence, anything) with secrets masked.

    Mappings keep their keys; a sensitive key's value is replaced whole, whatever its type.
    Unknown objects are left alone unless they are strings (``repr`` is never called, so a
    masked copy of an object is never built from its internals).
    """
    if isinstance(value, str):
        return mask_text(value)
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and is_sensitive_key(key) and item is not None
                else mask_value(item, _depth=_depth + 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        masked = [mask_value(item, _depth=_depth + 1) for item in value]
        return masked if isinstance(value, list) else tuple(masked)
    if isinstance(value, bytes):
        return mask_text(value.decode("utf-8", errors="replace"))
    return value


def mask_for_export(*, data: Any, **_: Any) -> Any:
    """Langfuse's ``mask`` hook signature."""
    return mask_value(data)
