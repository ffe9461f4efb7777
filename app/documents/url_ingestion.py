"""The ``fetching`` stage of a URL document's ingestion job, before the usual stages.

A job queued by ``POST /api/v1/docs`` with a URL (or by ``/refresh``) has no version yet. The
worker fetches the URL (``UrlFetcher``: SSRF-safe, bounded; conditionally when the current
version came from the last fetch), sniffs the content, and then, in one transaction:

* the content equals the latest version (a 304, or the same SHA-256): the job succeeds pointing
  at that version, and nothing new is stored;
* otherwise: a new version with the fetched bytes, which the job goes on to parse, chunk and embed
  like an upload (pages whose text did not change keep their chunks and vectors).

A fetch that fails ends the job with the failure's code (``url_forbidden``, ``url_unreachable``,
``url_too_large``, ``url_timeout``, ``unsupported_media_type``) and its readable message.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import DocumentVersion
from app.documents import repository as repo
from app.documents.errors import (
    INGESTION_ERROR,
    DocumentInputError,
    UnsupportedDocumentTypeError,
    UnsupportedMediaTypeError,
    UrlUnreachableError,
    generic_job_error,
)
from app.documents.fetching import FetchedDocument, FetchLimits, UrlFetcher, Validators
from app.documents.parsing import DocumentType, sniff
from app.settings import Settings

logger = structlog.get_logger(__name__)

FETCH_STAGE = "fetching"
FINISHED = frozenset({"succeeded", "failed"})
ACTIVE = frozenset({"queued", "running", "succeeded"})
MARKDOWN_TYPES = ("text/markdown", "text/x-markdown")


@dataclass(frozen=True)
class _PendingFetch:
    document_id: uuid.UUID
    url: str
    validators: Validators | None  # None: fetch unconditionally


async def run_fetch_stage(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    job_id: uuid.UUID,
    *,
    final_attempt: bool = True,
    fetcher: UrlFetcher | None = None,
    clock: Callable[[], datetime] = repo.utcnow,
) -> str | None:
    """Fetch the content of a URL job that has no version yet. None when the job goes on to the
    usual stages (it has its version now, or never needed a fetch); otherwise how the job ended
    here: "unchanged", "failed" or "skipped". ``clock`` is the worker's (the times the job records)."""
    pending = await _start(session_factory, job_id, clock())
    if pending is None:
        return None
    if isinstance(pending, str):
        return pending
    fetcher = fetcher or UrlFetcher(FetchLimits.from_settings(settings))
    log = logger.bind(job_id=str(job_id), document_id=str(pending.document_id))
    try:
        fetched = await fetcher.fetch(pending.url, pending.validators)
        kind = None if fetched.not_modified else await asyncio.to_thread(sniff_fetched, fetched)
    except DocumentInputError as exc:
        await _fail(session_factory, job_id, code=exc.code, error=exc.detail, final=True, now=clock())
        log.warning("url_fetch_refused", code=exc.code, error=exc.detail)
        return "failed"
    except Exception as exc:
        await _fail(
            session_factory,
            job_id,
            code=INGESTION_ERROR,
            error=generic_job_error(job_id),
            final=final_attempt,
            now=clock(),
        )
        log.exception("url_fetch_failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    async with session_factory() as session, session.begin():
        outcome = await _store_fetched(session, job_id, pending, fetched, kind, now=clock())
    log.info("url_fetched", outcome=outcome or "new_version", not_modified=fetched.not_modified)
    return outcome


async def _start(
    session_factory: async_sessionmaker[AsyncSession], job_id: uuid.UUID, now: datetime
) -> _PendingFetch | str | None:
    async with session_factory() as session, session.begin():
        job = await repo.get_job_for_update(session, job_id)
        if job is None or job.status in FINISHED:
            return "skipped"
        if job.version_id is not None:
            return None
        document = await repo.get_job_document(session, job.document_id)
        if document is None or document.source_url is None:  # nothing to fetch: never leave it queued
            job.status, job.error_code, job.error = "failed", INGESTION_ERROR, generic_job_error(job_id)
            job.finished_at = now
            return "failed"
        latest = await repo.latest_version(session, document.id)
        current = (
            latest is not None and latest.status == "succeeded" and document.current_version == latest.version
        )
        job.status, job.stage, job.progress = "running", FETCH_STAGE, 1
        job.error, job.error_code = None, None
        job.started_at = now
        validators = Validators(document.source_etag, document.source_last_modified) if current else None
        return _PendingFetch(document.id, document.source_url, validators)


def sniff_fetched(fetched: FetchedDocument) -> DocumentType:
    """The type from the bytes; the server's Content-Type only tells Markdown from plain text."""
    assert fetched.content is not None
    name = httpx.URL(fetched.url).path.rsplit("/", 1)[-1] or None
    declared = (fetched.content_type or "").split(";", 1)[0].strip().lower()
    if declared in MARKDOWN_TYPES and not (name or "").lower().endswith((".md", ".markdown")):
        name = f"{name or 'document'}.md"
    try:
        return sniff(fetched.content, name)
    except UnsupportedDocumentTypeError as exc:
        raise UnsupportedMediaTypeError(
            f"the URL serves {declared or 'content without a type'}, and its bytes are not HTML, "
            f"PDF, DOCX, Markdown or text ({exc.detail})"
        ) from exc


async def _fail(
    session_factory: async_sessionmaker[AsyncSession],
    job_id: uuid.UUID,
    *,
    code: str,
    error: str,
    final: bool,
    now: datetime,
) -> None:
    async with session_factory() as session, session.begin():
        job = await repo.get_job_for_update(session, job_id)
        if job is None or job.status in FINISHED:
            return
        job.error, job.error_code = error, code
        job.attempts += 1
        if final:
            job.status, job.finished_at = "failed", now
        else:
            job.status = "queued"  # the queue retries it


async def _store_fetched(
    session: AsyncSession,
    job_id: uuid.UUID,
    pending: _PendingFetch,
    fetched: FetchedDocument,
    kind: DocumentType | None,
    *,
    now: datetime,
) -> str | None:
    job = await repo.get_job_for_update(session, job_id)
    document = await repo.get_job_document(session, pending.document_id, for_update=True)
    if job is None or document is None or job.status in FINISHED:
        return "skipped"  # superseded by an upload while fetching, or purged
    latest = await repo.latest_version(session, document.id)
    if fetched.not_modified:  # a 304 may repeat or update the validators, never drop them
        document.source_etag = fetched.validators.etag or document.source_etag
        document.source_last_modified = fetched.validators.last_modified or document.source_last_modified
    else:
        document.source_etag = fetched.validators.etag
        document.source_last_modified = fetched.validators.last_modified
    digest = None if fetched.content is None else hashlib.sha256(fetched.content).hexdigest()
    if latest is not None and (
        fetched.not_modified or (latest.content_sha256 == digest and latest.status in ACTIVE)
    ):
        job.version_id = latest.id
        job.status, job.stage, job.progress = "succeeded", FETCH_STAGE, 100
        job.attempts += 1
        job.finished_at = now
        return "unchanged"
    if fetched.content is None or kind is None or digest is None:  # a 304 to an unconditional GET
        job.status, job.error_code = "failed", UrlUnreachableError.code
        job.error = "the server answered 304 Not Modified to a request that had nothing to compare"
        job.attempts += 1
        job.finished_at = now
        return "failed"
    version = DocumentVersion(
        tenant_id=document.tenant_id,
        document_id=document.id,
        version=1 if latest is None else latest.version + 1,
        filename=(httpx.URL(fetched.url).path.rsplit("/", 1)[-1][:500] or None),
        content_sha256=digest,
        size_bytes=len(fetched.content),
        mime_type=kind.mime_type,
        content=fetched.content,
        uploaded_by=None,
        status="queued",
    )
    session.add(version)
    await session.flush()
    job.version_id = version.id
    job.progress = 4
    document.updated_at = now
    return None
