"""HTML to Markdown-like text (level-1/2 headings kept, so sections become pages), with lxml."""

from __future__ import annotations

from app.documents.parsing.limits import _Budget

HTML_FEED_CHUNK = 64 * 1024  # characters handed to the HTML parser at a time (see _html_to_markdown)


class _HTMLText:
    """lxml parser target: the text of an HTML document, level-1/2 headings kept as Markdown
    headings (so sections become pages), block elements as line breaks, scripts and styles
    dropped. libxml2's HTML parser is linear-time C; the standard library's ``HTMLParser`` is
    quadratic on unclosed tags (``<a`` repeated) before Python 3.11.13."""

    _BLOCKS = frozenset({"p", "div", "li", "tr", "br", "section", "article", "h3", "h4", "h5", "h6", "pre"})
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _CHECK_EVERY = 256

    def __init__(self, budget: _Budget) -> None:
        self.parts: list[str] = []
        self._skipping = 0
        self._events = 0
        self._budget = budget
        self._section = 1

    def _tick(self) -> None:
        self._events += 1
        if self._events % self._CHECK_EVERY == 0:
            self._budget.check_time(f"section {self._section} of the HTML")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._tick()
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"h1", "h2"}:
            self._section += 1
            self._budget.restart_clock()
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def end(self, tag: str) -> None:
        self._tick()
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS or tag in {"h1", "h2"}:
            self.parts.append("\n")

    def data(self, data: str) -> None:
        self._tick()
        if not self._skipping:
            self.parts.append(data)

    def close(self) -> str:
        return "".join(self.parts)


def _html_to_markdown(html: str, budget: _Budget) -> str:
    from lxml import etree

    target = _HTMLText(budget)
    parser = etree.HTMLParser(
        target=target,
        encoding="utf-8",
        recover=True,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        huge_tree=True,  # no depth or text-node caps that would silently truncate the text
    )
    # Fed in pieces: lxml reports an exception raised by the target (the clock) only when the
    # current ``feed`` returns.
    for start in range(0, len(html), HTML_FEED_CHUNK):
        parser.feed(html[start : start + HTML_FEED_CHUNK].encode("utf-8", "replace"))
    text = str(parser.close())
    budget.restart_clock()
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(lines)
