"""PDF text extraction: pypdf runs in a child process (``python -I -c``), which is killed when
opening the file or extracting one page takes longer than ``DOC_PAGE_PARSE_TIMEOUT_S``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

from app.documents.errors import (
    ArchiveBombError,
    CorruptDocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
)
from app.documents.parsing.limits import _Budget

PDF_PARSER_START_TIMEOUT_S = 60.0  # the PDF parser process's own start-up (not the document's fault)

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
