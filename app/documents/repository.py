"""Every query of the documents capability. Each one that a client can reach takes the tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import AccessSet, visible
from app.db.models import Chunk, Document, DocumentVersion, IngestionJob
from app.documents.chunking import embedding_input

# --- documents --------------------------------------------------------------------------------


async def get_document(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    *,
    include_deleted: bool = False,
    for_update: bool = False,
    access: AccessSet | None = None,
) -> Document | None:
    """None also for a document ``access`` may not see: as unknown as a made-up id."""
    query = select(Document).where(
        Document.id == document_id, Document.tenant_id == tenant_id, visible(access)
    )
    if not include_deleted:
        query = query.where(Document.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_job_document(
    session: AsyncSession, document_id: uuid.UUID, *, for_update: bool = False
) -> Document | None:
    """The document an ingestion job works on, deleted or not: the worker has the job, not the
    tenant (clients reach documents through ``get_document``)."""
    return await session.get(Document, document_id, with_for_update=for_update)


async def find_live_document_by_path(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    path: str,
    *,
    for_update: bool = False,
    access: AccessSet | None = None,
) -> Document | None:
    query = (
        select(Document)
        .where(
            Document.tenant_id == tenant_id,
            Document.path == path,
            Document.deleted_at.is_(None),
            visible(access),
        )
        .order_by(Document.created_at)
        .limit(1)
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def lock_path(session: AsyncSession, tenant_id: uuid.UUID, path: str) -> None:
    """Serialise concurrent first uploads of one path in one tenant (transaction-scoped lock)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"doc-path:{tenant_id}:{path}"},
    )


@dataclass(frozen=True)
class DocumentPage:
    items: list[Document]
    total: int


async def list_documents(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    tag: str | None,
    text_query: str | None,
    include_deleted: bool,
    limit: int,
    offset: int,
    access: AccessSet | None = None,
) -> DocumentPage:
    conditions: list[Any] = [Document.tenant_id == tenant_id, visible(access)]
    if not include_deleted:
        conditions.append(Document.deleted_at.is_(None))
    if tag:
        conditions.append(Document.tags.contains([tag]))
    if text_query:
        pattern = "%" + text_query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(or_(Document.title.ilike(pattern), Document.path.ilike(pattern)))
    where = and_(*conditions)
    total = (await session.execute(select(func.count()).select_from(Document).where(where))).scalar_one()
    rows = await session.execute(
        select(Document)
        .where(where)
        .order_by(Document.updated_at.desc(), Document.id)
        .limit(limit)
        .offset(offset)
    )
    return DocumentPage(items=list(rows.scalars()), total=int(total))


# --- versions ---------------------------------------------------------------------------------


