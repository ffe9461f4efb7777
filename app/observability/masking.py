"""Masking of secrets and personal data before anything leaves the process (logs, traces).

Two layers: values under a sensitive key (``password``, ``authorization``, ``api_key`` …) are
replaced outright; every other string is scanned for things that look like credentials or
e-mail addresses. Masking is idempotent, so applying it twice (log processor and Langfuse
``mask`` hook) is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

REDACTED: Final = "[REDACTED]"
EMAIL_MASK: Final = "[EMAIL]"
TRUNCATED: Final = "[TRUNCATED]"

_MAX_DEPTH = 8

_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|authorization|auth|cookie|"
    r"set-cookie|credentials?|private[_-]?key)$",
    re.IGNORECASE,
)
# Keys that end like a sensitive key but are safe to show.
_SAFE_KEYS = frozenset({"key_id", "prefix", "token_count", "tokens", "max_tokens", "usage"})

# Every pattern here sees client text (access-log paths, headers, questions), so each runs in
# linear time: a repeated quantifier is possessive (``++``, ``*+``) wherever the next token cannot
# match the characters it consumed, and a pattern whose token may begin anywhere inside a long
# run of its own characters (``a.a.a.…``) starts only at the beginning of such a run and skips,
# lazily and once (an atomic group), to the first place the original pattern could start. All
# starting points in one run share what follows the run, so only that first one can match, and
# no run is rescanned from every position (which made ``"a." * 16384`` take seconds).
_JWT_CHARS = r"[A-Za-z0-9_\-]"
_SCHEME_CHARS = r"[a-z0-9+.\-]"
_LOCAL_CHARS = r"[A-Za-z0-9._%+\-]"

# Order matters: specific credential shapes first, generic key=value last.
_SUBSTITUTIONS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Our API keys: rk_<12 hex prefix>_<secret>. The prefix is a lookup handle, not a secret.
    (re.compile(r"\b(rk_[0-9a-f]{12})_[A-Za-z0-9_\-]++"), r"\1_" + REDACTED),
    # JSON Web Tokens (three base64url segments, header starting with {" → eyJ). ``lead`` is the
    # part of the run before the token, put back unchanged.
    (
        re.compile(
            rf"(?<!{_JWT_CHARS})(?>(?P<lead>{_JWT_CHARS}*?)\beyJ)"
            rf"{_JWT_CHARS}++\.{_JWT_CHARS}++\.{_JWT_CHARS}*+"
        ),
        r"\g<lead>[JWT]",
    ),
    # Authorization headers: Bearer / Basic credentials.
    (re.compile(r"\b(Bearer)\s++[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1 " + REDACTED),
    (re.compile(r"\b(Basic)\s++[A-Za-z0-9+/]{16,}={0,2}", re.IGNORECASE), r"\1 " + REDACTED),
    # Provider keys: OpenAI / Langfuse (sk-…, pk-lf-…), Groq (gsk_…), Google (AIza…).
    (re.compile(r"\b(sk|pk)-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\bgsk_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),
    # Credentials inside URLs: scheme://user:password@host, the user possibly empty
    # (redis://:password@host). Group 1 (run start to the end of the user) is put back.
    (
        re.compile(
            rf"(?<!{_SCHEME_CHARS})((?>{_SCHEME_CHARS}*?\b[a-z]){_SCHEME_CHARS}*+://[^/\s:@]*+)"
            r":[^@\s/]++@",
            re.IGNORECASE,
        ),
        r"\1:" + REDACTED + "@",
    ),
)

# E-mail addresses: what ``\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b`` matches, found
# without that pattern's quadratic search (see ``_mask_emails``).
_EMAIL_LOCAL_RUN = re.compile(rf"(?<!{_LOCAL_CHARS}){_LOCAL_CHARS}++@")
_EMAIL_LOCAL_START = re.compile(rf"\b{_LOCAL_CHARS}")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")

# password=…, "api_key": "…", token: … inside free text.
_KEY_VALUE = re.compile(
    r"""(?P<key>\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|client[_-]?secret)\b"""
    r"""["']?\s*+[:=]\s*+["']?)(?P<value>[^\s"',;&}]++)""",
    re.IGNORECASE,
)


def _mask_emails(text: str) -> str:
    """E-mail addresses replaced by ``EMAIL_MASK``, exactly where ``re.sub`` with the e-mail
    pattern above would replace them, in linear time.

    Each ``@`` ends at most one run of local-part characters; the leftmost match for that ``@``
    starts at the first word boundary in the run (not before the end of the previous match), and
    it matches if and only if the domain after the ``@`` does: every start in the run shares it.
    """
    if "@" not in text:
        return text
    parts: list[str] = []
    done = 0
    for local in _EMAIL_LOCAL_RUN.finditer(text):
        at = local.end() - 1
        start = _EMAIL_LOCAL_START.search(text, max(local.start(), done), at)
        if start is None:
            continue
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is None:
            continue
        parts += (text[done : start.start()], EMAIL_MASK)
        done = domain.end()
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# A literal every pattern above needs (each pattern's own case rule): text without any of them is
# returned as it is after this one scan instead of ten. Most logged strings (ids, routes,
# timestamps, levels) are such text.
_MAY_HOLD_SECRET = re.compile(
    r"rk_|eyJ|sk-|pk-|gsk_|AIza|@|(?i:bearer|basic|pass|pwd|secret|token|api[_-]?key)"
)


def mask_text(text: str) -> str:
    """``text`` with credentials, tokens and e-mail addresses replaced by placeholders."""
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    text = _mask_emails(text)
    return _KEY_VALUE.sub(r"\g<key>" + REDACTED, text)


@lru_cache(maxsize=256)  # keys come from a small set: the code's field names, header names
def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return lowered not in _SAFE_KEYS and _SENSITIVE_KEY.search(lowered) is not None


_SCALARS: Final = frozenset({int, float, bool, type(None)})


def mask_value(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` (str, mapping, sequence, anything) with secrets masked.

    Mappings keep their keys; a sensitive key's value is replaced whole, whatever its type.
    Unknown objects are left alone unless they are strings (``repr`` is never called, so a
    masked copy of an object is never built from its internals). Strings are masked at any depth;
    a mapping, list or tuple nested deeper than ``_MAX_DEPTH`` becomes ``TRUNCATED``.
    """
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes):
        return mask_text(value.decode("utf-8", errors="replace"))
    if _depth >= _MAX_DEPTH:
        # Never hand back a subtree unmasked: below the depth limit, containers are cut off.
        return TRUNCATED if isinstance(value, Mapping | list | tuple) else value
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
    return value


def mask_for_export(*, data: Any, **_: Any) -> Any:
    """Langfuse's ``mask`` hook signature."""
    return mask_value(data)
