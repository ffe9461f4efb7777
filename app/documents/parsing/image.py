"""Image uploads (PNG, JPEG, TIFF, WebP): the type from the file's signature, then each frame's
size from its header (Pillow decodes no pixel to tell it), checked against ``OCR_MAX_PIXELS``
before anything is decoded. A multi-frame TIFF is a document of one page per frame."""

from __future__ import annotations

import io

from app.documents.errors import CorruptDocumentError, ImageTooLargeError
from app.documents.parsing.limits import _Budget
from app.documents.parsing.model import DocumentType
from app.errors import AppError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def sniff_image(head: bytes) -> DocumentType | None:
    """The image type ``head`` starts with, by signature; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return DocumentType.png
    if head.startswith(b"\xff\xd8\xff"):
        return DocumentType.jpeg
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return DocumentType.tiff
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return DocumentType.webp
    return None


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width} x {height} pixels, more than OCR_MAX_PIXELS ({max_pixels}) allows"
        )


def image_frame_count(data: bytes, max_pixels: int, budget: _Budget) -> int:
    """The number of frames (pages) of the image, each frame's size checked from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
            frames = int(getattr(image, "n_frames", 1))
            budget.expect_pages(frames)
            for index in range(frames):
                if index:
                    image.seek(index)
                what = "the image" if frames == 1 else f"frame {index + 1} of the image"
                check_pixels(image.width, image.height, max_pixels, what)
                budget.check_time()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (far above OCR_MAX_PIXELS by default) fired first
        raise ImageTooLargeError(
            f"the image has more pixels than OCR_MAX_PIXELS ({max_pixels}) allows"
        ) from exc
    except AppError:
        raise  # the limits
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        raise CorruptDocumentError("the image cannot be read: its header is damaged") from exc
    except Exception as exc:  # Pillow's plugins raise assorted errors (struct, index) on hostile headers
        raise CorruptDocumentError("the image cannot be read: its header is damaged") from exc
    return frames
