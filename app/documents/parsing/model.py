"""What parsing yields: the document types (and their MIME types), pages and parsed documents."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from app.documents.errors import UnsupportedDocumentTypeError


class DocumentType(StrEnum):
    pdf = "pdf"
    docx = "docx"
    markdown = "markdown"
    text = "text"
    html = "html"
    png = "png"
    jpeg = "jpeg"
    tiff = "tiff"
    webp = "webp"

    @property
    def mime_type(self) -> str:
        return _MIME_TYPES[self]

    @property
    def is_image(self) -> bool:
        return self in _IMAGE_TYPES

    @classmethod
    def from_mime(cls, mime: str) -> DocumentType:
        for kind, known in _MIME_TYPES.items():
            if known == mime:
                return kind
        raise UnsupportedDocumentTypeError(f"no parser for {mime}")


_MIME_TYPES = {
    DocumentType.pdf: "application/pdf",
    DocumentType.docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    DocumentType.markdown: "text/markdown",
    DocumentType.text: "text/plain",
    DocumentType.html: "text/html",
    DocumentType.png: "image/png",
    DocumentType.jpeg: "image/jpeg",
    DocumentType.tiff: "image/tiff",
    DocumentType.webp: "image/webp",
}
_IMAGE_TYPES = frozenset({DocumentType.png, DocumentType.jpeg, DocumentType.tiff, DocumentType.webp})


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    text: str
    ocr: bool = False  # the text was recognised in an image of the page, not extracted

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ParsedDocument:
    type: DocumentType
    pages: tuple[Page, ...]
    # Pages without a usable text layer (a scanned PDF page, every frame of an image) that the
    # ingestion worker recognises (``recognise_pages``) before chunking; empty without OCR.
    ocr_pages: tuple[int, ...] = ()

    @property
    def mime_type(self) -> str:
        return self.type.mime_type

    @property
    def page_count(self) -> int:
        return len(self.pages)

    def pages_with_text(self) -> list[Page]:
        return [page for page in self.pages if page.text.strip()]
