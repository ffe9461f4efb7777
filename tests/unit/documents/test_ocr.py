"""OCR's input side: image types from their bytes, the pixel cap read from headers, which PDF
pages need OCR, and the clear refusal where OCR is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.documents.errors import ImageTooLargeError, OcrUnavailableError
from app.documents.parsing import DocumentType, OcrLimits, ParseLimits, parse_document, sniff
from app.documents.parsing.ocr import needs_ocr
from tests.support.documents import make_pdf, page_text
from tests.support.scans import ScanStyle, image_bytes, png_with_header_size, render_page

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("image_format", "expected"),
    [
        ("PNG", DocumentType.png),
        ("JPEG", DocumentType.jpeg),
        ("TIFF", DocumentType.tiff),
        ("WEBP", DocumentType.webp),
    ],
)
def test_image_type_comes_from_the_bytes_not_the_name(image_format: str, expected: DocumentType) -> None:
    image = render_page("x", ScanStyle(dpi=20, noise=0), full_page=False)
    assert sniff(image_bytes(image, image_format), "notes.pdf") is expected


def test_an_image_becomes_pages_to_recognise_one_per_tiff_frame() -> None:
    frames = [render_page(f"page {n}", ScanStyle(dpi=20, noise=0), full_page=False) for n in (1, 2, 3)]
    tiff = image_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    parsed = parse_document(tiff)
    assert parsed.type is DocumentType.tiff and parsed.mime_type == "image/tiff"
    assert parsed.page_count == 3 and parsed.ocr_pages == (1, 2, 3)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header() -> None:
    limits = ParseLimits(ocr=OcrLimits(max_pixels=1_000_000))
    with pytest.raises(ImageTooLargeError, match=r"2000 x 1000 pixels, more than OCR_MAX_PIXELS \(1000000\)"):
        parse_document(png_with_header_size(2000, 1000), limits=limits)
    # far past Pillow's own guard too: refused before a byte of pixels is decoded
    with pytest.raises(ImageTooLargeError):
        parse_document(png_with_header_size(60_000, 60_000))


def test_pdf_pages_with_a_negligible_text_layer_are_the_ones_to_recognise() -> None:
    assert needs_ocr("  12 \n", 32) and needs_ocr("Scanned with AnyScanner", 32)
    assert not needs_ocr(page_text(1), 32)
    parsed = parse_document(make_pdf([page_text(1), "", "3"]))
    assert parsed.ocr_pages == (2, 3)
    assert [page.number for page in parsed.pages_with_text()] == [1, 3]


def test_with_ocr_turned_off_a_pdf_without_text_is_refused_as_ocr_unavailable() -> None:
    limits = ParseLimits(ocr=OcrLimits(enabled=False))
    with pytest.raises(OcrUnavailableError, match="OCR_ENABLED=false"):
        parse_document(make_pdf([""]), limits=limits)
    # a PDF with some text is ingested with the text it has
    assert parse_document(make_pdf([page_text(1), ""]), limits=limits).ocr_pages == ()


_WITHOUT_OCR = r"""
import json, sys

for name in ("rapidocr_onnxruntime", "cv2", "pypdfium2"):  # as in an install without them
    sys.modules[name] = None
from app.documents.errors import DocumentInputError
from app.documents.parsing import parse_document

try:
    parse_document(bytes.fromhex(sys.argv[1]))
except DocumentInputError as exc:
    print(json.dumps({"code": exc.code, "status": exc.status, "detail": exc.detail}))
"""


@pytest.mark.parametrize("document", ["scanned PDF", "image"])
def test_where_ocr_is_not_installed_a_scan_gets_ocr_unavailable_naming_the_ocr_image(document: str) -> None:
    data = (
        make_pdf([""]) if document == "scanned PDF" else image_bytes(render_page("x", full_page=False), "PNG")
    )
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OCR, data.hex()], cwd=ROOT, capture_output=True, text=True, check=True
    )
    problem = json.loads(run.stdout)
    assert problem["code"] == "ocr_unavailable" and problem["status"] == 422
    assert "`ocr` image" in problem["detail"] and "requirements-ocr.txt" in problem["detail"]
