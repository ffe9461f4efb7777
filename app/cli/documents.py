"""``worker``, ``ingest``, ``seed`` and ``reembed``: the documents capability at a terminal.

They talk to the database directly with the same services as the server (no HTTP); with no
``DATABASE_URL`` they join (or start) the embedded PostgreSQL under ``DATA_DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.bootstrap import DEV_TENANT
from app.cli.bootstrap import Attached, Migrations, Servers, attach, database_sessions, load_settings
from app.embedded.errors import StartupError
from app.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

    from app.cli.bootstrap import Subcommands
    from app.documents.ingestion import IngestionContext
    from app.observability.metrics import DomainMetrics
    from app.rag.embeddings import Embedder

SEED_DIR = Path(__file__).resolve().parents[1] / "documents" / "seed"
SEED_TAGS = ("demo", "product")


def add_document_commands(commands: Subcommands) -> None:
    worker = commands.add_parser("worker", help="run ingestion job workers (python -m app worker)")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default: WORKER_CONCURRENCY)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument("--name", help="worker name shown in logs")
    worker.set_defaults(handler=cmd_worker)

    ingest = commands.add_parser("ingest", help="ingest a folder of documents with a progress bar")
    ingest.add_argument("directory", type=Path, nargs="?", help="a folder (recursively)")
    ingest.add_argument(
        "--url",
        action="append",
        default=[],
        help="a web page or document to fetch and ingest as a new document (repeatable; the API's "
        "SSRF rules and URL_FETCH_* settings apply)",
    )
    ingest.add_argument("--tags", default="", help="comma-separated tags for every document")
    ingest.add_argument("--tenant", default=DEV_TENANT, help=f"tenant slug (default: {DEV_TENANT})")
    ingest.set_defaults(handler=cmd_ingest)

    seed = commands.add_parser("seed", help="ingest the demo documents into the dev tenant (idempotent)")
    seed.add_argument("--tenant", default=DEV_TENANT)
    seed.set_defaults(handler=cmd_seed)

    reembed = commands.add_parser("reembed", help="re-embed stored chunks with the configured model")
    reembed.add_argument("--all", action="store_true", help="also chunks already made by this model")
    reembed.add_argument("--batch-size", type=int, default=256)
    reembed.set_defaults(handler=cmd_reembed)


# --- shared plumbing --------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestionServices:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    embedder: Embedder
    context: IngestionContext


@contextlib.asynccontextmanager
async def ingestion_services(
    settings: Settings, *, check_model: bool = True, metrics: DomainMetrics | None = None
) -> AsyncIterator[IngestionServices]:
    """The embedder and a session factory, refused when the stored chunks were embedded by
    another model (``check_model``) so that one index never mixes two vector spaces."""
    from app.documents.ingestion import IngestionContext
    from app.documents.runtime import EmbeddingModelMismatchError, check_embedding_compatibility
    from app.rag.embeddings import EmbeddingError, create_embedder

    async with database_sessions(settings) as session_factory:
        try:
            embedder = create_embedder(settings)
        except EmbeddingError as exc:
            raise StartupError(str(exc)) from exc
        try:
            if check_model:
                await check_embedding_compatibility(session_factory, embedder.model_name, embedder.dimension)
            context = IngestionContext(session_factory, embedder, settings)
            if metrics is not None:
                context = IngestionContext(session_factory, embedder, settings, metrics=metrics)
            yield IngestionServices(settings, session_factory, embedder, context)
        except EmbeddingModelMismatchError as exc:
            raise StartupError(str(exc)) from exc
        finally:
            await embedder.aclose()


def _attach_database(settings: Settings) -> contextlib.AbstractContextManager[Attached]:
    return attach(settings, servers=Servers.POSTGRES, migrations=Migrations.AUTO_OR_EMBEDDED)


# --- worker -----------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.concurrency:
        settings = settings.model_copy(update={"worker_concurrency": args.concurrency})
    with _attach_database(settings) as attached:
        return asyncio.run(_run_worker(attached.settings, burst=args.burst, name=args.name))


async def _run_worker(settings: Settings, *, burst: bool, name: str | None) -> int:
    from app.observability.logging import configure_logging
    from app.observability.telemetry import build_metrics

    configure_logging(settings)
    # The worker records its jobs on the configured metrics backend (with Prometheus in
    # multiprocess mode, the API's /metrics aggregates them from the shared directory).
    metrics = build_metrics(settings)
    await asyncio.to_thread(metrics.backend.start)
    try:
        await _work(settings, metrics, burst=burst, name=name)
    finally:
        await asyncio.to_thread(metrics.backend.close)
    return 0


async def _work(settings: Settings, metrics: DomainMetrics, *, burst: bool, name: str | None) -> None:
    from app.documents.queue import create_job_queue

    async with ingestion_services(settings, metrics=metrics) as services:
        load = getattr(services.embedder, "load", None)
        if callable(load):
            await asyncio.to_thread(load)  # load the model before taking jobs
        queue = create_job_queue(settings)
        await queue.open()
        main = asyncio.current_task()
        assert main is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, main.cancel)
        print(f"worker ready (concurrency {settings.worker_concurrency})", file=sys.stderr, flush=True)
        try:
            await queue.run_worker(services.context, burst=burst, name=name)
        except asyncio.CancelledError:
            pass
        finally:
            await queue.close()


# --- ingest -----------------------------------------------------------------------------------


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


def _run_ingest(directory: Path | None, tenant: str, tags: list[str], urls: Sequence[str] = ()) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if directory is None and not urls:
        raise StartupError("name a folder to ingest, or one or more --url")
    if directory is not None and not directory.is_dir():
        raise StartupError(f"{directory} is not a directory")
    settings = load_settings()
    console = Console()
    with _attach_database(settings) as attached:

        async def run() -> IngestSummary:
            async with ingestion_services(attached.settings) as services:
                columns = (
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                )
                summary = IngestSummary()
                if directory is not None:
                    with Progress(*columns, console=console, transient=False) as progress:
                        summary = await ingest_directory(
                            services, directory, tenant_slug=tenant, tags=tags, progress=progress
                        )
                started = time.perf_counter()
                for url in urls:
                    summary.outcomes.append(await ingest_url(services, url, tenant_slug=tenant, tags=tags))
                summary.seconds += time.perf_counter() - started
                return summary

        summary = asyncio.run(run())
    console.print(render_summary(summary))
    rate = summary.seconds or 1e-9
    console.print(
        f"{summary.pages} pages and {summary.chunks_embedded} chunks embedded in {summary.seconds:.1f}s "
        f"({summary.pages / rate:.1f} pages/s, {summary.chunks_embedded / rate:.1f} chunks/s)"
    )
    return (
        1
        if summary.count("failed") and not summary.count("ingested") and not summary.count("unchanged")
        else 0
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    tags = [tag.strip() for tag in args.tags.split(",") if tag.strip()]
    return _run_ingest(args.directory, args.tenant, tags, args.url)


def cmd_seed(args: argparse.Namespace) -> int:
    return _run_ingest(SEED_DIR, args.tenant, list(SEED_TAGS))


# --- reembed ----------------------------------------------------------------------------------


def cmd_reembed(args: argparse.Namespace) -> int:
    with _attach_database(load_settings()) as attached:
        return asyncio.run(
            _reembed(attached.settings, include_current_model=args.all, batch_size=args.batch_size)
        )


async def _reembed(settings: Settings, *, include_current_model: bool, batch_size: int) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from app.documents import repository as repo

    console = Console()
    async with ingestion_services(settings, check_model=False) as services:
        model = services.embedder.model_name
        async with services.session_factory() as session:
            column_dim = await repo.vector_column_dimension(session)
            total = await repo.count_chunks_to_reembed(
                session, model, include_current_model=include_current_model
            )
        if column_dim is not None and column_dim != services.embedder.dimension:
            raise StartupError(
                f"the chunks table stores {column_dim}-d vectors; {model} makes "
                f"{services.embedder.dimension}-d ones: a new dimension needs a fresh database "
                "migrated with that EMBEDDING_DIM"
            )
        after = 0
        done = 0
        with Progress(console=console) as progress:
            task = progress.add_task(f"re-embedding with {model}", total=total)
            while True:
                async with services.session_factory() as session:
                    rows = await repo.chunks_to_reembed(
                        session,
                        model,
                        after_id=after,
                        limit=batch_size,
                        include_current_model=include_current_model,
                    )
                if not rows:
                    break
                vectors = await services.embedder.embed_documents([text for _, text in rows])
                async with services.session_factory() as session, session.begin():
                    await repo.set_chunk_embeddings(
                        session, [(cid, vec) for (cid, _), vec in zip(rows, vectors, strict=True)], model
                    )
                after = rows[-1][0]
                done += len(rows)
                progress.update(task, completed=done)
    console.print(f"re-embedded {done} chunks with {model}")
    return 0
