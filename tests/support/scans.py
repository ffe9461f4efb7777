"""Scans and photos of text pages, made with Pillow at test time (its bundled font, no system
fonts): an image of the text at a chosen resolution, slightly rotated, with noise; saved as an
image-only PDF (no text layer, as a scanner writes it), a PNG, a JPEG or a TIFF."""

from __future__ import annotations

import io
import random
import struct
import textwrap
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

A4_INCHES = (8.27, 11.69)


@dataclass(frozen=True)
class ScanStyle:
    dpi: int = 150
    rotation: float = 0.8  # degrees
    noise: float = 0.04  # share of pixels flipped to a random grey
    font_points: float = 11.0
    paper: int = 255  # background grey
    blur: float = 0.0  # a photo's softness (Gaussian radius in pixels)
    seed: int = 0


def render_page(text: str, style: ScanStyle = ScanStyle(), *, full_page: bool = True) -> Image.Image:
    """The text set on a page (A4 at ``style.dpi``, or just tall enough), as a greyscale scan."""
    rng = random.Random(style.seed)
    font_px = max(8, round(style.font_points * style.dpi / 72))
    font = ImageFont.load_default(size=font_px)
    margin = round(0.8 * style.dpi)
    width = round(A4_INCHES[0] * style.dpi)
    columns = max(20, int((width - 2 * margin) / (0.5 * font_px)))
    lines = [line for paragraph in text.split("\n") for line in (textwrap.wrap(paragraph, columns) or [""])]
    line_height = round(font_px * 1.45)
    height = round(A4_INCHES[1] * style.dpi) if full_page else 2 * margin + line_height * len(lines)
    page = Image.new("L", (width, height), style.paper)
    draw = ImageDraw.Draw(page)
    for index, line in enumerate(lines):
        y = margin + index * line_height
        if y + line_height > height - margin // 2:
            break
        draw.text((margin, y), line, fill=rng.randint(0, 40), font=font)
    if style.rotation:
        page = page.rotate(style.rotation, resample=Image.Resampling.BICUBIC, fillcolor=style.paper)
    if style.blur:
        page = page.filter(ImageFilter.GaussianBlur(style.blur))
    if style.noise:
        pixels = page.load()
        assert pixels is not None
        for _ in range(int(style.noise * width * height)):
            pixels[rng.randrange(width), rng.randrange(height)] = rng.randint(0, 255)
    return page


def image_bytes(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def scanned_pdf(pages: list[Image.Image], dpi: int) -> bytes:
    """An image-only PDF: one scanned image per page, no text layer."""
    out = io.BytesIO()
    first, *rest = [page.convert("L") for page in pages]
    first.save(out, "PDF", resolution=float(dpi), save_all=True, append_images=rest)
    return out.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's
    shape: a few bytes that would decode to gigabytes)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def damaged_png(width: int = 200, height: int = 100) -> bytes:
    """A PNG with a sound header and damaged image data: it passes the upload's header check and
    cannot be decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    garbage = bytes(random.Random(1).randrange(256) for _ in range(512))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", garbage) + chunk(b"IEND", b"")
