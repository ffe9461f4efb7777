"""OCR of pages without a text layer: scanned PDF pages (rendered by PDFium, ``pypdfium2``) and
image frames, recognised by RapidOCR (PP-OCRv4 detection and recognition ONNX models shipped in
the ``rapidocr-onnxruntime`` wheel, run on onnxruntime). Nothing is downloaded at run time.

Like PDF parsing (``pdf.py``), the work runs in a child process (``python -I -c``) that streams
one frame per page and is killed when starting takes longer than ``PDF_PARSER_START_TIMEOUT_S``
or one page longer than ``OCR_PAGE_TIMEOUT_S``: decoders and the models get a hard bound on
wall-clock time, and a crash in native code ends the child, not the worker. Every image frame and
rendered page is checked against ``OCR_MAX_PIXELS`` before its pixels are decoded; a PDF page is
rendered at ``OCR_RENDER_DPI`` or, if that would pass the cap, at the resolution that meets it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from app.documents.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    ImageTooLargeError,
    OcrUnavailableError,
    PageParseTimeoutError,
)
from app.documents.parsing.detect import UPLOAD_SUFFIXES
from app.documents.parsing.image import IMAGE_SUFFIXES
from app.documents.parsing.limits import OcrLimits, ParseLimits, _Budget
from app.documents.parsing.model import DocumentType, Page, ParsedDocument
from app.documents.parsing.pdf import (
    PDF_PARSER_START_TIMEOUT_S,
    _feed,
    _FrameReader,
    _ParserExited,
    _ParserTimeout,
)

# The image target that has OCR, named in the ``ocr_unavailable`` problem.
OCR_IMAGE_TARGET = "ocr"
_OCR_MODULES = ("rapidocr_onnxruntime", "cv2", "pypdfium2", "PIL")

OnPage = Callable[[int, int], None]  # (pages done, pages to do), after each recognised page

# Runs as ``python -I -c _OCR_WORKER <options>`` with the document on stdin; frames as in pdf.py:
# R: ready (models loaded); P: {"page", "text"} as JSON; D: done; E: {"kind", "page", "detail"}.
_OCR_WORKER = r"""
import io, json, signal, struct, sys, traceback

out = sys.stdout.buffer


def send(kind, payload=b""):
    out.write(kind + struct.pack(">Q", len(payload)) + payload)
    out.flush()


def fail(kind, page=0, detail=""):
    send(b"E", json.dumps({"kind": kind, "page": page, "detail": detail}).encode())


class TooLarge(Exception):
    pass


def check(width, height, options):
    if width * height > options["max_pixels"]:
        raise TooLarge(f"{width} x {height} pixels")


def pdf_images(data, options, current):
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        for number in options["pages"]:
            current[0] = number
            page = document[number - 1]
            try:
                width, height = page.get_size()  # points: 1/72 inch
                scale = options["dpi"] / 72
                area = max(width * height, 1.0)
                scale = min(scale, (options["max_pixels"] / area) ** 0.5)
                check(int(width * scale), int(height * scale), options)
                bitmap = page.render(scale=scale, grayscale=True)
                yield number, bitmap.to_pil()
            finally:
                page.close()
    finally:
        document.close()


def frame_images(data, options, current):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        for number in options["pages"]:
            current[0] = number
            image.seek(number - 1)
            check(image.width, image.height, options)
            image.load()
            yield number, image.convert("L")


def lines_of(result):
    # RapidOCR boxes come top to bottom; boxes whose vertical centres are within half a box
    # height of the line's first box are one line, read left to right.
    boxes = []
    for box, text, _score in result or ():
        ys = [point[1] for point in box]
        xs = [point[0] for point in box]
        boxes.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text))
    boxes.sort()
    lines, current, anchor = [], [], None
    for centre, height, left, text in boxes:
        if anchor is not None and abs(centre - anchor[0]) > max(anchor[1], 1) / 2:
            lines.append(current)
            current, anchor = [], None
        if anchor is None:
            anchor = (centre, height)
        current.append((left, text))
    if current:
        lines.append(current)
    return "\n".join(" ".join(text for _, text in sorted(line)) for line in lines)


