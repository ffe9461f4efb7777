"""What one document may cost (``ParseLimits``) and the per-document ``_Budget`` that every
format's extractor charges its pages, characters and time to."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.documents.errors import DocumentTooLargeError, PageParseTimeoutError, TooManyPagesError

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class OcrLimits:
    """How pages without a text layer are recognised (``OCR_*`` settings). ``enabled`` is the
    operator's switch; OCR also needs requirements-ocr.txt installed (``ocr_installed``)."""

    enabled: bool = True
    page_min_chars: int = 32  # a PDF page with fewer non-space characters is OCR'd
    page_timeout_s: float = 120.0  # rendering and recognising one page
    max_pixels: int = 40_000_000  # per image frame or rendered page: decompression bombs
    render_dpi: int = 200  # PDF pages are rendered at this resolution (less if over max_pixels)


@dataclass(frozen=True)
class ParseLimits:
    """What one document may cost (``DOC_MAX_PAGES``, ``DOC_MAX_CHARS``,
    ``DOC_PAGE_PARSE_TIMEOUT_S``); see ``parse_document`` for exactly what each bounds."""

    max_pages: int = 2000
    max_chars: int = 5_000_000
    page_timeout_s: float = 10.0
    ocr: OcrLimits = OcrLimits()

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            max_pages=settings.doc_max_pages,
            max_chars=settings.doc_max_chars,
            page_timeout_s=settings.doc_page_parse_timeout_s,
            ocr=OcrLimits(
                enabled=settings.ocr_enabled,
                page_min_chars=settings.ocr_page_min_chars,
                page_timeout_s=settings.ocr_page_timeout_s,
                max_pixels=settings.ocr_max_pixels,
                render_dpi=settings.ocr_render_dpi,
            ),
        )


class _Budget:
    """Counts pages and extracted characters against ``ParseLimits`` and times the current page."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.pages = 0
        self.chars = 0
        self.pending = 0  # characters of the page being assembled, not yet in ``chars``
        self._page_started = time.monotonic()

    def restart_clock(self) -> None:
        self._page_started = time.monotonic()

    def check_time(self, what: str | None = None) -> None:
        if time.monotonic() - self._page_started > self.limits.page_timeout_s:
            raise self.timeout_error(what or f"page {self.pages + 1}")

    def timeout_error(self, what: str) -> PageParseTimeoutError:
        return PageParseTimeoutError(
            f"{what} took longer than {self.limits.page_timeout_s:g} s to parse "
            "(limit DOC_PAGE_PARSE_TIMEOUT_S)"
        )

    def expect_pages(self, count: int) -> None:
        if count > self.limits.max_pages:
            raise TooManyPagesError(
                f"the document has {count} pages (limit {self.limits.max_pages}, DOC_MAX_PAGES)"
            )

    def add_pending(self, chars: int) -> None:
        self.pending += chars
        if self.chars + self.pending > self.limits.max_chars:
            raise self.too_large()

    def too_large(self) -> DocumentTooLargeError:
        return DocumentTooLargeError(
            f"the document has more than {self.limits.max_chars} characters of text (limit DOC_MAX_CHARS)"
        )

    def page(self, text: str) -> str:
        """One finished page: normalised, counted; the next page's clock starts."""
        self.pages += 1
        if self.pages > self.limits.max_pages:
            raise TooManyPagesError(
                f"the document has more than {self.limits.max_pages} pages (limit DOC_MAX_PAGES)"
            )
        normalised = _normalise(text)
        self.chars += len(normalised)
        self.pending = 0
        if self.chars > self.limits.max_chars:
            raise self.too_large()
        self.restart_clock()
        return normalised


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
