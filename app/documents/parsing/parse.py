"""``parse_document``: sniff, check and extract, dispatching to the format's extractor."""

from __future__ import annotations

from app.documents.errors import EmptyDocumentError
from app.documents.parsing.detect import _decode_text, sniff
from app.documents.parsing.docx import _docx_pages
from app.documents.parsing.html import _html_to_markdown
from app.documents.parsing.image import image_frame_count
from app.documents.parsing.limits import ParseLimits, _Budget
from app.documents.parsing.model import DocumentType, Page, ParsedDocument
from app.documents.parsing.ocr import needs_ocr, ocr_available, require_ocr
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
    if kind.is_image:
        return _image_document(data, kind, limits, budget)
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
    parsed = ParsedDocument(kind, pages, _pdf_pages_to_ocr(pages, limits) if kind is DocumentType.pdf else ())
    if not parsed.pages_with_text() and not parsed.ocr_pages:
        if kind is DocumentType.pdf:
            require_ocr(limits.ocr, "the PDF has no text layer (a scanned PDF?); it")
        raise EmptyDocumentError("the document has no extractable text")
    return parsed


def _pdf_pages_to_ocr(pages: tuple[Page, ...], limits: ParseLimits) -> tuple[int, ...]:
    """PDF pages whose text layer is negligible (``OCR_PAGE_MIN_CHARS``), when OCR is available;
    without it, such pages are ingested with what text they have (a PDF with none is refused)."""
    if not ocr_available(limits.ocr):
        return ()
    return tuple(page.number for page in pages if needs_ocr(page.text, limits.ocr.page_min_chars))


def _image_document(data: bytes, kind: DocumentType, limits: ParseLimits, budget: _Budget) -> ParsedDocument:
    """An image: one page per frame, all of them to OCR (the worker recognises them)."""
    require_ocr(limits.ocr, "an image")
    frames = image_frame_count(data, limits.ocr.max_pixels, budget)
    numbers = tuple(range(1, frames + 1))
    return ParsedDocument(kind, tuple(Page(number, "") for number in numbers), numbers)