def main():
    options = json.loads(sys.argv[1])
    alarm = getattr(signal, "alarm", lambda seconds: 0)
    data = sys.stdin.buffer.read()
    import numpy
    import pypdfium2
    from PIL import Image
    from rapidocr_onnxruntime import RapidOCR

    Image.MAX_IMAGE_PIXELS = None  # this process checks every frame against max_pixels itself
    # Detection on the page scaled to at most 1280 px a side (RapidOCR's default scales the
    # shorter side up to 736, i.e. full size for a page: 4x the pixels, several times slower);
    # recognition still reads the text lines at up to 2000 px a side.
    engine = RapidOCR(det_limit_type="max", det_limit_side_len=1280)
    send(b"R")
    current = [0]
    images = pdf_images if options["pdf"] else frame_images
    unreadable = (OSError, ValueError, EOFError, SyntaxError, KeyError, IndexError, pypdfium2.PdfiumError)
    try:
        alarm(options["alarm_s"])
        for page, image in images(data, options, current):
            result, _elapsed = engine(numpy.asarray(image.convert("RGB")))
            text = lines_of(result)
            send(b"P", json.dumps({"page": page, "text": text}, ensure_ascii=False).encode())
            alarm(options["alarm_s"])
        alarm(0)
        send(b"D")
    except TooLarge as exc:
        fail("bomb", current[0], str(exc))
    except unreadable as exc:
        fail("corrupt", current[0], type(exc).__name__ + ": " + str(exc)[:300])
    except Exception:
        fail("crash", current[0], traceback.format_exc()[-2000:])


