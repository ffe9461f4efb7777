from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib

import pytest

from app.documents.errors import (
    ArchiveBombError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedDocumentTypeError,
)
from app.documents.parsing import DocumentType, parse_document, sniff
from tests.support.documents import (
    GIF_BYTES,
    PNG_BYTES,
    make_corrupt_pdf,
    make_docx,
    make_docx_bomb,
    make_encrypted_pdf,
    make_pdf,
    page_text,
)

pytestmark = pytest.mark.unit


def test_type_comes_from_the_content_not_the_file_name() -> None:
    assert sniff(make_pdf(["hello"]), "notes.txt") is DocumentType.pdf
    assert sniff(make_docx([("A", "b")]), "report.pdf") is DocumentType.docx
    assert sniff(b"<!DOCTYPE html><html><body>x</body></html>", "a.txt") is DocumentType.html
    assert sniff(PNG_BYTES, "photo.pdf") is DocumentType.png  # an image, recognised by OCR
    with pytest.raises(UnsupportedDocumentTypeError, match="image/gif"):
        sniff(GIF_BYTES, "photo.pdf")


@pytest.mark.parametrize(
    "prose",
    [
        b"SQLite accepts all of the usual syntax for JOIN operators.",  # "SQLi": SQLite's magic
        b"BM25 ranks passages by term frequency.",  # "BM": a bitmap's
        b"ID3 tags carry an MP3's title.",  # "ID3": an MP3's
        b"MZ is where the story starts.",  # "MZ": a Windows executable's
    ],
)
def test_prose_that_starts_like_a_binary_signature_is_text(prose: bytes) -> None:
    assert sniff(prose, "page.txt") is DocumentType.text
    assert parse_document(prose).pages[0].text.strip() == prose.decode()


def test_a_real_binary_with_a_text_like_signature_is_still_refused() -> None:
    with pytest.raises(UnsupportedDocumentTypeError, match="sqlite"):
        sniff(b"SQLite format 3\x00" + bytes(100), "db.txt")


def test_markdown_is_told_from_plain_text_by_name_or_by_its_syntax() -> None:
    assert sniff(b"just words", "readme.md") is DocumentType.markdown
    assert sniff(b"# Title\n\n- one\n- two\n") is DocumentType.markdown
    assert sniff(b"just words in a sentence.") is DocumentType.text


def test_pdf_pages_keep_their_numbers_and_hashes() -> None:
    parsed = parse_document(make_pdf([page_text(1), page_text(2), page_text(3)]))
    assert [page.number for page in parsed.pages] == [1, 2, 3]
    assert "Page 2 sentence 0" in parsed.pages[1].text
    assert len({page.sha256 for page in parsed.pages}) == 3
    again = parse_document(make_pdf([page_text(1), page_text(2, topic="other"), page_text(3)]))
    assert [a.sha256 == b.sha256 for a, b in zip(parsed.pages, again.pages, strict=True)] == [
        True,
        False,
        True,
    ]


def test_docx_pages_follow_page_breaks_or_headings() -> None:
    by_heading = parse_document(make_docx([("One", "alpha"), ("Two", "beta"), ("Three", "gamma")]))
    assert by_heading.page_count == 3 and by_heading.pages[2].text == "Three\ngamma"
    by_break = parse_document(make_docx([("One", "alpha"), ("Two", "beta")], page_breaks=True))
    assert by_break.page_count == 2


def test_markdown_sections_ignore_headings_inside_code_fences() -> None:
    text = b"# A\n\nintro\n\n```\n# not a heading\n```\n\n## B\n\nmore\n"
    parsed = parse_document(text, filename="x.md")
    assert parsed.page_count == 2 and "# not a heading" in parsed.pages[0].text


def test_plain_text_splits_on_form_feeds() -> None:
    assert parse_document(b"first page\fsecond page", filename="a.txt").page_count == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (make_encrypted_pdf(["secret"]), EncryptedDocumentError),
        (make_corrupt_pdf(), CorruptDocumentError),
        (b"", EmptyDocumentError),
        (make_docx_bomb(), ArchiveBombError),
        (b"PK\x03\x04" + b"\0" * 64, CorruptDocumentError),
        (b"\x00\x01\x02binary" * 10, UnsupportedDocumentTypeError),
    ],
    ids=["encrypted", "corrupt", "empty", "zip-bomb", "broken-zip", "binary"],
)
def test_bad_documents_raise_their_own_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_document(data)


