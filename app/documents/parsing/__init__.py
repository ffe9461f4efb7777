"""Content sniffing and text extraction, page by page. Pure, synchronous CPU work: callers run it
in a worker thread (``asyncio.to_thread``), never on the event loop.

A "page" is the unit of change detection and citation: a PDF page; a DOCX page (explicit page
breaks) or, without breaks, a section starting at a Heading 1/2; a Markdown/HTML section starting
at a level-1/2 heading; a TXT form-feed page or, without form feeds, a run of paragraphs of at most
``TEXT_PAGE_CHARS`` characters.

Pages without a text layer (scanned PDF pages, images) are listed in ``ParsedDocument.ocr_pages``
and recognised by the ingestion worker (``recognise_pages``, ocr.py), not at upload.

Hostile input is bounded (``ParseLimits``): the page count (``DOC_MAX_PAGES``), the extracted
text (``DOC_MAX_CHARS``) and the time one page may take (``DOC_PAGE_PARSE_TIMEOUT_S``); every
pattern applied to input runs in linear time.
"""

from __future__ import annotations

from app.documents.parsing.detect import SNIFF_BYTES, UPLOAD_SUFFIXES, sniff
from app.documents.parsing.docx import (
    MAX_ZIP_ENTRIES,
    MAX_ZIP_RATIO,
    ZIP_RATIO_FLOOR,
    ZIP_READ_CHUNK,
    bounded_docx,
    check_zip_bomb,
)
from app.documents.parsing.html import HTML_FEED_CHUNK
from app.documents.parsing.image import IMAGE_SUFFIXES
from app.documents.parsing.limits import OcrLimits, ParseLimits
from app.documents.parsing.model import DocumentType, Page, ParsedDocument
from app.documents.parsing.ocr import (
    OCR_IMAGE_TARGET,
    OnPage,
    ocr_available,
    recognise_pages,
    upload_suffixes,
)
from app.documents.parsing.parse import parse_document
from app.documents.parsing.pdf import PDF_PARSER_START_TIMEOUT_S
from app.documents.parsing.text import TEXT_PAGE_CHARS

__all__ = [
    "HTML_FEED_CHUNK",
    "IMAGE_SUFFIXES",
    "MAX_ZIP_ENTRIES",
    "MAX_ZIP_RATIO",
    "OCR_IMAGE_TARGET",
    "PDF_PARSER_START_TIMEOUT_S",
    "SNIFF_BYTES",
    "TEXT_PAGE_CHARS",
    "UPLOAD_SUFFIXES",
    "ZIP_RATIO_FLOOR",
    "ZIP_READ_CHUNK",
    "DocumentType",
    "OcrLimits",
    "OnPage",
    "Page",
    "ParseLimits",
    "ParsedDocument",
    "bounded_docx",
    "check_zip_bomb",
    "ocr_available",
    "parse_document",
    "recognise_pages",
    "sniff",
    "upload_suffixes",
]