main()
"""


def ocr_installed() -> bool:
    """Whether requirements-ocr.txt is installed (the `ocr` image, ``make`` installs)."""
    return all(_importable(name) for name in _OCR_MODULES)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return False


def ocr_available(limits: OcrLimits) -> bool:
    return limits.enabled and ocr_installed()


def require_ocr(limits: OcrLimits, what: str) -> None:
    """Refuse (422 ``ocr_unavailable``) a document that needs OCR where there is none."""
    if not limits.enabled:
        raise OcrUnavailableError(f"{what} needs OCR, which is turned off here (OCR_ENABLED=false)")
    if not ocr_installed():
        raise OcrUnavailableError(
            f"{what} needs OCR, which this installation does not have: run the "
            f"`{OCR_IMAGE_TARGET}` image (docker build --target {OCR_IMAGE_TARGET}, make image-ocr) "
            "or install requirements-ocr.txt"
        )


def upload_suffixes(limits: OcrLimits) -> tuple[str, ...]:
    """The file names a client may offer for upload: images only where OCR can read them."""
    if ocr_available(limits):
        return UPLOAD_SUFFIXES
    return tuple(suffix for suffix in UPLOAD_SUFFIXES if suffix not in IMAGE_SUFFIXES)


def needs_ocr(text: str, min_chars: int) -> bool:
    """A PDF page whose text layer has fewer than ``min_chars`` non-space characters: a scan, or
    a scan with a stray page number or producer stamp in its text layer."""
    return sum(1 for char in text if not char.isspace()) < min_chars


def recognise_pages(
    data: bytes, parsed: ParsedDocument, limits: ParseLimits, on_page: OnPage | None = None
) -> ParsedDocument:
    """``parsed`` with its ``ocr_pages`` recognised: each such page's text becomes the OCR text
    (marked ``ocr``) unless its own text layer has more characters. The characters of every page
    count against ``DOC_MAX_CHARS``. Raises the ``DocumentInputError`` subclasses: a page that
    cannot be decoded (``corrupt_document``), too many pixels (``image_too_large``), a page over
    ``OCR_PAGE_TIMEOUT_S`` (``page_parse_timeout``), no text even after OCR (``empty_document``)."""
    if not parsed.ocr_pages:
        return parsed
    require_ocr(limits.ocr, "the document")
    wanted = set(parsed.ocr_pages)
    budget = _Budget(replace(limits, page_timeout_s=limits.ocr.page_timeout_s))
    budget.chars = sum(len(page.text) for page in parsed.pages if page.number not in wanted)
    recognised = _run_ocr_child(data, parsed.type, parsed.ocr_pages, budget, on_page)
    pages = []
    for page in parsed.pages:
        text = recognised.get(page.number)
        if text is not None and len(text.split()) and _visible(text) > _visible(page.text):
            page = Page(page.number, text, ocr=True)
        pages.append(page)
    result = ParsedDocument(parsed.type, tuple(pages))
    if not result.pages_with_text():
        raise _empty_after_ocr(parsed.type)
    return result


def _visible(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def _empty_after_ocr(kind: DocumentType) -> Exception:
    what = "image" if kind.is_image else "document"
    return EmptyDocumentError(f"the {what} has no text, not even after OCR")


def _run_ocr_child(
    data: bytes, kind: DocumentType, numbers: Sequence[int], budget: _Budget, on_page: OnPage | None
) -> dict[int, str]:
    ocr = budget.limits.ocr
    options = {
        "pdf": kind is DocumentType.pdf,
        "pages": list(numbers),
        "dpi": ocr.render_dpi,
        "max_pixels": ocr.max_pixels,
        "alarm_s": math.ceil(ocr.page_timeout_s) + 5,
    }
    with subprocess.Popen(
        [sys.executable, "-I", "-c", _OCR_WORKER, json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        feeder = threading.Thread(target=_feed, args=(child.stdin, data), name="ocr-input", daemon=True)
        feeder.start()
        frames = _FrameReader(child.stdout)
        try:
            return _ocr_frames(child, frames, budget, numbers, on_page)
        finally:
            frames.close()
            if child.poll() is None:
                child.kill()
            child.wait()
            feeder.join(timeout=10)


def _ocr_frames(
    child: subprocess.Popen[bytes],
    frames: _FrameReader,
    budget: _Budget,
    numbers: Sequence[int],
    on_page: OnPage | None,
) -> dict[int, str]:
    recognised: dict[int, str] = {}
    started = False
    deadline = time.monotonic() + PDF_PARSER_START_TIMEOUT_S
    while True:
        max_size = 6 * max(0, budget.limits.max_chars - budget.chars) + 2**20
        try:
            kind, payload = frames.next(deadline, max_size=max_size)
        except (_ParserTimeout, _ParserExited):
            if not started:
                raise RuntimeError("the OCR process did not start") from None
            child.kill()
            raise PageParseTimeoutError(
                f"OCR of page {numbers[len(recognised)]} took longer than "
                f"{budget.limits.page_timeout_s:g} s (limit OCR_PAGE_TIMEOUT_S)"
            ) from None
        if kind == b"R":
            started = True
        elif kind == b"P":
            page = json.loads(payload)
            recognised[int(page["page"])] = budget.page(str(page["text"]))
            if on_page is not None:
                on_page(len(recognised), len(numbers))
        elif kind == b"D":
            return recognised
        elif kind == b"E":
            raise _ocr_error(json.loads(payload))
        else:
            raise RuntimeError(f"the OCR process sent an unknown frame {kind!r}")
        deadline = time.monotonic() + budget.limits.page_timeout_s


def _ocr_error(error: dict[str, object]) -> Exception:
    kind, page, detail = error.get("kind"), error.get("page"), str(error.get("detail", ""))
    where = f"page {page}" if page else "the document"
    failure: Exception
    if kind == "bomb":
        failure = ImageTooLargeError(f"{where} is {detail}, more than OCR_MAX_PIXELS allows")
    elif kind == "corrupt":
        failure = CorruptDocumentError(f"{where} cannot be read for OCR: its image data is damaged")
    else:
        failure = RuntimeError(f"the OCR process failed: {detail}")
    failure.__cause__ = RuntimeError(detail) if detail else None
    return failure
