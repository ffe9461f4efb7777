"""Real documents made at test time: PDFs (fpdf2), DOCX (python-docx), encrypted, corrupt, bombs;
uploading them (``upload``) and running the ingestion jobs in process (``run_jobs``); and the
plainest queries of what ingestion stored (``chunk_rows``, ``count_rows``,
``search_current_chunks``)."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Chunk, Document
from app.documents.ingestion import IngestionContext
from app.rag.embeddings import Embedder
from app.resources import Resources
from app.settings import Settings

PARAGRAPH = (
    "The ingestion pipeline parses each page, splits its text into overlapping chunks and embeds "
    "them in batches. Unchanged pages keep their vectors when a new version arrives. "
)


def page_text(number: int, *, topic: str = "operations", sentences: int = 6) -> str:
    body = " ".join(
        f"Page {number} sentence {index} explains {topic} detail number {number * 100 + index}."
        for index in range(sentences)
    )
    return f"{body} {PARAGRAPH}"


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    pdf.set_font("Helvetica", size=10)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def make_encrypted_pdf(pages: list[str], password: str = "s3cret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(pages))))
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_corrupt_pdf() -> bytes:
    good = make_pdf(["Some text that will be cut off."])
    return good[:200] + b"\x00garbage" * 50


def make_docx(sections: list[tuple[str, str]], *, page_breaks: bool = False) -> bytes:
    """``sections``: (heading, body) pairs; each heading is a Heading 1 (or each section ends with
    an explicit page break when ``page_breaks``)."""
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    for index, (heading, body) in enumerate(sections):
        document.add_heading(heading, level=1)
        paragraph = document.add_paragraph(body)
        if page_breaks and index < len(sections) - 1:
            paragraph.add_run().add_break(WD_BREAK.PAGE)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_docx_bomb(inflated_mb: int = 8) -> bytes:
    """A valid DOCX plus one part of zeros that compresses ~1000:1."""
    base = make_docx([("Title", "Harmless looking text.")])
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            target.writestr(item, source.read(item.filename))
        target.writestr("word/media/padding.bin", b"\0" * (inflated_mb * 1024 * 1024))
    return out.getvalue()


GIF_BYTES = (  # a 1x1 GIF: an image type OCR does not take
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7V\xbd\xfa\x00\x00\x00\x00IEND\xaeB`\x82"
)


def make_raw_pdf(contents: list[bytes]) -> bytes:
    """A PDF with one page per content stream (Flate-compressed), written by hand: for pages no
    PDF library would make, such as millions of text operators."""
    import zlib

    pages = len(contents)
    # 1: catalog, 2: pages, 3: font, then per page: the page and its content stream
    kids = " ".join(f"{4 + 2 * index} 0 R" for index in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for index, content in enumerate(contents):
        stream = zlib.compress(content, 9)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * index)
        )
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"
        )
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


def text_operators(count: int, operator: bytes = b"[(ab) -10 (cd)] TJ\n") -> bytes:
    """A content stream of ``count`` text-showing operators: cheap to write, slow to extract."""
    return b"BT /F1 12 Tf 72 720 Td\n" + operator * count + b"ET\n"


@dataclass(frozen=True)
class NearestChunk:
    chunk_id: int
    document_id: uuid.UUID
    version: int
    title: str
    page: int
    text: str
    distance: float


async def search_current_chunks(
    session: AsyncSession, tenant_id: uuid.UUID, embedding: Sequence[float], *, limit: int = 5
) -> list[NearestChunk]:
    """Nearest current chunks of the tenant's non-deleted documents (cosine distance): the
    visibility contract ingestion guarantees, checked without the chat pipeline's retrieval."""
    distance = Chunk.embedding.cosine_distance(list(embedding)).label("distance")
    query = (
        select(
            Chunk.id,
            Chunk.document_id,
            Document.current_version,
            Document.title,
            Chunk.page,
            Chunk.text,
            distance,
        )
        .join(Document, Document.id == Chunk.document_id)
        .where(
            Chunk.tenant_id == tenant_id,
            Document.tenant_id == tenant_id,
            Document.deleted_at.is_(None),
            Chunk.valid_to_version.is_(None),
        )
        .order_by(distance)
        .limit(limit)
    )
    return [
        NearestChunk(
            chunk_id=r.id,
            document_id=r.document_id,
            version=r.current_version or 0,
            title=r.title,
            page=r.page,
            text=r.text,
            distance=float(r.distance),
        )
        for r in await session.execute(query)
    ]


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    *,
    filename: str = "doc.pdf",
    document_id: uuid.UUID | str | None = None,
    **fields: Any,
) -> httpx.Response:
    """POST a new document, or PUT a new version of ``document_id``; the response as it came."""
    files = {"file": (filename, data, "application/octet-stream")}
    if document_id is None:
        return await client.post("/api/v1/docs", files=files, data=fields, headers=headers)
    return await client.put(f"/api/v1/docs/{document_id}", files=files, headers=headers)


async def run_jobs(
    resources: Resources, *, embedder: Embedder | None = None, settings: Settings | None = None
) -> None:
    """Run a worker until the queue is empty (what `python -m app worker --burst` does)."""
    context = IngestionContext(
        resources.session_factory,
        embedder or resources.embedder,
        settings or resources.settings,
        metrics=resources.telemetry.metrics,
    )
    await resources.job_queue.run_worker(context, burst=True)


async def chunk_rows(
    resources: Resources, document_id: str | uuid.UUID, *, current_only: bool = False
) -> list[Chunk]:
    async with resources.session_factory() as session:
        query = select(Chunk).where(Chunk.document_id == uuid.UUID(str(document_id))).order_by(Chunk.id)
        if current_only:
            query = query.where(Chunk.valid_to_version.is_(None))
        return list((await session.execute(query)).scalars())


async def count_rows(resources: Resources, model: type[Any]) -> int:
    async with resources.session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())