async def latest_version(session: AsyncSession, document_id: uuid.UUID) -> DocumentVersion | None:
    query = (
        select(DocumentVersion)
        .where(DocumentVersion.document_id == document_id)
        .order_by(DocumentVersion.version.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_version(session: AsyncSession, document_id: uuid.UUID, version: int) -> DocumentVersion | None:
    query = select(DocumentVersion).where(
        DocumentVersion.document_id == document_id, DocumentVersion.version == version
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_version_by_id(session: AsyncSession, version_id: uuid.UUID | None) -> DocumentVersion | None:
    """None for None: a URL job has no version until it fetched the content."""
    return None if version_id is None else await session.get(DocumentVersion, version_id)


async def list_versions(session: AsyncSession, document_id: uuid.UUID) -> list[DocumentVersion]:
    # The original bytes are not needed for a listing; defer them.
    from sqlalchemy.orm import defer

    query = (
        select(DocumentVersion)
        .options(defer(DocumentVersion.content))
        .where(DocumentVersion.document_id == document_id)
        .order_by(DocumentVersion.version)
    )
    return list((await session.execute(query)).scalars())


async def set_version_status(session: AsyncSession, version_id: uuid.UUID | None, status: str) -> None:
    if version_id is None:  # a URL job that has not fetched: no version to mark
        return
    await session.execute(
        update(DocumentVersion).where(DocumentVersion.id == version_id).values(status=status)
    )


# --- jobs -------------------------------------------------------------------------------------


async def get_job(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID, access: AccessSet | None = None
) -> IngestionJob | None:
    """None also for a job of a document ``access`` may not see."""
    query = (
        select(IngestionJob)
        .join(Document, Document.id == IngestionJob.document_id)
        .where(IngestionJob.id == job_id, IngestionJob.tenant_id == tenant_id, visible(access))
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_job_for_update(session: AsyncSession, job_id: uuid.UUID) -> IngestionJob | None:
    """Worker side: the job id comes from our own queue, not from a client."""
    query = select(IngestionJob).where(IngestionJob.id == job_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def latest_job_for_version(session: AsyncSession, version_id: uuid.UUID) -> IngestionJob | None:
    query = (
        select(IngestionJob)
        .where(IngestionJob.version_id == version_id)
        .order_by(IngestionJob.created_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def queued_jobs_of_document(session: AsyncSession, document_id: uuid.UUID) -> list[IngestionJob]:
    query = (
        select(IngestionJob)
        .where(IngestionJob.document_id == document_id, IngestionJob.status == "queued")
        .with_for_update()
    )
    return list((await session.execute(query)).scalars())


async def pending_fetch_job(session: AsyncSession, document_id: uuid.UUID) -> IngestionJob | None:
    """A URL document's job that has not fetched yet (queued, or running its fetch stage)."""
    query = (
        select(IngestionJob)
        .where(
            IngestionJob.document_id == document_id,
            IngestionJob.version_id.is_(None),
            IngestionJob.status.in_(("queued", "running")),
        )
        .order_by(IngestionJob.created_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def update_job(session: AsyncSession, job_id: uuid.UUID, **values: Any) -> None:
    await session.execute(update(IngestionJob).where(IngestionJob.id == job_id).values(**values))


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    running: int


async def ingestion_queue_depth(session: AsyncSession) -> QueueDepth:
    """Operator view (all tenants): jobs waiting for a worker and jobs a worker is running."""
    rows = await session.execute(
        select(IngestionJob.status, func.count().label("jobs"))
        .where(IngestionJob.status.in_(("queued", "running")))
        .group_by(IngestionJob.status)
    )
    counts = {row.status: int(row.jobs) for row in rows}
    return QueueDepth(queued=counts.get("queued", 0), running=counts.get("running", 0))


# --- chunks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentChunk:
    id: int
    page: int
    page_sha256: str
    embedding_model: str
    context: str


async def current_chunks(session: AsyncSession, document_id: uuid.UUID) -> list[CurrentChunk]:
    """The chunks retrieval sees for this document (``valid_to_version IS NULL``), without vectors."""
    rows = await session.execute(
        select(Chunk.id, Chunk.page, Chunk.page_sha256, Chunk.embedding_model, Chunk.context).where(
            Chunk.document_id == document_id, Chunk.valid_to_version.is_(None)
        )
    )
    return [
        CurrentChunk(
            id=r.id,
            page=r.page,
            page_sha256=r.page_sha256,
            embedding_model=r.embedding_model,
            context=r.context,
        )
        for r in rows
    ]


async def count_current_chunks(session: AsyncSession, document_id: uuid.UUID) -> int:
    query = select(func.count()).where(Chunk.document_id == document_id, Chunk.valid_to_version.is_(None))
    return int((await session.execute(query)).scalar_one())


async def count_still_current(session: AsyncSession, chunk_ids: Sequence[int]) -> int:
    if not chunk_ids:
        return 0
    query = select(func.count()).where(Chunk.id.in_(list(chunk_ids)), Chunk.valid_to_version.is_(None))
    return int((await session.execute(query)).scalar_one())


async def delete_chunks_from_version(session: AsyncSession, document_id: uuid.UUID, version: int) -> None:
    """Rows a version itself introduced; removing them makes a re-run of its storing step idempotent."""
    await session.execute(
        delete(Chunk).where(Chunk.document_id == document_id, Chunk.valid_from_version == version)
    )


async def close_current_chunks(
    session: AsyncSession, document_id: uuid.UUID, version: int, keep_ids: Sequence[int]
) -> int:
    """End the validity of current chunks not carried into ``version`` (they stay as history)."""
    statement = (
        update(Chunk)
        .where(Chunk.document_id == document_id, Chunk.valid_to_version.is_(None))
        .values(valid_to_version=version)
    )
    if keep_ids:
        statement = statement.where(Chunk.id.not_in(list(keep_ids)))
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


async def insert_chunks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Chunk), list(rows))


# --- embedding model bookkeeping --------------------------------------------------------------


async def stored_embedding_models(session: AsyncSession) -> list[str]:
    rows = await session.execute(select(Chunk.embedding_model).distinct().limit(10))
    return [row[0] for row in rows]


async def vector_column_dimension(session: AsyncSession) -> int | None:
    row = await session.execute(
        text(
            "SELECT atttypmod FROM pg_attribute "
            "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding' AND NOT attisdropped"
        )
    )
    value = row.scalar_one_or_none()
    return None if value is None or value < 0 else int(value)


async def chunks_to_reembed(
    session: AsyncSession, model: str, *, after_id: int, limit: int, include_current_model: bool
) -> list[tuple[int, str]]:
    """Operator tool (all tenants): the next chunks, in id order, not yet embedded by ``model``:
    their id and what the model embeds (context line and text)."""
    query = (
        select(Chunk.id, Chunk.context, Chunk.text).where(Chunk.id > after_id).order_by(Chunk.id).limit(limit)
    )
    if not include_current_model:
        query = query.where(Chunk.embedding_model != model)
    return [(r.id, embedding_input(r.context, r.text)) for r in await session.execute(query)]


async def count_chunks_to_reembed(session: AsyncSession, model: str, *, include_current_model: bool) -> int:
    query = select(func.count()).select_from(Chunk)
    if not include_current_model:
        query = query.where(Chunk.embedding_model != model)
    return int((await session.execute(query)).scalar_one())


async def set_chunk_embeddings(
    session: AsyncSession, rows: Sequence[tuple[int, Sequence[float]]], model: str
) -> None:
    if rows:
        await session.execute(
            update(Chunk),
            [
                # A new model brings its own tokenizer: the stored counts are counted afresh.
                {"id": chunk_id, "embedding": list(vector), "embedding_model": model, "text_tokens": None}
                for chunk_id, vector in rows
            ],
        )


def utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
