"""Hostile input: patterns that must stay linear, and the document limits (pages, characters,
time per page) that bound what one upload can cost."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from app.documents.errors import (
    CorruptDocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    PageParseTimeoutError,
    TooManyPagesError,
    public_job_error,
)
from app.documents.parsing import DocumentType, ParseLimits, detect, docx, limits, parse_document, sniff, text
from app.settings import Settings
from tests.support.complexity import assert_linear
from tests.support.documents import (
    make_corrupt_pdf,
    make_docx,
    make_pdf,
    make_raw_pdf,
    page_text,
    text_operators,
)

pytestmark = pytest.mark.unit

FAST_PAGE = b"BT /F1 12 Tf 72 720 Td (a quick page) Tj ET\n"


# --- linear-time sniffing and splitting ------------------------------------------------------


def test_the_html_comment_bomb_is_sniffed_in_linear_time() -> None:
    # `(<!--.*?-->\s*)*` needed hours for the 281-byte file and longer than anyone waits for this
    def bomb(count: int) -> bytes:
        return b"<!---->" * count + b"x"

    assert len(bomb(40)) == 281 and len(bomb(64 * 1024 // 7 + 1)) > 64 * 1024
    assert sniff(bomb(40)) is DocumentType.text
    assert parse_document(bomb(40), filename="bomb").type is DocumentType.text

    def sniffed_and_parsed(count: int) -> None:
        assert sniff(bomb(count)) is DocumentType.text
        assert parse_document(bomb(count), filename="bomb").type is DocumentType.text

    assert_linear(sniffed_and_parsed, 64 * 1024 // 7 // 4)


def test_html_after_leading_comments_is_still_recognised() -> None:
    assert sniff(b"  <!-- a -->\n<!---->\t<!DOCTYPE html><p>x") is DocumentType.html
    assert sniff(b"\xef\xbb\xbf<!-- generated -->\n<HTML lang=en><body>x</body></HTML>") is DocumentType.html
    assert sniff(b"<!--><!---><!-- x --><html><body>x") is DocumentType.html  # HTML's short comments
    assert sniff(b"<!-- <html> inside the comment only") is DocumentType.text
    assert sniff(b"<!-- a --> <p> --> <html>") is DocumentType.text  # a comment ends at its first -->
    assert sniff(b"<!-- a --> text <html>") is DocumentType.text


# Each case does its work on an input of the size it is given; the test runs it at a quarter of
# the size the old patterns choked on and at that size, and bounds the ratio of the CPU times.
ADVERSARIAL: dict[str, tuple[Callable[[int], Any], int]] = {
    "comment bomb, whole input": (lambda n: detect._looks_like_html(b"<!---->" * n + b"x"), 40_000),
    "unterminated comment": (lambda n: detect._looks_like_html(b"<!--" + b"-" * n), 300_000),
    "markdown hint on blank lines": (lambda n: detect._MARKDOWN_HINT.findall("\n" * n), 200_000),
    "markdown hint on blank lines then digits": (
        lambda n: detect._MARKDOWN_HINT.findall("\n" * n + "1" * n),
        100_000,
    ),
    "markdown hint on whitespace lines": (lambda n: detect._MARKDOWN_HINT.findall(" \t\n" * n), 70_000),
    "fences and headings on long blank lines": (
        lambda n: text._section_pages((" " * 2000 + "\n") * n, limits._Budget(ParseLimits())),
        200,
    ),
    "paragraph split on whitespace runs": (
        lambda n: text._text_pages("a\n \n" * n, limits._Budget(ParseLimits())),
        100_000,
    ),
    "whitespace collapsing": (lambda n: limits._normalise(" \t\u00a0\n\n\n" * n), 100_000),
    # the standard library's HTMLParser (Python < 3.11.13) took ~60 s / ~6 s on these 200 KB
    "unclosed start tags": (lambda n: _parsed(b"<html>" + b"<a" * n), 100_000),
    "unclosed end tags": (lambda n: _parsed(b"<html>" + b"</" * n), 100_000),
    "marked sections": (lambda n: _parsed(b"<html>" + b"<![" * n), 60_000),
}


def _parsed(data: bytes) -> None:
    with contextlib.suppress(EmptyDocumentError, CorruptDocumentError):
        parse_document(data)


@pytest.mark.parametrize("case", list(ADVERSARIAL), ids=list(ADVERSARIAL))
def test_patterns_stay_linear_on_adversarial_input(case: str) -> None:
    run, size = ADVERSARIAL[case]
    assert_linear(run, size // 4)


def test_html_text_keeps_sections_and_drops_scripts() -> None:
    html = (
        b"<!DOCTYPE html><html><head><title>T</title><style>p {}</style></head><body>"
        b"<h1>Intro</h1><p>Fish &amp; chips</p><script>var x = '<h2>no</h2>'</script>"
        b"<h2>Usage</h2><ul><li>one</li><li>two</li></ul><!-- hidden --></body></html>"
    )
    parsed = parse_document(html)
    assert [page.text for page in parsed.pages] == ["# Intro\n\nFish & chips", "## Usage\n\none\n\ntwo"]


# --- DOC_MAX_PAGES, DOC_MAX_CHARS -------------------------------------------------------------


def test_the_limits_default_to_the_settings_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert ParseLimits.from_settings(settings) == ParseLimits()
    assert (settings.doc_max_pages, settings.doc_max_chars, settings.doc_page_parse_timeout_s) == (
        2000,
        5_000_000,
        10.0,
    )


def test_a_pdf_with_too_many_pages_is_refused_before_extraction() -> None:
    pdf = make_pdf([page_text(n) for n in range(1, 6)])
    with pytest.raises(TooManyPagesError, match=r"5 pages \(limit 3, DOC_MAX_PAGES\)") as caught:
        parse_document(pdf, limits=ParseLimits(max_pages=3))
    assert caught.value.code == "too_many_pages" and caught.value.status == 422
    assert parse_document(pdf, limits=ParseLimits(max_pages=5)).page_count == 5


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"\f".join([b"page"] * 10), "a.txt"),
        (b"".join(b"# Section %d\n\ntext\n\n" % n for n in range(10)), "a.md"),
        (b"<html><body>" + b"".join(b"<h1>S%d</h1><p>text</p>" % n for n in range(10)) + b"</body>", None),
        (make_docx([(f"S{n}", "text") for n in range(10)]), None),
        (make_docx([(f"S{n}", "text") for n in range(10)], page_breaks=True), None),
    ],
    ids=["form feeds", "markdown", "html", "docx sections", "docx page breaks"],
)
def test_every_format_stops_at_the_page_limit(data: bytes, filename: str | None) -> None:
    with pytest.raises(TooManyPagesError, match="DOC_MAX_PAGES"):
        parse_document(data, filename=filename, limits=ParseLimits(max_pages=4))
    assert parse_document(data, filename=filename, limits=ParseLimits(max_pages=10)).page_count == 10


@pytest.mark.parametrize(
    "data",
    [
        make_pdf([page_text(n) for n in range(1, 6)]),
        make_docx([(f"S{n}", page_text(n)) for n in range(5)]),
        make_docx([("Only", page_text(1, sentences=40))]),  # one long paragraph
        page_text(1, sentences=60).encode(),
    ],
    ids=["pdf", "docx", "docx paragraph", "text"],
)
def test_every_format_stops_at_the_character_limit(data: bytes) -> None:
    whole = parse_document(data, filename="a.txt")
    chars = sum(len(page.text) for page in whole.pages)
    with pytest.raises(DocumentTooLargeError, match="DOC_MAX_CHARS") as caught:
        parse_document(data, filename="a.txt", limits=ParseLimits(max_chars=chars - 1))
    assert caught.value.code == "document_too_large"
    parse_document(data, filename="a.txt", limits=ParseLimits(max_chars=chars))


def test_a_docx_is_counted_while_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DOCX stops at the character limit partway through, not after all of it is read."""
    paragraphs = [" ".join(f"word{n}x{i}" for i in range(150)) for n in range(400)]
    document = make_docx([(f"S{n}", text) for n, text in enumerate(paragraphs)], page_breaks=True)
    blocks = docx._docx_blocks
    read: list[str] = []

    def counted(document: Any, budget: Any) -> Any:
        for block in blocks(document, budget):
            read.append(block[0])
            yield block

    monkeypatch.setattr("app.documents.parsing.docx._docx_blocks", counted)
    with pytest.raises(DocumentTooLargeError):
        parse_document(document, limits=ParseLimits(max_chars=50_000))
    assert 0 < len(read) < 100, "the character limit is checked per paragraph"


