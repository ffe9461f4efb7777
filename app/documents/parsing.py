"""Content sniffing and text extraction, page by page. Pure, synchronous CPU work: callers run it
in a worker thread (``asyncio.to_thread``), never on the event loop.

A "page" is the unit of change detection and citation: a PDF page; a DOCX page (explicit page
breaks) or, without breaks, a section starting at a Heading 1/2; a Markdown/HTML section starting
at a level-1/2 heading; a TXT form-feed page or, without form feeds, a run of paragraphs of at most
``TEXT_PAGE_CHARS`` characters.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any

from app.documents.errors import (
    ArchiveBombError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedDocumentTypeError,
)

TEXT_PAGE_CHARS = 3000
SNIFF_BYTES = 4096
MAX_ZIP_ENTRIES = 5000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per entry larger than ZIP_RATIO_FLOOR
ZIP_RATIO_FLOOR = 1024 * 1024
ZIP_READ_CHUNK = 64 * 1024  # bytes decompressed per read when copying DOCX parts


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

_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown")
_MARKDOWN_HINT = re.compile(r"^(#{1,6} |\s*[-*] |\s*\d+\. |```|> )", re.MULTILINE)
_HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S
)
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


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


def sniff(data: bytes, filename: str | None = None) -> DocumentType:
    """The document's type from its bytes; the file name only tells Markdown from plain text."""
    head = data[:SNIFF_BYTES]
    if not data.strip():
        raise EmptyDocumentError("the file is empty")
    if head.lstrip()[:5] == b"%PDF-" or b"%PDF-" in head[:1024]:
        return DocumentType.pdf
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    if _HTML_START.match(_strip_bom(head)):
        return DocumentType.html
    text = _decode_text(data, detected_binary=_binary_kind(head))
    name = (filename or "").lower()
    if name.endswith(_MARKDOWN_SUFFIXES):
        return DocumentType.markdown
    if name.endswith((".html", ".htm")):
        return DocumentType.html
    if not name.endswith(".txt") and len(_MARKDOWN_HINT.findall(text[:SNIFF_BYTES])) >= 2:
        return DocumentType.markdown
    return DocumentType.text


def parse_document(
    data: bytes,
    *,
    filename: str | None = None,
    doc_type: DocumentType | None = None,
    max_uncompressed_bytes: int = 100 * 1024 * 1024,
) -> ParsedDocument:
    """Sniff (unless ``doc_type`` is given), check and extract. Raises the ``DocumentInputError``
    subclasses for encrypted, corrupt, empty, bomb-like or unsupported input."""
    kind = doc_type or sniff(data, filename)
    if kind is DocumentType.pdf:
        texts = _pdf_pages(data)
    elif kind is DocumentType.docx:
        texts = _docx_pages(data, max_uncompressed_bytes)
    elif kind is DocumentType.html:
        texts = _section_pages(_html_to_markdown(_decode_text(data, detected_binary=None)))
    elif kind is DocumentType.markdown:
        texts = _section_pages(_decode_text(data, detected_binary=None))
    else:
        texts = _text_pages(_decode_text(data, detected_binary=None))
    pages = tuple(Page(number, _normalise(text)) for number, text in enumerate(texts, start=1))
    parsed = ParsedDocument(kind, pages)
    if not parsed.pages_with_text():
        detail = "the document has no extractable text"
        if kind is DocumentType.pdf:
            detail += " (a scanned PDF? OCR is not supported)"
        raise EmptyDocumentError(detail)
    return parsed


# --- sniffing helpers -------------------------------------------------------------------------


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _binary_kind(head: bytes) -> str | None:
    import filetype

    guess = filetype.guess(head)
    return None if guess is None else str(guess.mime)


