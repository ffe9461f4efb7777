"""Content sniffing and text extraction, page by page. Pure, synchronous CPU work: callers run it
in a worker thread (``asyncio.to_thread``), never on the event loop.

A "page" is the unit of change detection and citation: a PDF page; a DOCX page (explicit page
breaks) or, without breaks, a section starting at a Heading 1/2; a Markdown/HTML section starting
at a level-1/2 heading; a TXT form-feed page or, without form feeds, a run of paragraphs of at most
``TEXT_PAGE_CHARS`` characters.

Hostile input is bounded (``ParseLimits``): the page count (``DOC_MAX_PAGES``), the extracted
text (``DOC_MAX_CHARS``) and the time one page may take (``DOC_PAGE_PARSE_TIMEOUT_S``); every
pattern applied to input runs in linear time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any

from app.documents.errors import (
    ArchiveBombError,
    CorruptDocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    PageParseTimeoutError,
    TooManyPagesError,
    UnsupportedDocumentTypeError,
)
from app.errors import AppError

if TYPE_CHECKING:
    from app.settings import Settings

TEXT_PAGE_CHARS = 3000
SNIFF_BYTES = 4096
MAX_ZIP_ENTRIES = 5000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per entry larger than ZIP_RATIO_FLOOR
ZIP_RATIO_FLOOR = 1024 * 1024
ZIP_READ_CHUNK = 64 * 1024  # bytes decompressed per read when copying DOCX parts
HTML_FEED_CHUNK = 64 * 1024  # characters handed to the HTML parser at a time (see _html_to_markdown)
PDF_PARSER_START_TIMEOUT_S = 60.0  # the PDF parser process's own start-up (not the document's fault)


@dataclass(frozen=True)
class ParseLimits:
    """What one document may cost (``DOC_MAX_PAGES``, ``DOC_MAX_CHARS``,
    ``DOC_PAGE_PARSE_TIMEOUT_S``); see ``parse_document`` for exactly what each bounds."""

    max_pages: int = 2000
    max_chars: int = 5_000_000
    page_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            max_pages=settings.doc_max_pages,
            max_chars=settings.doc_max_chars,
            page_timeout_s=settings.doc_page_parse_timeout_s,
        )


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
# ``[ \t]*``, not ``\s*``: ``\s`` crosses newlines, so a run of blank lines made every line start
# rescan the rest of the run (quadratic in the sniffed text).
_MARKDOWN_HINT = re.compile(r"^(#{1,6} |[ \t]*[-*] |[ \t]*\d+\. |```|> )", re.MULTILINE)
# Matched at one position after the leading comments (``_looks_like_html``), never with a repeated
# group around them: ``(<!--.*?-->\s*)*`` backtracked exponentially on ``<!---->`` repeats.
_HTML_TAG = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I)
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what ``bytes.strip`` and ``\s`` on bytes treat as space
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


# --- sniffing helpers -------------------------------------------------------------------------


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

# Runs as ``python -I -c _PDF_PARSER <options>`` with the PDF on stdin; answers with frames on
# stdout: one kind byte, an 8-byte big-endian length, the payload. R: ready (input read, pypdf
# imported); N: page count; P: one page's text (UTF-8, surrogates passed through); D: done;
# E: a JSON error {"kind", "detail"}. Only pypdf is imported, so it starts in a fraction of a
# second; SIGALRM (its default action ends the process) stops it should its parent be gone.
_PDF_PARSER = r"""
import io, json, logging, signal, struct, sys, traceback

out = sys.stdout.buffer


def send(kind, payload=b""):
    out.write(kind + struct.pack(">Q", len(payload)) + payload)
    out.flush()


def fail(kind, detail=""):
    send(b"E", json.dumps({"kind": kind, "detail": detail}).encode())


