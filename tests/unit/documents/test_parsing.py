from __future__ import annotations

import pytest

from app.documents.errors import (
    ArchiveBombError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedDocumentTypeError,
)
from app.documents.parsing import DocumentType, parse_document, sniff
from tests.support.documents import (
    PNG_BYTES,
    make_corrupt_pdf,
    make_docx,
    make_docx_bomb,
    make_encrypted_pdf,
    make_pdf,
    page_text,
)

pytestmark = pytest.mark.unit


def test_type_comes_from_the_content_not_the_file_name() -> None:
    assert sniff(make_pdf(["hello"]), "notes.txt") is DocumentType.pdf
    assert sniff(make_docx([("A", "b")]), "report.pdf") is DocumentType.docx
    assert sniff(b"<!DOCTYPE html><html><body>x</body></html>", "a.txt") is DocumentType.html
    with pytest.raises(UnsupportedDocumentTypeError, match="image/png"):
        sniff(PNG_BYTES, "photo.pdf")


def test_markdown_is_told_from_plain_text_by_name_or_by_its_syntax() -> None:
    assert sniff(b"just words", "readme.md") is DocumentType.markdown
    assert sniff(b"# Title\n\n- one\n- two\n") is DocumentType.markdown
    assert sniff(b"just words in a sentence.") is DocumentType.text


def test_pdf_pages_keep_their_numbers_and_hashes() -> None:
    parsed = parse_document(make_pdf([page_text(1), page_text(2), page_text(3)]))
    assert [page.number for page in parsed.pages] == [1, 2, 3]
    assert "Page 2 sentence 0" in parsed.pages[1].text
    assert len({page.sha256 for page in parsed.pages}) == 3
    again = parse_document(make_pdf([page_text(1), page_text(2, topic="other"), page_text(3)]))
    assert [a.sha256 == b.sha256 for a, b in zip(parsed.pages, again.pages, strict=True)] == [
        True,
        False,
        True,
    ]


def test_docx_pages_follow_page_breaks_or_headings() -> None:
    by_heading = parse_document(make_docx([("One", "alpha"), ("Two", "beta"), ("Three", "gamma")]))
    assert by_heading.page_count == 3 and by_heading.pages[2].text == "Three\ngamma"
    by_break = parse_document(make_docx([("One", "alpha"), ("Two", "beta")], page_breaks=True))
    assert by_break.page_count == 2


def test_markdown_sections_ignore_headings_inside_code_fences() -> None:
    text = b"# A\n\nintro\n\n```\n# not a heading\n```\n\n## B\n\nmore\n"
    parsed = parse_document(text, filename="x.md")
    assert parsed.page_count == 2 and "# not a heading" in parsed.pages[0].text


def test_plain_text_splits_on_form_feeds() -> None:
    assert parse_document(b"first page\fsecond page", filename="a.txt").page_count == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (make_encrypted_pdf(["secret"]), EncryptedDocumentError),
        (make_corrupt_pdf(), CorruptDocumentError),
        (make_pdf(["", ""]), EmptyDocumentError),
        (b"", EmptyDocumentError),
        (make_docx_bomb(), ArchiveBombError),
        (b"PK\x03\x04" + b"\0" * 64, CorruptDocumentError),
        (b"\x00\x01\x02binary" * 10, UnsupportedDocumentTypeError),
    ],
    ids=["encrypted", "corrupt", "no-text", "empty", "zip-bomb", "broken-zip", "binary"],
)
def test_bad_documents_raise_their_own_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_document(data)


def test_declared_expansion_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ArchiveBombError, match="expands"):
        parse_document(make_docx([("A", "b")]), max_uncompressed_bytes=1000)
