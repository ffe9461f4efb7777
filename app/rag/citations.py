"""Citations: ``[n]`` markers in an answer, mapped back to the numbered passages of the prompt."""

from __future__ import annotations

import re

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def cited_numbers(answer: str, available: int) -> list[int]:
    """Passage numbers cited in ``answer`` (1-based, in order of first citation), ignoring numbers
    that no passage has — a model inventing ``[9]`` for 3 passages cites nothing real."""
    seen: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= available and number not in seen:
                seen.append(number)
    return seen
