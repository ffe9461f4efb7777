"""Document use cases: upload and versioning, metadata, soft delete and restore, reads.

The service works in the caller's session and never commits: the HTTP dependency (or the CLI)
owns the transaction, so an upload, its version row and its ingestion job commit together.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import AccessSet
from app.db.models import Document, DocumentVersion, IngestionJob
from app.documents import repository as repo
from app.documents.errors import (
    DocumentDeletedError,
    DocumentNotFoundError,
    InvalidMetadataError,
    JobNotFoundError,
    NotUrlDocumentError,
    UrlUnreachableError,
)
from app.documents.fetching import FetchLimits, UrlFetcher
from app.documents.metadata import (
    MAX_URL_CHARS,
    DocumentMetadata,
    check_lengths,
    normalise_tags,
    title_of_url,
)
from app.documents.parsing import ParsedDocument, ParseLimits, parse_document
from app.observability.context import current_request_id, current_trace_id
from app.security.audit import record_audit_entry
from app.settings import Settings

ACTIVE = frozenset({"queued", "running", "succeeded"})


class JobDispatcher(Protocol):
    async def enqueue_ingestion(
        self, session: AsyncSession, job_id: uuid.UUID, document_id: uuid.UUID
    ) -> int: ...


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    filename: str | None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class UploadOutcome:
    document_id: uuid.UUID
    version: int | None  # None: a URL job, whose version exists once the worker fetched the content
    job_id: uuid.UUID
    status: str  # "queued" for a new version, "unchanged" when the bytes equal the latest version


@dataclass(frozen=True)
class DocumentDetail:
    document: Document
    current: DocumentVersion | None
    latest: DocumentVersion | None
    latest_job: IngestionJob | None
    chunk_count: int


@dataclass(frozen=True)
class VersionEntry:
    version: DocumentVersion
    job: IngestionJob | None
    is_current: bool


@dataclass
class DocumentService:
    session: AsyncSession
    settings: Settings
    dispatcher: JobDispatcher | None = None
    principal_id: str | None = None
    url_fetcher: UrlFetcher | None = None  # default: built from the settings
    access: AccessSet | None = None  # the caller's; None sees every document (the operator, workers)

    # --- uploads ------------------------------------------------------------------------------

    async def parse(self, upload: UploadedFile) -> ParsedDocument:
        """Sniff and validate off the event loop; raises the document input errors (4xx)."""
        return await asyncio.to_thread(
            parse_document,
            upload.data,
            filename=upload.filename,
            max_uncompressed_bytes=self.settings.docx_max_uncompressed_mb * 1024 * 1024,
            limits=ParseLimits.from_settings(self.settings),
        )

    async def upload(
        self, tenant_id: uuid.UUID, upload: UploadedFile, meta: DocumentMetadata
    ) -> UploadOutcome:
        """A new document, or, when ``meta.path`` names a live document of the tenant, a new
        version of it (so re-running an import never duplicates documents)."""
        tags = normalise_tags(meta.tags)
        check_lengths(meta)
        parsed = await self.parse(upload)
        document: Document | None = None
        if meta.path:
            await repo.lock_path(self.session, tenant_id, meta.path)
            document = await repo.find_live_document_by_path(
                self.session, tenant_id, meta.path, for_update=True, access=self.access
            )
        if document is None:
            document = Document(
                tenant_id=tenant_id,
                title=meta.title or upload.filename or meta.path or "Untitled",
                path=meta.path,
                author=meta.author,
                tags=tags or [],
                access=meta.access.grants() if meta.access else [],
            )
            self.session.add(document)
            await self.session.flush()
            await self._record(document, "document.create", {"title": document.title})
            return await self._add_version(document, upload, parsed, new_document=True)
        self._apply_metadata(document, replace(meta, tags=tags))
        return await self._add_version(document, upload, parsed)

    async def upload_version(
        self, tenant_id: uuid.UUID, document_id: uuid.UUID, upload: UploadedFile
    ) -> UploadOutcome:
        document = await self._document(tenant_id, document_id, include_deleted=True, for_update=True)
        if document.deleted_at is not None:
            raise DocumentDeletedError("restore the document before uploading a new version")
        parsed = await self.parse(upload)
        return await self._add_version(document, upload, parsed)

    async def _add_version(
        self, document: Document, upload: UploadedFile, parsed: ParsedDocument, *, new_document: bool = False
    ) -> UploadOutcome:
        """``new_document``: created in this transaction, so it has no versions and no jobs to look up."""
        latest = None if new_document else await repo.latest_version(self.session, document.id)
        if latest is not None and latest.content_sha256 == upload.sha256 and latest.status in ACTIVE:
            job = await repo.latest_job_for_version(self.session, latest.id)
            if job is not None:
                return UploadOutcome(document.id, latest.version, job.id, "unchanged")
        number = 1 if latest is None else latest.version + 1
        stale_jobs = [] if new_document else await repo.queued_jobs_of_document(self.session, document.id)
        for stale in stale_jobs:
            stale.status, stale.error_code = "failed", "superseded"
            stale.error = f"superseded by version {number} before it started"
            stale.finished_at = repo.utcnow()
            await repo.set_version_status(self.session, stale.version_id, "superseded")
        version = DocumentVersion(
            tenant_id=document.tenant_id,
            document_id=document.id,
            version=number,
            filename=upload.filename,
            content_sha256=upload.sha256,
            size_bytes=upload.size,
            mime_type=parsed.mime_type,
            page_count=parsed.page_count,
            content=upload.data,
            uploaded_by=self.principal_id,
            status="queued",
        )
        self.session.add(version)
        await self.session.flush()
        job = await self._queue_job(document, version.id)
        await self._record(
            document,
            "document.upload",
            {"version": number, "sha256": upload.sha256, "size": upload.size, "mime": parsed.mime_type},
        )
        return UploadOutcome(document.id, number, job.id, "queued")

    # --- URL documents ------------------------------------------------------------------------

    async def add_url(self, tenant_id: uuid.UUID, url: str, meta: DocumentMetadata) -> UploadOutcome:
        """A document fetched from ``url`` by the worker. What is knowable now is refused now
        (scheme, credentials, a literal or resolved address that is not public: ``url_forbidden``;
        a name that does not resolve: ``url_unreachable``); the worker checks again at each hop."""
        tags = normalise_tags(meta.tags)
        check_lengths(meta)
        fetcher = self.url_fetcher or UrlFetcher(FetchLimits.from_settings(self.settings))
        try:
            async with asyncio.timeout(self.settings.url_fetch_timeout_s):
                target = await fetcher.vet(url)
        except TimeoutError as exc:
            raise UrlUnreachableError("the host name did not resolve in time (URL_FETCH_TIMEOUT_S)") from exc
        if len(str(target.url)) > MAX_URL_CHARS:
            raise InvalidMetadataError(f"the URL is longer than {MAX_URL_CHARS} characters once encoded")
        document = Document(
            tenant_id=tenant_id,
            title=(meta.title or "").strip() or title_of_url(str(target.url)),
            author=meta.author,
            tags=tags or [],
            source_url=str(target.url),
            access=meta.access.grants() if meta.access else [],
        )
        self.session.add(document)
        await self.session.flush()
        await self._record(document, "document.create", {"title": document.title, "url": document.source_url})
        return await self._queue_fetch(document, "document.fetch")

    async def refresh(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> UploadOutcome:
        """Fetch a URL document again (conditionally); the worker makes a new version only when
        the content changed. A fetch already waiting is returned instead of a second one."""
        document = await self._document(tenant_id, document_id, include_deleted=True, for_update=True)
        if document.deleted_at is not None:
            raise DocumentDeletedError("restore the document before refreshing it")
        if document.source_url is None:
            raise NotUrlDocumentError(
                "only a document added from a URL can be refreshed; upload a new version"
            )
        pending = await repo.pending_fetch_job(self.session, document.id)
        if pending is not None:
            return UploadOutcome(document.id, None, pending.id, "queued")
        return await self._queue_fetch(document, "document.refresh")

    async def _queue_fetch(self, document: Document, action: str) -> UploadOutcome:
        job = await self._queue_job(document, None)
        await self._record(document, action, {"url": document.source_url, "job_id": str(job.id)})
        return UploadOutcome(document.id, None, job.id, "queued")

    async def _queue_job(self, document: Document, version_id: uuid.UUID | None) -> IngestionJob:
        """A queued ingestion job for ``document`` (a stored version's, or a URL fetch's with
        ``version_id`` None), handed to the dispatcher in the same transaction."""
        job = IngestionJob(
            tenant_id=document.tenant_id,
            document_id=document.id,
            version_id=version_id,
            status="queued",
            progress=0,
            attempts=0,
            request_id=current_request_id(),
            trace_id=current_trace_id(),
        )
        self.session.add(job)
        await self.session.flush()
        if self.dispatcher is not None:
            job.queue_job_id = await self.dispatcher.enqueue_ingestion(self.session, job.id, document.id)
        document.updated_at = repo.utcnow()
        return job

    # --- metadata, delete, restore ------------------------------------------------------------

    def _apply_metadata(self, document: Document, meta: DocumentMetadata) -> None:
        if meta.title is not None:
            if not meta.title.strip():
                raise InvalidMetadataError("title must not be blank")
            document.title = meta.title.strip()
        if meta.tags is not None:
            document.tags = meta.tags
        if meta.author is not None:
            document.author = meta.author or None
        if meta.access is not None:  # the row's update bumps the corpus version: cached answers go
            document.access = meta.access.grants()

    async def update_metadata(
        self, tenant_id: uuid.UUID, document_id: uuid.UUID, meta: DocumentMetadata
    ) -> Document:
        check_lengths(meta)
        tags = normalise_tags(meta.tags)
        document = await self._document(tenant_id, document_id, for_update=True)
        self._apply_metadata(document, replace(meta, tags=tags, path=None))
        document.updated_at = repo.utcnow()
        access = asdict(meta.access) if meta.access is not None else None
        details: dict[str, object] = {"title": meta.title, "tags": tags, "author": meta.author}
        details["access"] = access
        await self._record(document, "document.update", details)
        return document

    async def soft_delete(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> None:
        document = await self._document(tenant_id, document_id, include_deleted=True, for_update=True)
        if document.deleted_at is None:
            document.deleted_at = repo.utcnow()
            await self._record(document, "document.delete", {})

    async def restore(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> Document:
        document = await self._document(tenant_id, document_id, include_deleted=True, for_update=True)
        if document.deleted_at is not None:
            document.deleted_at = None
            document.updated_at = repo.utcnow()
            await self._record(document, "document.restore", {})
        return document

    # --- reads --------------------------------------------------------------------------------

    async def _document(
        self,
        tenant_id: uuid.UUID,
        document_id: uuid.UUID,
        *,
        include_deleted: bool = False,
        for_update: bool = False,
    ) -> Document:
        """The tenant's document, or 404 (another tenant's id is as unknown as a made-up one)."""
        document = await repo.get_document(
            self.session,
            tenant_id,
            document_id,
            include_deleted=include_deleted,
            for_update=for_update,
            access=self.access,
        )
        if document is None:
            raise DocumentNotFoundError()
        return document

    async def list_documents(
        self,
        tenant_id: uuid.UUID,
        *,
        tag: str | None = None,
        text_query: str | None = None,
        include_deleted: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> repo.DocumentPage:
        """Newest change first; ``text_query`` matches title or path."""
        return await repo.list_documents(
            self.session,
            tenant_id,
            tag=tag,
            text_query=text_query,
            include_deleted=include_deleted,
            limit=limit,
            offset=offset,
            access=self.access,
        )

    async def detail(
        self, tenant_id: uuid.UUID, document_id: uuid.UUID, *, include_deleted: bool = False
    ) -> DocumentDetail:
        document = await self._document(tenant_id, document_id, include_deleted=include_deleted)
        latest = await repo.latest_version(self.session, document.id)
        current = None
        if document.current_version is not None:
            current = await repo.get_version(self.session, document.id, document.current_version)
        job = await repo.latest_job_for_version(self.session, latest.id) if latest is not None else None
        chunks = await repo.count_current_chunks(self.session, document.id)
        return DocumentDetail(document, current, latest, job, chunks)

    async def versions(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> list[VersionEntry]:
        document = await self._document(tenant_id, document_id, include_deleted=True)
        entries = []
        for version in await repo.list_versions(self.session, document.id):
            job = await repo.latest_job_for_version(self.session, version.id)
            entries.append(VersionEntry(version, job, version.version == document.current_version))
        return entries

    async def job(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> tuple[IngestionJob, int | None]:
        job = await repo.get_job(self.session, tenant_id, job_id, self.access)
        if job is None:
            raise JobNotFoundError()
        if job.version_id is None:
            return job, None  # a URL job that has not fetched (yet, or ever: the fetch failed)
        version = await repo.get_version_by_id(self.session, job.version_id)
        return job, (version.version if version is not None else None)

    # --- audit --------------------------------------------------------------------------------

    async def _record(self, document: Document, action: str, details: dict[str, object]) -> None:
        """The audit row of a write, scrubbed like every audit row (titles, tags and authors are
        client text: a secret pasted into one must not end up in the audit log)."""
        await record_audit_entry(
            self.session,
            tenant_id=document.tenant_id,
            principal_id=self.principal_id,
            action=action,
            target_type="document",
            target_id=document.id,
            details={key: value for key, value in details.items() if value is not None},
        )
