"""Content sniffing: a document's type from its bytes (``sniff``), and decoding text input,
refusing binary content."""

from __future__ import annotations

import io
import re
import zipfile

from app.documents.errors import CorruptDocumentError, EmptyDocumentError, UnsupportedDocumentTypeError
from app.documents.parsing.image import IMAGE_SUFFIXES, sniff_image
from app.documents.parsing.model import DocumentType

SNIFF_BYTES = 4096

_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown")
# The file names a client may offer its users for upload (``GET /api/v1/limits``). The type is
# sniffed from the bytes; a name only tells Markdown and HTML from plain text.
UPLOAD_SUFFIXES = (".pdf", ".docx", ".txt", *_MARKDOWN_SUFFIXES, ".html", ".htm", *IMAGE_SUFFIXES)
_ACCEPTED = "upload PDF, DOCX, TXT, Markdown, HTML or an image (PNG, JPEG, TIFF, WebP)"
# ``[ \t]*``, not ``\s*``: ``\s`` crosses newlines, so a run of blank lines made every line start
# rescan the rest of the run (quadratic in the sniffed text).
_MARKDOWN_HINT = re.compile(r"^(#{1,6} |[ \t]*[-*] |[ \t]*\d+\. |```|> )", re.MULTILINE)
# Matched at one position after the leading comments (``_looks_like_html``), never with a repeated
# group around them: ``(<!--.*?-->\s*)*`` backtracked exponentially on ``<!---->`` repeats.
_HTML_TAG = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I)
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what ``bytes.strip`` and ``\s`` on bytes treat as space
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def sniff(data: bytes, filename: str | None = None) -> DocumentType:
    """The document's type from its bytes; the file name only tells Markdown from plain text."""
    head = data[:SNIFF_BYTES]
    if not data.strip():
        raise EmptyDocumentError("the file is empty")
    if head.lstrip()[:5] == b"%PDF-" or b"%PDF-" in head[:1024]:
        return DocumentType.pdf
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    image = sniff_image(head)
    if image is not None:
        return image
    if _looks_like_html(_strip_bom(head)):
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


def _looks_like_html(head: bytes) -> bool:
    """Whitespace and ``<!-- comments -->``, then ``<!doctype html``, ``<html``, ``<head`` or
    ``<body``. One forward scan (``bytes.find`` per comment): linear in ``head``. A comment ends
    at its first ``-->`` (or is ``<!-->`` / ``<!--->``), as in HTML."""
    position = len(head) - len(head.lstrip(_ASCII_SPACE))
    while head.startswith(b"<!--", position):
        if head.startswith(b">", position + 4) or head.startswith(b"->", position + 4):
            position = head.index(b">", position + 4) + 1
        else:
            end = head.find(b"-->", position + 4)
            if end < 0:
                return False
            position = end + 3
        while position < len(head) and head[position] in _ASCII_SPACE:
            position += 1
    return _HTML_TAG.match(head, position) is not None


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _binary_kind(head: bytes) -> str | None:
    """The binary format ``head`` starts with, if any. Text is never one: several signatures are
    printable ("SQLi" for SQLite, "BM" for a bitmap, "ID3", "MZ"), and prose starts with them
    ("SQLite accepts ...", "BM25 ranks ..."); a real file of those formats has control bytes or
    invalid UTF-8 within its first kilobytes."""
    if not _CONTROL_BYTES.search(head) and _is_utf8(head):
        return None
    import filetype

    guess = filetype.guess(head)
    return None if guess is None else str(guess.mime)


def _is_utf8(head: bytes) -> bool:
    """UTF-8, allowing a character cut at the end of the sniffed bytes."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _decode_text(data: bytes, *, detected_binary: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise CorruptDocumentError("the UTF-16 text does not decode") from exc
    if detected_binary is not None:
        raise UnsupportedDocumentTypeError(f"the content is {detected_binary}; {_ACCEPTED}")
    if _CONTROL_BYTES.search(data[:SNIFF_BYTES]):
        raise UnsupportedDocumentTypeError(f"the content is binary, not text; {_ACCEPTED}")
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