def _decode_text(data: bytes, *, detected_binary: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise CorruptDocumentError("the UTF-16 text does not decode") from exc
    if detected_binary is not None:
        raise UnsupportedDocumentTypeError(
            f"the content is {detected_binary}; upload PDF, DOCX, TXT, Markdown or HTML"
        )
    if _CONTROL_BYTES.search(data[:SNIFF_BYTES]):
        raise UnsupportedDocumentTypeError(
            "the content is binary, not text; upload PDF, DOCX, TXT, Markdown or HTML"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _sniff_zip(data: bytes) -> DocumentType:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptDocumentError("the ZIP container (DOCX) is damaged") from exc
    if "word/document.xml" in names:
        return DocumentType.docx
    raise UnsupportedDocumentTypeError("a ZIP archive that is not a DOCX document")


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- PDF --------------------------------------------------------------------------------------


def _pdf_pages(data: bytes) -> list[str]:
    from pypdf import PdfReader, get_configuration
    from pypdf.errors import (
        DependencyError,
        FileNotDecryptedError,
        LimitReachedError,
        PdfReadError,
        PdfStreamError,
    )

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except (FileNotDecryptedError, DependencyError, NotImplementedError) as exc:
                raise EncryptedDocumentError("the PDF is password-protected") from exc
            if not opened:
                raise EncryptedDocumentError("the PDF is password-protected")
        pages = [page.extract_text() or "" for page in reader.pages]
    except EncryptedDocumentError:
        raise
    except FileNotDecryptedError as exc:
        raise EncryptedDocumentError("the PDF is password-protected") from exc
    except LimitReachedError as exc:  # pypdf's own bounds, e.g. a FlateDecode stream's output
        limit = get_configuration().zlib_maximum_output_length // 2**20
        raise ArchiveBombError(
            f"the PDF exceeds a decoding safety limit (streams may expand to {limit} MiB): {exc}"
        ) from exc
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise CorruptDocumentError(f"the PDF cannot be read ({type(exc).__name__})") from exc
    except RecursionError as exc:
        raise CorruptDocumentError("the PDF structure is too deeply nested") from exc
    if not pages:
        raise EmptyDocumentError("the PDF has no pages")
    return pages


# --- DOCX -------------------------------------------------------------------------------------


def check_zip_bomb(data: bytes, max_uncompressed_bytes: int) -> None:
    """Refuse archives whose *declared* expansion is unsafe, before any entry is decompressed.
    Headers can lie (``zipfile`` inflates a whole entry on a full read and only then cuts it to
    the declared size), so ``bounded_docx`` still counts the bytes actually produced."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptDocumentError("the ZIP container (DOCX) is damaged") from exc
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ArchiveBombError(f"the DOCX has {len(entries)} parts (limit {MAX_ZIP_ENTRIES})")
    total = sum(entry.file_size for entry in entries)
    if total > max_uncompressed_bytes:
        raise ArchiveBombError(
            f"the DOCX expands to {total // 2**20} MiB (limit {max_uncompressed_bytes // 2**20} MiB)"
        )
    for entry in entries:
        if entry.file_size > ZIP_RATIO_FLOOR and entry.file_size > MAX_ZIP_RATIO * max(
            entry.compress_size, 1
        ):
            raise ArchiveBombError(
                f"the DOCX part {entry.filename} has a compression ratio above {MAX_ZIP_RATIO}"
            )


def bounded_docx(data: bytes, max_uncompressed_bytes: int) -> io.BytesIO:
    """The DOCX re-packed uncompressed (``ZIP_STORED``) from parts decompressed in chunks, whatever
    their headers declare: more than ``max_uncompressed_bytes`` in total raises ``ArchiveBombError``
    as soon as it is produced, so at most the limit plus one chunk is ever held. A part larger
    than its header declares (but within the limit) is corrupt, as ``zipfile`` would say too."""
    limit_mib = max_uncompressed_bytes // 2**20
    out = io.BytesIO()
    total = 0
    try:
        with (
            zipfile.ZipFile(io.BytesIO(data)) as source,
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target,
        ):
            # one entry per name, the one zipfile (and so python-docx) would read
            for name in dict.fromkeys(entry.filename for entry in source.infolist()):
                declared = source.getinfo(name)
                if declared.is_dir():
                    continue
                # Let zipfile inflate past the declared size: the count below is the bound. The
                # extra chunk keeps its cut-off (and CRC check on a cut stream) out of reach.
                entry = copy.copy(declared)
                entry.file_size = max_uncompressed_bytes - total + ZIP_READ_CHUNK + 1
                size = 0
                with (
                    source.open(entry) as part,
                    target.open(
                        zipfile.ZipInfo(name),
                        "w",
                        force_zip64=max_uncompressed_bytes > zipfile.ZIP64_LIMIT,
                    ) as copied,
                ):
                    while chunk := part.read(ZIP_READ_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if total > max_uncompressed_bytes:
                            raise ArchiveBombError(
                                f"the DOCX part {name} expands past the {limit_mib} MiB limit "
                                "on decompressed size (its header declares "
                                f"{declared.file_size} bytes)"
                            )
                        copied.write(chunk)
                if size > declared.file_size:
                    raise CorruptDocumentError(
                        f"the DOCX part {name} is larger than its header declares "
                        f"({size} > {declared.file_size} bytes)"
                    )
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CorruptDocumentError(f"the DOCX cannot be read ({type(exc).__name__})") from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted part, unknown compression
        raise CorruptDocumentError(f"the DOCX cannot be read ({exc})") from exc
    out.seek(0)
    return out


def _docx_blocks(document: Any) -> Iterator[tuple[str, bool, bool]]:
    """(text, starts_section, page_break_after) for each paragraph and table, in body order."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            heading = style in {"Title", "Heading 1", "Heading 2"}
            breaks = bool(element.xpath('.//w:br[@w:type="page"]'))
            yield paragraph.text, heading, breaks
        elif tag == "tbl":
            table = Table(element, document)
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
            yield "\n".join(rows), False, False


def _docx_pages(data: bytes, max_uncompressed_bytes: int) -> list[str]:
    check_zip_bomb(data, max_uncompressed_bytes)
    package = bounded_docx(data, max_uncompressed_bytes)
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(package)
        blocks = list(_docx_blocks(document))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CorruptDocumentError(f"the DOCX cannot be read ({type(exc).__name__})") from exc
    except Exception as exc:  # lxml raises its own XMLSyntaxError family on damaged parts
        raise CorruptDocumentError(f"the DOCX cannot be read ({type(exc).__name__})") from exc
    by_breaks = any(page_break for _, _, page_break in blocks)
    pages: list[list[str]] = [[]]
    for text, heading, page_break in blocks:
        if not by_breaks and heading and any(part.strip() for part in pages[-1]):
            pages.append([])
        pages[-1].append(text)
        if by_breaks and page_break:
            pages.append([])
    if len(pages) > 1 and not any(part.strip() for part in pages[-1]):
        pages.pop()
    return ["\n".join(page) for page in pages]


# --- text, Markdown, HTML ---------------------------------------------------------------------

_SECTION_HEADING = re.compile(r"^#{1,2}\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _section_pages(text: str) -> list[str]:
    sections: list[list[str]] = [[]]
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and _SECTION_HEADING.match(line) and any(s.strip() for s in sections[-1]):
            sections.append([])
        sections[-1].append(line)
    return ["\n".join(section) for section in sections]


def _text_pages(text: str) -> list[str]:
    if "\f" in text:
        return text.split("\f")
    pages: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        if current and len(current) + len(paragraph) + 2 > TEXT_PAGE_CHARS:
            pages.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    pages.append(current)
    return pages


class _HTMLText(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "li", "tr", "br", "section", "article", "h3", "h4", "h5", "h6", "pre"})
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"h1", "h2"}:
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS or tag in {"h1", "h2"}:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_to_markdown(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return "\n".join(lines)