def test_declared_expansion_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ArchiveBombError, match="expands"):
        parse_document(make_docx([("A", "b")]), max_uncompressed_bytes=1000)


def test_a_part_that_lies_about_its_size_is_cut_off_at_the_limit() -> None:
    import docx  # noqa: F401  (imported outside the measurement)

    bomb = _lying_docx({"word/document.xml": 50 * MIB})
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        assert archive.getinfo("word/document.xml").file_size == 4000
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveBombError, match=r"expands past the 1 MiB limit"):
            parse_document(bomb, max_uncompressed_bytes=MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


def test_the_limit_counts_all_parts_together() -> None:
    # python-docx's template declares ~810 KiB; the last part alone is well under the 1 MiB limit
    parts = {"word/media/padding.bin": b"\0" * (100 * 1024), "word/media/last.bin": b" " * (200 * 1024)}
    lying = _lie_about_size(_docx_with_parts(parts), "word/media/last.bin")
    with pytest.raises(ArchiveBombError, match=r"word/media/last\.bin"):
        parse_document(lying, max_uncompressed_bytes=MIB)


def test_a_part_larger_than_its_header_says_but_under_the_limit_is_corrupt() -> None:
    lying = _lying_docx({"word/document.xml": 100 * 1024})
    with pytest.raises(CorruptDocumentError, match="declares"):
        parse_document(lying, max_uncompressed_bytes=MIB)


def test_a_pdf_flate_bomb_stops_at_the_pypdf_limit() -> None:
    import pypdf

    assert 0 < pypdf.get_configuration().zlib_maximum_output_length <= 100 * MIB
    bomb = _flate_bomb_pdf(50 * MIB)
    tracemalloc.start()
    try:
        with (
            pypdf.apply_configuration(zlib_maximum_output_length=MIB),
            pytest.raises(ArchiveBombError, match="PDF"),
        ):
            parse_document(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


# --- documents whose headers lie ---------------------------------------------------------------

MIB = 1024 * 1024
LIE = 4000


def _docx_with_parts(extra: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(make_docx([("Title", "Harmless looking text.")]))) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            target.writestr(item.filename, source.read(item.filename))
        for name, body in extra.items():
            target.writestr(name, body)
    return out.getvalue()


def _inflate(data: bytes, name: str, padding: int) -> bytes:
    """``data`` with ``padding`` spaces appended to the part ``name`` (still honest headers)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            body = source.read(item.filename)
            target.writestr(item.filename, body + b" " * padding if item.filename == name else body)
    return out.getvalue()


def _lie_about_size(data: bytes, name: str) -> bytes:
    """Rewrite the uncompressed size of ``name`` to ``LIE`` in its local and central headers."""
    buffer = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offset = archive.getinfo(name).header_offset
    struct.pack_into("<I", buffer, offset + 22, LIE)
    end = buffer.rfind(b"PK\x05\x06")
    (count,) = struct.unpack_from("<H", buffer, end + 10)
    (position,) = struct.unpack_from("<I", buffer, end + 16)
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", buffer, position + 28)
        if buffer[position + 46 : position + 46 + name_length] == name.encode():
            struct.pack_into("<I", buffer, position + 24, LIE)
        position += 46 + name_length + extra_length + comment_length
    return bytes(buffer)


def _lying_docx(padding: dict[str, int]) -> bytes:
    data = make_docx([("Title", "Harmless looking text.")])
    for name, size in padding.items():
        data = _lie_about_size(_inflate(data, name, size), name)
    return data


def _flate_bomb_pdf(size: int) -> bytes:
    """A one-page PDF whose content stream inflates to ``size`` bytes of spaces."""
    compressor = zlib.compressobj(9)
    content = b"BT /F1 12 Tf 72 720 Td (hello) Tj ET\n"
    stream = compressor.compress(content)
    stream += b"".join(compressor.compress(b" " * MIB) for _ in range(size // MIB))
    stream += compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
