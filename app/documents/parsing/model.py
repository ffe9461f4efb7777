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

    @property
    def mime_type(self) -> str:
        return _MIME_TYPES[self]

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
}


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ParsedDocument:
    type: DocumentType
    pages: tuple[Page, ...]

    @property
    def mime_type(self) -> str:
        return self.type.mime_type

    @property
    def page_count(self) -> int:
        return len(self.pages)

    def pages_with_text(self) -> list[Page]:
        return [page for page in self.pages if page.text.strip()]
