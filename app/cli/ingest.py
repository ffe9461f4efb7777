"""Ingesting a folder or URLs from a terminal: one outcome per file and the summary table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.documents.ingestion import IngestionContext
    from app.rag.embeddings import Embedder
    from app.settings import Settings


@dataclass(frozen=True)
class IngestionServices:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    embedder: Embedder
    context: IngestionContext


@dataclass
class FileOutcome:
    path: str
    status: str  # ingested | unchanged | failed
    pages: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    reason: str = ""


@dataclass
class IngestSummary:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes if o.status == "ingested")

    @property
    def chunks_embedded(self) -> int:
        return sum(o.chunks_embedded for o in self.outcomes)


def _files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


async def ingest_directory(
    services: IngestionServices,
    directory: Path,
    *,
    tenant_slug: str,
    tags: list[str],
    progress: Progress | None = None,
) -> IngestSummary:
    from app.auth.api_keys import get_or_create_tenant
    from app.documents.ingestion import ingest_document_version
    from app.documents.metadata import DocumentMetadata
    from app.documents.service import DocumentService, UploadedFile
    from app.errors import AppError

    files = _files(directory)
    summary = IngestSummary()
    started = time.perf_counter()
    task = progress.add_task("ingesting", total=len(files)) if progress is not None else None
    for path in files:
        relative = f"{directory.name}/{path.relative_to(directory).as_posix()}"
        if progress is not None and task is not None:
            progress.update(task, description=relative[-40:])
        outcome = FileOutcome(path=relative, status="failed")
        try:
            if path.stat().st_size > services.settings.max_upload_bytes:
                raise ValueError(f"larger than MAX_UPLOAD_MB={services.settings.max_upload_mb}")
            upload = UploadedFile(data=path.read_bytes(), filename=path.name)
            async with services.session_factory() as session, session.begin():
                tenant = await get_or_create_tenant(session, tenant_slug)
                service = DocumentService(session, services.settings, principal_id="cli:ingest")
                meta = DocumentMetadata(
                    title=path.stem.replace("-", " ").replace("_", " "), tags=tags, path=relative
                )
                result = await service.upload(tenant.id, upload, meta)
            if result.status == "unchanged":
                outcome.status, outcome.reason = "unchanged", "identical to the stored version"
            else:
                ingested = await ingest_document_version(services.context, result.job_id)
                if ingested.status == "succeeded":
                    outcome.status = "ingested"
                    outcome.pages, outcome.chunks = ingested.pages, ingested.chunks
                    outcome.chunks_embedded = ingested.chunks_embedded
                else:
                    outcome.reason = ingested.error or ingested.status
        except AppError as exc:
            outcome.reason = f"{exc.code}: {exc.detail}"
        except (OSError, ValueError) as exc:
            outcome.reason = str(exc)
        summary.outcomes.append(outcome)
        if progress is not None and task is not None:
            progress.advance(task)
    summary.seconds = time.perf_counter() - started
    return summary


async def ingest_url(
    services: IngestionServices, url: str, *, tenant_slug: str, tags: list[str]
) -> FileOutcome:
    """One URL, fetched and ingested now, as ``POST /api/v1/docs`` with a JSON ``url`` would."""
    from app.auth.api_keys import get_or_create_tenant
    from app.documents.ingestion import ingest_document_version
    from app.documents.metadata import DocumentMetadata
    from app.documents.service import DocumentService
    from app.errors import AppError

    outcome = FileOutcome(path=url, status="failed")
    try:
        async with services.session_factory() as session, session.begin():
            tenant = await get_or_create_tenant(session, tenant_slug)
            service = DocumentService(session, services.settings, principal_id="cli:ingest")
            added = await service.add_url(tenant.id, url, DocumentMetadata(tags=tags))
        ingested = await ingest_document_version(services.context, added.job_id)
        if ingested.status == "succeeded":
            outcome.status = "ingested"
            outcome.pages, outcome.chunks = ingested.pages, ingested.chunks
            outcome.chunks_embedded = ingested.chunks_embedded
        else:
            async with services.session_factory() as session:
                job, _ = await DocumentService(session, services.settings).job(tenant.id, added.job_id)
            outcome.reason = f"{job.error_code}: {job.error}" if job.error_code else ingested.status
    except AppError as exc:
        outcome.reason = f"{exc.code}: {exc.detail}"
    return outcome


def render_summary(summary: IngestSummary) -> Table:
    from rich.table import Table

    table = Table(title="Ingestion summary")
    table.add_column("file")
    table.add_column("status")
    table.add_column("pages", justify="right")
    table.add_column("chunks", justify="right")
    table.add_column("embedded", justify="right")
    table.add_column("reason")
    for o in summary.outcomes:
        table.add_row(o.path, o.status, str(o.pages), str(o.chunks), str(o.chunks_embedded), o.reason)
    table.add_section()
    table.add_row(
        f"{len(summary.outcomes)} files",
        f"{summary.count('ingested')} ingested, {summary.count('unchanged')} skipped, "
        f"{summary.count('failed')} failed",
        str(summary.pages),
        str(sum(o.chunks for o in summary.outcomes if o.status == "ingested")),
        str(summary.chunks_embedded),
        "",
    )
    return table