def main():
    options = json.loads(sys.argv[1])
    alarm = getattr(signal, "alarm", lambda seconds: 0)
    logging.disable(logging.CRITICAL)
    data = sys.stdin.buffer.read()
    import pypdf
    from pypdf.errors import (
        DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError, PdfStreamError,
    )

    pypdf.overwrite_configuration(**options["pypdf"])
    send(b"R")
    try:
        alarm(options["alarm_s"])
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except (FileNotDecryptedError, DependencyError, NotImplementedError):
                opened = False
            if not opened:
                return fail("encrypted")
        pages = reader.pages
        send(b"N", str(len(pages)).encode())
        for page in pages:
            alarm(options["alarm_s"])
            send(b"P", (page.extract_text() or "").encode("utf-8", "surrogatepass"))
        alarm(0)
        send(b"D")
    except FileNotDecryptedError:
        fail("encrypted")
    except LimitReachedError as exc:
        fail("limit", str(exc)[:500])
    except RecursionError:
        fail("nested")
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        fail("corrupt", type(exc).__name__ + ": " + str(exc)[:300])
    except Exception:
        fail("crash", traceback.format_exc()[-2000:])


main()
"""
_FRAME_HEADER = struct.Struct(">cQ")
_SMALL_FRAME = 64 * 1024


class _ParserTimeout(Exception):
    pass


class _ParserExited(Exception):
    pass


def _pdf_pages(data: bytes, budget: _Budget) -> list[str]:
    """The PDF's page texts, extracted by pypdf in a child process (see ``parse_document``)."""
    options = {"alarm_s": math.ceil(budget.limits.page_timeout_s) + 5, "pypdf": _pypdf_overrides()}
    with subprocess.Popen(
        [sys.executable, "-I", "-c", _PDF_PARSER, json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        feeder = threading.Thread(
            target=_feed, args=(child.stdin, data), name="pdf-parser-input", daemon=True
        )
        feeder.start()
        try:
            return _read_pdf_pages(child, child.stdout, budget)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            feeder.join(timeout=10)


def _pypdf_overrides() -> dict[str, Any]:
    """pypdf's configuration where this thread's context changed it (tests tighten its limits)."""
    from pypdf import Configuration, get_configuration

    current, default = get_configuration(), Configuration()
    overrides: dict[str, Any] = {}
    for field in dataclasses.fields(current):
        value = getattr(current, field.name)
        if value != getattr(default, field.name) and isinstance(value, int | float | str | bool | None):
            overrides[field.name] = value
    return overrides


def _feed(stream: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            written = stream.write(view)
            view = view[written or 0 :]
    except (OSError, ValueError):
        pass  # the parser process ended (or was killed) before reading everything
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _read_pdf_pages(child: subprocess.Popen[bytes], stdout: IO[bytes], budget: _Budget) -> list[str]:
    frames = _FrameReader(stdout)
    try:
        return _pdf_frames(child, frames, budget)
    finally:
        frames.close()


def _pdf_frames(child: subprocess.Popen[bytes], frames: _FrameReader, budget: _Budget) -> list[str]:
    timeout = budget.limits.page_timeout_s
    pages: list[str] = []
    stage = "start"
    deadline = time.monotonic() + PDF_PARSER_START_TIMEOUT_S
    while True:
        try:
            kind, payload = frames.next(deadline, max_size=_max_frame(stage, budget))
        except _ParserTimeout:
            if stage == "start":
                raise RuntimeError("the PDF parser process did not start in time") from None
            raise budget.timeout_error(_stage_name(stage, len(pages))) from None
        except _ParserExited:
            status = child.wait()
            if stage != "start" and status == -getattr(signal, "SIGALRM", -1):
                raise budget.timeout_error(_stage_name(stage, len(pages))) from None
            raise RuntimeError(f"the PDF parser process exited unexpectedly (status {status})") from None
        if kind == b"P":
            pages.append(budget.page(payload.decode("utf-8", "surrogatepass")))
        elif kind == b"R":
            stage = "open"
        elif kind == b"N":
            count = int(payload)
            if count == 0:
                raise EmptyDocumentError("the PDF has no pages")
            budget.expect_pages(count)
            stage = "pages"
        elif kind == b"D":
            return pages
        elif kind == b"E":
            raise _pdf_error(json.loads(payload))
        else:
            raise RuntimeError(f"the PDF parser process sent an unknown frame {kind!r}")
        deadline = time.monotonic() + timeout


def _stage_name(stage: str, pages_done: int) -> str:
    return "opening the PDF" if stage == "open" else f"page {pages_done + 1}"


def _max_frame(stage: str, budget: _Budget) -> int:
    if stage != "pages":
        return _SMALL_FRAME
    # UTF-8 is at most 4 bytes a character; whitespace collapsing shrinks a page further
    return 4 * max(0, budget.limits.max_chars - budget.chars) + 2**20


def _pdf_error(error: dict[str, str]) -> Exception:
    kind, detail = error.get("kind"), error.get("detail", "")
    cause = RuntimeError(f"pypdf: {detail}") if detail else None
    failure: Exception
    if kind == "encrypted":
        failure = EncryptedDocumentError("the PDF is password-protected")
    elif kind == "limit":  # pypdf's own bounds, e.g. a FlateDecode stream's output
        from pypdf import get_configuration

        limit = get_configuration().zlib_maximum_output_length // 2**20
        failure = ArchiveBombError(
            f"the PDF exceeds a decoding safety limit (streams may expand to {limit} MiB)"
        )
    elif kind == "nested":
        failure = CorruptDocumentError("the PDF structure is too deeply nested")
    elif kind == "corrupt":
        failure = CorruptDocumentError("the PDF cannot be read: its structure is damaged")
    else:
        failure = RuntimeError(f"the PDF parser failed: {detail}")
    failure.__cause__ = cause
    return failure


class _FrameReader:
    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def next(self, deadline: float, *, max_size: int) -> tuple[bytes, bytes]:
        """The next frame; ``_ParserTimeout`` after ``deadline``, ``_ParserExited`` at EOF."""
        kind, size = _FRAME_HEADER.unpack(self._read(_FRAME_HEADER.size, deadline))
        if size > max_size:
            if kind == b"P":
                raise DocumentTooLargeError("a page of the PDF has more text than is left of DOC_MAX_CHARS")
            raise RuntimeError(f"the PDF parser process sent an oversized frame {kind!r}")
        return kind, self._read(size, deadline)

    def close(self) -> None:
        self._selector.close()

    def _read(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise _ParserTimeout()
            chunk = os.read(self._fd, min(max(size - len(self._buffer), 65536), 2**22))
            if not chunk:
                raise _ParserExited()
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


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
        raise CorruptDocumentError("the DOCX cannot be read: its ZIP container is damaged") from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted part, unknown compression
        raise CorruptDocumentError(
            "the DOCX cannot be read: a part is encrypted or uses an unsupported compression method"
        ) from exc
    out.seek(0)
    return out


def _docx_blocks(document: Any, budget: _Budget) -> Iterator[tuple[str, bool, bool]]:
    """(text, starts_section, page_break_after) for each paragraph and table, in body order; each
    paragraph and table row is counted against ``max_chars`` and the page clock as it is read."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for element in document.element.body.iterchildren():
        budget.check_time()
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            heading = style in {"Title", "Heading 1", "Heading 2"}
            breaks = bool(element.xpath('.//w:br[@w:type="page"]'))
            text = paragraph.text
            budget.add_pending(len(_normalise(text)))
            yield text, heading, breaks
        elif tag == "tbl":
            table = Table(element, document)
            rows = []
            for row in table.rows:
                rows.append(" | ".join(cell.text.strip() for cell in row.cells))
                budget.add_pending(len(_normalise(rows[-1])))
                budget.check_time()
            yield "\n".join(rows), False, False


def _docx_pages(data: bytes, max_uncompressed_bytes: int, budget: _Budget) -> list[str]:
    check_zip_bomb(data, max_uncompressed_bytes)
    package = bounded_docx(data, max_uncompressed_bytes)
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(package)
        budget.restart_clock()  # loading the XML is one linear lxml call, bounded by the zip checks
        return _docx_split(document, budget)
    except AppError:
        raise  # the limits
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CorruptDocumentError("the DOCX cannot be read: a required part is missing or damaged") from exc
    except Exception as exc:  # lxml raises its own XMLSyntaxError family on damaged parts
        raise CorruptDocumentError("the DOCX cannot be read: its XML is damaged") from exc


def _docx_split(document: Any, budget: _Budget) -> list[str]:
    """Pages at explicit page breaks or, without any, at Heading 1/2 sections; each page is
    counted (pages, characters) as soon as it is complete, each paragraph as soon as it is read."""
    body = document.element.body
    by_breaks = bool(body.xpath('boolean(./w:p//w:br[@w:type="page"])'))
    pages: list[str] = []
    current: list[str] = []
    has_text = False
    for text, heading, page_break in _docx_blocks(document, budget):
        if not by_breaks and heading and has_text:
            pages.append(budget.page("\n".join(current)))
            current, has_text = [], False
        current.append(text)
        has_text = has_text or bool(text.strip())
        if by_breaks and page_break:
            pages.append(budget.page("\n".join(current)))
            current, has_text = [], False
    if has_text or not pages:
        pages.append(budget.page("\n".join(current)))
    return pages


# --- text, Markdown, HTML ---------------------------------------------------------------------

_SECTION_HEADING = re.compile(r"^#{1,2}\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _section_pages(text: str, budget: _Budget) -> list[str]:
    sections: list[str] = []
    current: list[str] = []
    has_text = False
    in_fence = False
    for line in text.splitlines():
        budget.check_time()
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and has_text and _SECTION_HEADING.match(line):
            sections.append(budget.page("\n".join(current)))
            current, has_text = [], False
        current.append(line)
        has_text = has_text or bool(line.strip())
    sections.append(budget.page("\n".join(current)))
    return sections


def _text_pages(text: str, budget: _Budget) -> list[str]:
    if "\f" in text:
        budget.expect_pages(text.count("\f") + 1)
        return [budget.page(page) for page in text.split("\f")]
    pages: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        budget.check_time()
        if current and len(current) + len(paragraph) + 2 > TEXT_PAGE_CHARS:
            pages.append(budget.page(current))
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    pages.append(budget.page(current))
    return pages


class _HTMLText:
    """lxml parser target: the text of an HTML document, level-1/2 headings kept as Markdown
    headings (so sections become pages), block elements as line breaks, scripts and styles
    dropped. libxml2's HTML parser is linear-time C; the standard library's ``HTMLParser`` is
    quadratic on unclosed tags (``<a`` repeated) before Python 3.11.13."""

    _BLOCKS = frozenset({"p", "div", "li", "tr", "br", "section", "article", "h3", "h4", "h5", "h6", "pre"})
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _CHECK_EVERY = 256

    def __init__(self, budget: _Budget) -> None:
        self.parts: list[str] = []
        self._skipping = 0
        self._events = 0
        self._budget = budget
        self._section = 1

    def _tick(self) -> None:
        self._events += 1
        if self._events % self._CHECK_EVERY == 0:
            self._budget.check_time(f"section {self._section} of the HTML")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._tick()
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"h1", "h2"}:
            self._section += 1
            self._budget.restart_clock()
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def end(self, tag: str) -> None:
        self._tick()
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS or tag in {"h1", "h2"}:
            self.parts.append("\n")

    def data(self, data: str) -> None:
        self._tick()
        if not self._skipping:
            self.parts.append(data)

    def close(self) -> str:
        return "".join(self.parts)


def _html_to_markdown(html: str, budget: _Budget) -> str:
    from lxml import etree

    target = _HTMLText(budget)
    parser = etree.HTMLParser(
        target=target,
        encoding="utf-8",
        recover=True,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        huge_tree=True,  # no depth or text-node caps that would silently truncate the text
    )
    # Fed in pieces: lxml reports an exception raised by the target (the clock) only when the
    # current ``feed`` returns.
    for start in range(0, len(html), HTML_FEED_CHUNK):
        parser.feed(html[start : start + HTML_FEED_CHUNK].encode("utf-8", "replace"))
    text = str(parser.close())
    budget.restart_clock()
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(lines)