# --- DOC_PAGE_PARSE_TIMEOUT_S -----------------------------------------------------------------


def test_a_slow_pdf_page_is_stopped_at_the_time_limit_and_its_process_killed() -> None:
    # ~600k text operators: tens of seconds of pure-Python pypdf work on page 2 (a 30 KB file)
    pdf = make_raw_pdf([FAST_PAGE, text_operators(600_000)])
    assert len(pdf) < 100_000
    before = {child.pid for child in psutil.Process().children()}
    with pytest.raises(PageParseTimeoutError, match=r"page 2 took longer than 0\.5 s") as caught:
        parse_document(pdf, limits=ParseLimits(page_timeout_s=0.5))
    # the page runs for tens of seconds: the error (not a parsed page) is the proof it was stopped
    assert caught.value.code == "page_parse_timeout" and caught.value.status == 422
    assert {child.pid for child in psutil.Process().children()} <= before, "the parser process is left"


def test_a_fast_pdf_is_not_charged_for_the_parser_start() -> None:
    parsed = parse_document(make_raw_pdf([FAST_PAGE] * 3), limits=ParseLimits(page_timeout_s=2.0))
    assert [page.text for page in parsed.pages] == ["a quick page"] * 3


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (make_docx([("A", "b")] * 3), "page 1"),
        (b"<html><body>" + b"<p>x</p>" * 300 + b"</body></html>", "section 1 of the HTML"),
        (b"# A\n\n" + b"line\n" * 10, "page 1"),
        (b"para\n\n" * 10, "page 1"),
    ],
    ids=["docx", "html", "markdown", "text"],
)
def test_in_process_formats_check_the_clock_between_steps(data: bytes, where: str) -> None:
    with pytest.raises(PageParseTimeoutError, match=f"{where} took longer"):
        parse_document(
            data,
            filename="a.md" if data.startswith(b"#") else "a.txt",
            limits=ParseLimits(page_timeout_s=1e-9),
        )


