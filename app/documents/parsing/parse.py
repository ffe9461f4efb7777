"""``parse_document``: sniff, check and extract, dispatching to the format's extractor."""

from __future__ import annotations

from app.documents.errors import EmptyDocumentError
from app.documents.parsing.detect import _decode_text, sniff
from app.documents.parsing.docx import _docx_pages
from app.documents.parsing.html import _html_to_markdown
from app.documents.parsing.limits import ParseLimits, _Budget
from app.documents.parsing.model import DocumentType, Page, ParsedDocument
from app.documents.parsing.pdf import _pdf_pages
from app.documents.parsing.text import _section_pages, _text_pages


def parse_document(
    data: bytes,
    *,
    filename: str | None = None,
    doc_type: DocumentType | None = None,
    max_uncompressed_bytes: int = 100 * 1024 * 1024,
    limits: ParseLimits | None = None,
) -> ParsedDocument:
    """Sniff (unless ``doc_type`` is given), check and extract. Raises the ``DocumentInputError``
    subclasses for encrypted, corrupt, empty, bomb-like, oversized or unsupported input.

    ``limits`` (default: ``ParseLimits()``; callers pass ``ParseLimits.from_settings``) bound the work:

    * ``max_pages``: a document with more pages is refused (``TooManyPagesError``) before its
      pages are extracted when the count is known up front (PDF, form-fed text), else as soon as
      one page too many has been cut (DOCX, Markdown, HTML).
    * ``max_chars``: extraction stops (``DocumentTooLargeError``) once the page texts, whitespace
      collapsed, pass it; a DOCX is counted paragraph by paragraph while it is read, a PDF page by
      page (a PDF page whose raw text is larger than four times what is left is refused unread).
    * ``page_timeout_s`` (``PageParseTimeoutError``): a PDF is parsed in a separate process, which
      is killed when opening the file or extracting any one page takes longer: a hard bound on
      wall-clock time, whatever pypdf does. The other formats are parsed in this process and check
      the clock between steps: DOCX after every paragraph and table row, Markdown and text after
      every line or paragraph, HTML after every 256 parser events (the parser reads 64 KiB at a
      time). So one step can overrun the limit; each step is linear in its input, which the upload
      limit (and, for DOCX, ``max_uncompressed_bytes``) bounds. Loading a DOCX's XML (one lxml
      call, linear, bounded by ``max_uncompressed_bytes``) is not charged to any page.
    """
    limits = limits or ParseLimits()
    budget = _Budget(limits)
    kind = doc_type or sniff(data, filename)
    if kind is DocumentType.pdf:
        texts = _pdf_pages(data, budget)
    elif kind is DocumentType.docx:
        texts = _docx_pages(data, max_uncompressed_bytes, budget)
    elif kind is DocumentType.html:
        markdown = _html_to_markdown(_decode_text(data, detected_binary=None), budget)
        texts = _section_pages(markdown, budget)
    elif kind is DocumentType.markdown:
        texts = _section_pages(_decode_text(data, detected_binary=None), budget)
    else:
        texts = _text_pages(_decode_text(data, detected_binary=None), budget)
    pages = tuple(Page(number, text) for number, text in enumerate(texts, start=1))
    parsed = ParsedDocument(kind, pages)
    if not parsed.pages_with_text():
        detail = "the document has no extractable text"
        if kind is DocumentType.pdf:
            detail += " (a scanned PDF? OCR is not supported)"
        raise EmptyDocumentError(detail)
    return parsed
