"""``ingest_document_version``: the job that turns an uploaded version into current chunks.

Stages: parsing → ocr (only for pages without a text layer: scanned PDF pages, images; the job
reports page n of N) → chunking → embedding → storing. Pages whose SHA-256 (and embedding model) match
a current chunk set are carried over unchanged; only the other pages are chunked and embedded.
Everything the job writes to ``chunks`` happens in the one storing transaction, which also marks
the job succeeded, so a worker killed at any point leaves either nothing or the finished result;
the storing step also deletes rows the same version introduced before, so a re-run can never
duplicate chunks.

What a job records in ``error`` is meant for the people who uploaded the document: a document's
own problem (its ``DocumentInputError`` message), the job's fate (superseded, the worker stopped),
or, for anything unexpected, a generic message with the job id; the raw failure goes to the logs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.documents import repository as repo
from app.documents.chunking import ChunkDraft, chunk_context, chunk_pages
from app.documents.errors import (
    INGESTION_ERROR,
    ConcurrentChangeError,
    DocumentInputError,
    generic_job_error,
)
from app.documents.job_records import FINISHED, ProgressReporter, record_failure
from app.documents.parsing import (
    DocumentType,
    Page,
    ParsedDocument,
    ParseLimits,
    parse_document,
    recognise_pages,
)
from app.documents.url_ingestion import run_fetch_stage
from app.observability.context import bind_job_context
from app.observability.metrics import DomainMetrics
from app.observability.metrics.noop import NoopBackend
from app.rag.embeddings import Embedder, length_sorted_batches
from app.rag.prompt import passage_text_tokens
from app.rag.tokens import WordPieceTokenCounter
from app.security.injection import detect_injection
from app.settings import Settings

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IngestionContext:
    """What a worker's jobs need. ``metrics`` is the process's (the server's in-process worker
    shares its app's); ``clock`` is "now" for every time a job records (started, finished) and for
    the periodic jobs (conversation retention)."""

    session_factory: async_sessionmaker[AsyncSession]
    embedder: Embedder
    settings: Settings
    metrics: DomainMetrics = field(default_factory=lambda: DomainMetrics(NoopBackend()))
    clock: Callable[[], datetime] = repo.utcnow

    @cached_property
    def token_counter(self) -> WordPieceTokenCounter:
        """Chunks are measured in the local model's WordPiece tokens, so they fit its window."""
        return WordPieceTokenCounter(self.settings.embedding_tokenizer_path)


@dataclass(frozen=True)
class IngestionResult:
    job_id: uuid.UUID
    status: str
    pages: int = 0
    pages_reused: int = 0
    pages_embedded: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class _VersionCounts:
    pages: int
    pages_reused: int
    pages_embedded: int


@dataclass(frozen=True)
class _Claim:
    document_id: uuid.UUID
    version_id: uuid.UUID
    version: int
    content: bytes
    mime_type: str
    request_id: str | None  # of the upload that queued the job
    trace_id: str | None
    title: str


class _FetchFirst:
    """A URL job with no version yet: its fetch stage comes before the claim."""


FETCH_FIRST = _FetchFirst()


async def _claim(ctx: IngestionContext, job_id: uuid.UUID) -> _Claim | _FetchFirst | None:
    async with ctx.session_factory() as session, session.begin():
        job = await repo.get_job_for_update(session, job_id)
        if job is None or job.status in FINISHED:
            return None  # superseded, already done by an earlier run, or purged
        if job.version_id is None:
            return FETCH_FIRST
        version = await repo.get_version_by_id(session, job.version_id)
        document = await repo.get_job_document(session, job.document_id)
        if version is None or document is None:
            return None
        job.status = "running"
        job.stage = "parsing"
        job.progress = 5
        job.attempts += 1
        job.error = None
        job.error_code = None
        job.started_at = ctx.clock()
        version.status = "running"
        await _sample_queue_depth_in(session, ctx)
        return _Claim(
            job.document_id,
            version.id,
            version.version,
            version.content,
            version.mime_type,
            job.request_id,
            job.trace_id,
            document.title,
        )


async def sample_queue_depth(ctx: IngestionContext) -> None:
    """Record how many ingestion jobs wait and run now; a failure costs a sample, never a job."""
    try:
        async with ctx.session_factory() as session:
            depth = await repo.ingestion_queue_depth(session)
    except Exception as exc:
        logger.warning("queue_depth_sampling_failed", error_type=type(exc).__name__)
        return
    ctx.metrics.ingestion_queue_depth(depth.queued, running=depth.running)


async def _sample_queue_depth_in(session: AsyncSession, ctx: IngestionContext) -> None:
    """The same sample inside a job's claim or its storing transaction, as that transaction will
    leave the queue (its own change flushed first): one statement instead of a transaction."""
    await session.flush()
    depth = await repo.ingestion_queue_depth(session)
    ctx.metrics.ingestion_queue_depth(depth.queued, running=depth.running)


async def ingest_document_version(
    ctx: IngestionContext, job_id: uuid.UUID, *, final_attempt: bool = True
) -> IngestionResult:
    """Run one ingestion job. Client-caused problems end it as failed without raising; anything
    else is recorded and re-raised so the queue retries it (unless this was the last attempt).
    Its log lines carry the request and trace id of the upload that queued it."""
    started = time.perf_counter()
    claim = await _claim(ctx, job_id)  # samples the queue depth
    if claim is FETCH_FIRST:
        fetched = await run_fetch_stage(
            ctx.session_factory, ctx.settings, job_id, final_attempt=final_attempt, clock=ctx.clock
        )
        if fetched is not None:  # a URL job that ended at its fetch (unchanged, refused, superseded)
            return IngestionResult(job_id=job_id, status=fetched, seconds=time.perf_counter() - started)
        claim = await _claim(ctx, job_id)  # it has its version now
    if not isinstance(claim, _Claim):
        return IngestionResult(job_id=job_id, status="skipped")
    outcome = "cancelled"  # the worker stopped it (shutdown); anything else sets its own
    with bind_job_context(claim.request_id, claim.trace_id):
        try:
            result = await _ingest_claimed(ctx, job_id, claim, final_attempt=final_attempt)
            outcome = "superseded" if result.error == "superseded" else result.status
        except Exception:
            outcome = "failed" if final_attempt else "retried"
            raise
        finally:
            elapsed = time.perf_counter() - started
            ctx.metrics.ingestion_job(outcome, elapsed)
            if outcome != "succeeded":  # a stored job sampled it in its storing transaction
                await sample_queue_depth(ctx)
    return IngestionResult(**{**result.__dict__, "seconds": elapsed})


async def _ingest_claimed(
    ctx: IngestionContext, job_id: uuid.UUID, claim: _Claim, *, final_attempt: bool
) -> IngestionResult:
    started = time.perf_counter()
    log = logger.bind(job_id=str(job_id), document_id=str(claim.document_id), version=claim.version)
    try:
        result = await _run(ctx, job_id, claim, log)
    except DocumentInputError as exc:
        await record_failure(
            ctx.session_factory,
            job_id,
            claim.version_id,
            error=exc.detail,
            code=exc.code,
            final=True,
            now=ctx.clock(),
        )
        cause = repr(exc.__cause__)[:500] if exc.__cause__ is not None else None
        log.warning("ingestion_rejected", code=exc.code, error=exc.detail, cause=cause)
        return IngestionResult(job_id=job_id, status="failed", error=exc.detail)
    except Exception as exc:
        # Readers see the generic message (exception text can hold paths, SQL, internals);
        # the raw text and traceback go to the log, found by the job id the message quotes.
        await record_failure(
            ctx.session_factory,
            job_id,
            claim.version_id,
            error=generic_job_error(job_id),
            code=INGESTION_ERROR,
            final=final_attempt,
            now=ctx.clock(),
        )
        log.exception("ingestion_failed", final=final_attempt, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    if result.status == "succeeded":
        log.info(
            "ingestion_succeeded",
            pages=result.pages,
            pages_reused=result.pages_reused,
            chunks=result.chunks,
            chunks_embedded=result.chunks_embedded,
            seconds=round(time.perf_counter() - started, 3),
        )
    return result


async def _run(
    ctx: IngestionContext, job_id: uuid.UUID, claim: _Claim, log: structlog.BoundLogger
) -> IngestionResult:
    settings = ctx.settings
    limits = ParseLimits.from_settings(settings)
    reporter = ProgressReporter(ctx.session_factory, job_id, interval_s=settings.job_progress_interval_s)
    async with reporter as progress:
        parsed = await asyncio.to_thread(
            parse_document,
            claim.content,
            doc_type=DocumentType.from_mime(claim.mime_type),
            max_uncompressed_bytes=settings.docx_max_uncompressed_mb * 1024 * 1024,
            limits=limits,
        )
        parsed = await _recognise(claim.content, parsed, limits, progress)
        await progress.record("chunking", 15)

        title = claim.title if settings.chunk_context else None
        pages = parsed.pages_with_text()
        kept_ids, changed = await _reuse_plan(ctx, claim.document_id, pages, title)
        drafts = await asyncio.to_thread(
            chunk_pages,
            changed,
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            count=ctx.token_counter.count_uncached,
            title=title,
        )
        facts = await asyncio.to_thread(_prompt_facts, drafts, ctx.token_counter.count_uncached)
        await progress.record("embedding", 20)

        vectors = await _embed(ctx, drafts, progress)
        await progress.record("storing", 95)

    counts = _VersionCounts(
        pages=parsed.page_count, pages_reused=len(pages) - len(changed), pages_embedded=len(changed)
    )
    async with ctx.session_factory() as session, session.begin():
        stored = await _store(session, ctx, job_id, claim, drafts, vectors, facts, kept_ids, counts)
    if not stored:
        log.info("ingestion_superseded")
        return IngestionResult(job_id=job_id, status="failed", error="superseded")
    return IngestionResult(
        job_id=job_id,
        status="succeeded",
        pages=counts.pages,
        pages_reused=counts.pages_reused,
        pages_embedded=counts.pages_embedded,
        chunks=len(kept_ids) + len(drafts),
        chunks_embedded=len(drafts),
    )


async def _reuse_plan(
    ctx: IngestionContext, document_id: uuid.UUID, pages: list[Page], title: str | None
) -> tuple[list[int], list[Page]]:
    """Which current chunks the new version keeps (their page's text, context and embedding model
    are unchanged) and which pages must be chunked and embedded again."""
    async with ctx.session_factory() as session:
        current = await repo.current_chunks(session, document_id)
    reusable: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    for chunk in current:
        if chunk.embedding_model == ctx.embedder.model_name:
            reusable[(chunk.page, chunk.page_sha256, chunk.context)].append(chunk.id)
    kept_ids: list[int] = []
    changed: list[Page] = []
    for page in pages:
        context = chunk_context(title, page.text) if title is not None else ""
        ids = reusable.get((page.number, page.sha256, context))
        if ids:
            kept_ids.extend(ids)
        else:
            changed.append(page)
    return kept_ids, changed


async def _recognise(
    content: bytes, parsed: ParsedDocument, limits: ParseLimits, progress: ProgressReporter
) -> ParsedDocument:
    """The ``ocr`` stage: pages without a text layer recognised in a killable child process
    (``recognise_pages``), the job reporting page n of N (progress 5 → 15) after each."""
    if not parsed.ocr_pages:
        return parsed
    total = len(parsed.ocr_pages)
    await progress.record("ocr", 5, pages=(0, total))
    loop = asyncio.get_running_loop()

    def on_page(done: int, of: int) -> None:  # runs in the OCR thread; waits for the update
        update = progress.record("ocr", 5 + 10 * done // of, pages=(done, of))
        asyncio.run_coroutine_threadsafe(update, loop).result()

    return await asyncio.to_thread(recognise_pages, content, parsed, limits, on_page)


async def _embed(
    ctx: IngestionContext, drafts: list[ChunkDraft], progress: ProgressReporter
) -> list[list[float]]:
    texts = [draft.embedding_input for draft in drafts]
    vectors: list[list[float]] = [[] for _ in texts]
    done = 0
    for batch in length_sorted_batches(texts, ctx.settings.embedding_batch_size):
        embedded = await ctx.embedder.embed_documents([texts[i] for i in batch])
        for index, vector in zip(batch, embedded, strict=True):
            vectors[index] = vector
        done += len(batch)
        await progress.record("embedding", 20 + int(75 * done / len(drafts)))
    return vectors


def _prompt_facts(drafts: list[ChunkDraft], count: Callable[[str], int]) -> list[dict[str, object]]:
    """Each passage's token count as a prompt quotes it, and its prompt-injection flags: stored
    with the chunk, so answering never tokenizes or scans a passage again."""
    return [
        {"text_tokens": passage_text_tokens(d.text, count), "injection_flags": detect_injection(d.text)}
        for d in drafts
    ]


async def _store(
    session: AsyncSession,
    ctx: IngestionContext,
    job_id: uuid.UUID,
    claim: _Claim,
    drafts: list[ChunkDraft],
    vectors: list[list[float]],
    facts: list[dict[str, object]],
    kept_ids: list[int],
    counts: _VersionCounts,
) -> bool:
    job = await repo.get_job_for_update(session, job_id)
    document = await repo.get_job_document(session, claim.document_id, for_update=True)
    if job is None or document is None or job.status in FINISHED:
        return False
    if document.current_version is not None and document.current_version > claim.version:
        # A newer version became current while this one was running: keep history straight.
        job.status, job.error_code, job.error = "failed", "superseded", "a newer version was ingested first"
        job.finished_at = ctx.clock()
        await repo.set_version_status(session, claim.version_id, "superseded")
        return False
    await repo.delete_chunks_from_version(session, claim.document_id, claim.version)
    if await repo.count_still_current(session, kept_ids) != len(kept_ids):
        raise ConcurrentChangeError("the document's current chunks changed during ingestion")
    await repo.close_current_chunks(session, claim.document_id, claim.version, kept_ids)
    await repo.insert_chunks(
        session,
        [
            {
                "tenant_id": document.tenant_id,
                "document_id": claim.document_id,
                "page": draft.page,
                "position": draft.position,
                "text": draft.text,
                "context": draft.context,
                "page_sha256": draft.page_sha256,
                "embedding": vector,
                "embedding_model": ctx.embedder.model_name,
                "valid_from_version": claim.version,
                "ocr": draft.ocr,
                "start_offset": draft.start,
                "end_offset": draft.end,
                **fact,
            }
            for draft, vector, fact in zip(drafts, vectors, facts, strict=True)
        ],
    )
    version = await repo.get_version_by_id(session, claim.version_id)
    assert version is not None
    version.status = "succeeded"
    version.page_count = counts.pages
    version.chunk_count = len(kept_ids) + len(drafts)
    version.pages_embedded = counts.pages_embedded
    version.pages_reused = counts.pages_reused
    document.current_version = claim.version
    job.status, job.stage, job.progress = "succeeded", "storing", 100
    job.stage_page = job.stage_pages = None  # whichever intermediate stage was written last
    job.error, job.error_code = None, None
    job.finished_at = ctx.clock()
    await _sample_queue_depth_in(session, ctx)
    return True
