"""Text fields that PostgreSQL, logs, tokenizers and prompts can all hold: valid UTF-8, with no NUL
or other control characters.

A NUL (``\\u0000``) cannot be stored in PostgreSQL text at all, and the other C0 controls (and DEL)
have no business in a title, a tag or a question. A lone surrogate (``\\ud800``, which a JSON
``\\u`` escape can carry) is not a character: it cannot be encoded as UTF-8, so PostgreSQL, the
tokenizer and every log line would fail on it. Both are refused with a 422 naming the field
(``invalid_<field>``) before any work is done. Tabs and line breaks stay allowed.

``PlainText`` is the one validator every text field of every request model uses (``/api/v1``,
``/v1``, MCP tool arguments); ``plain_text_problem`` is the same check for values that are not
validated by a model (file names).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

CONTROL_CHARACTERS = frozenset(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
_SURROGATE = re.compile("[\ud800-\udfff]")  # one character class: linear time


def has_control_characters(value: str) -> bool:
    return not CONTROL_CHARACTERS.isdisjoint(value)


def is_utf8_encodable(value: str) -> bool:
    """False for text holding a surrogate code point (a well-formed pair arrives from JSON as
    one astral character, so any surrogate left is lone)."""
    return value.isascii() or _SURROGATE.search(value) is None


def plain_text_problem(value: str) -> str | None:
    """Why ``value`` is not plain text, or None when it is."""
    if has_control_characters(value):
        return "must not contain NUL (\\u0000) or other control characters"
    if not is_utf8_encodable(value):
        return "must be valid UTF-8 text: a lone surrogate (\\ud800-\\udfff) is not a character"
    return None


def require_plain_text(value: str) -> str:
    problem = plain_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


PlainText = Annotated[str, AfterValidator(require_plain_text)]
