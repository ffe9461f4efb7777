"""Text fields that PostgreSQL, logs and prompts can all hold: no NUL or other control characters.

A NUL (``\\u0000``) cannot be stored in PostgreSQL text at all, and the other C0 controls (and DEL)
have no business in a title, a tag or a question; they are refused with a 422 naming the field
(``invalid_<field>``) before any work is done. Tabs and line breaks stay allowed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

CONTROL_CHARACTERS = frozenset(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))


def has_control_characters(value: str) -> bool:
    return not CONTROL_CHARACTERS.isdisjoint(value)


def reject_control_characters(value: str) -> str:
    if has_control_characters(value):
        raise ValueError("must not contain NUL (\\u0000) or other control characters")
    return value


PlainText = Annotated[str, AfterValidator(reject_control_characters)]