# --- readable errors --------------------------------------------------------------------------


def test_document_errors_name_no_exception_classes() -> None:
    with pytest.raises(CorruptDocumentError) as caught:
        parse_document(make_corrupt_pdf())
    assert "Error" not in caught.value.detail and "pypdf" not in caught.value.detail
    assert caught.value.__cause__ is not None  # the library's own words stay in the chain (logs)


JOB = uuid.UUID("00000000-0000-0000-0000-000000000042")
GENERIC = f"ingestion failed; quote the job id {JOB} when reporting it"


@pytest.mark.parametrize(
    ("code", "stored", "shown"),
    [
        (None, None, None),
        (
            "too_many_pages",
            "the document has 9 pages (limit 2, DOC_MAX_PAGES)",
            "the document has 9 pages (limit 2, DOC_MAX_PAGES)",
        ),
        (
            "superseded",
            "superseded by version 2 before it started",
            "superseded by version 2 before it started",
        ),
        ("corrupt_document", "the PDF cannot be read (PdfReadError)", "The document cannot be read"),
        (
            "worker_stopped",
            'Traceback (most recent call last):\n  File "/app/x.py"',
            "The worker processing this document stopped",
        ),
        ("ingestion_error", "OperationalError: connection to /var/run/postgresql failed", GENERIC),
        ("ingestion_error", "UPDATE chunks SET embedding = ...", GENERIC),
        ("something_new", "whatever it says", GENERIC),
        (None, "KeyError: 'x'", GENERIC),
    ],
)
def test_job_errors_shown_to_clients_are_readable(
    code: str | None, stored: str | None, shown: str | None
) -> None:
    assert public_job_error(JOB, code, stored) == shown
