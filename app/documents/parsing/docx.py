"""DOCX text extraction: ZIP-bomb checks on the declared and the actual expansion, then
python-docx, paragraph by paragraph and table row by table row."""

from __future__ import annotations

import copy
import io
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from app.documents.errors import ArchiveBombError, CorruptDocumentError
from app.documents.parsing.limits import _Budget, _normalise
from app.errors import AppError

MAX_ZIP_ENTRIES = 5000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per entry larger than ZIP_RATIO_FLOOR
ZIP_RATIO_FLOOR = 1024 * 1024
ZIP_READ_CHUNK = 64 * 1024  # bytes decompressed per read when copying DOCX parts


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
