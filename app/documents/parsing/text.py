"""Plain text and Markdown split into pages: form-feed pages or runs of paragraphs (text), sections
at level-1/2 headings outside code fences (Markdown, and HTML once converted)."""

from __future__ import annotations

import re

from app.documents.parsing.limits import _Budget

TEXT_PAGE_CHARS = 3000
_SECTION_HEADING = re.compile(r"^#{1,2}\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _section_pages(text: str, budget: _Budget) -> list[str]:
    sections: list[str] = []
    current: list[str] = []
    has_text = False
    in_fence = False
    for line in text.splitlines():
        budget.check_time()
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and has_text and _SECTION_HEADING.match(line):
            sections.append(budget.page("\n".join(current)))
            current, has_text = [], False
        current.append(line)
        has_text = has_text or bool(line.strip())
    sections.append(budget.page("\n".join(current)))
    return sections


def _text_pages(text: str, budget: _Budget) -> list[str]:
    if "\f" in text:
        budget.expect_pages(text.count("\f") + 1)
        return [budget.page(page) for page in text.split("\f")]
    pages: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        budget.check_time()
        if current and len(current) + len(paragraph) + 2 > TEXT_PAGE_CHARS:
            pages.append(budget.page(current))
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    pages.append(budget.page(current))
    return pages
