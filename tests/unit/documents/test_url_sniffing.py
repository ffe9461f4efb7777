"""What a fetched body is: sniffed from its bytes; the server's Content-Type only tells Markdown
from plain text, and never makes binary content a document."""

from __future__ import annotations

import gzip

import pytest

from app.documents.errors import UnsupportedMediaTypeError
from app.documents.fetching import FetchedDocument, Validators
from app.documents.parsing import DocumentType
from app.documents.url_ingestion import sniff_fetched

pytestmark = pytest.mark.unit

MARKDOWN = b"# Rotation\n\n- rotate keys\n- revoke the old one\n"


def fetched(
    content: bytes, content_type: str | None, url: str = "https://docs.example/guide"
) -> FetchedDocument:
    return FetchedDocument(url, content, content_type, Validators())


def test_markdown_served_as_markdown_is_markdown_even_without_a_suffix() -> None:
    assert sniff_fetched(fetched(b"Rotate keys.\n", "text/markdown; charset=utf-8")) is DocumentType.markdown


def test_a_claimed_type_does_not_override_the_bytes() -> None:
    html = b"<!doctype html><html><body>x</body></html>"
    readme = "https://docs.example/README.md"
    assert sniff_fetched(fetched(b"%PDF-1.7\n...", "text/html")) is DocumentType.pdf
    assert sniff_fetched(fetched(html, "application/pdf")) is DocumentType.html
    assert sniff_fetched(fetched(MARKDOWN, "text/plain", url=readme)) is DocumentType.markdown


def test_binary_content_is_unsupported_media_whatever_the_server_claims() -> None:
    with pytest.raises(UnsupportedMediaTypeError) as refused:
        sniff_fetched(fetched(gzip.compress(b"x" * 100), "text/html"))
    assert refused.value.code == "unsupported_media_type" and "text/html" in refused.value.detail
