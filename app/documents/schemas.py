"""Response and request bodies of /api/v1/docs and /api/v1/jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.auth.access import GROUP_PATTERN, MAX_ACCESS_ENTRIES, AccessList
from app.db.models import Document, DocumentVersion, IngestionJob
from app.documents.service import DocumentDetail, UploadOutcome, VersionEntry
from app.security.text import PlainText


def status_url(job_id: uuid.UUID) -> str:
    return f"/api/v1/jobs/{job_id}"


class UploadAccepted(BaseModel):
    document_id: uuid.UUID
    version: int | None = Field(
        description="null for a URL: the worker makes the version once it has fetched new content"
    )
    job_id: uuid.UUID
    status_url: str
    status: Literal["queued", "unchanged"] = Field(
        description="'unchanged': the bytes equal the latest version; nothing new was stored"
    )

    @classmethod
    def of(cls, outcome: UploadOutcome) -> UploadAccepted:
        return cls(
            document_id=outcome.document_id,
            version=outcome.version,
            job_id=outcome.job_id,
            status_url=status_url(outcome.job_id),
            status="unchanged" if outcome.status == "unchanged" else "queued",
        )


class VersionOut(BaseModel):
    version: int
    status: str
    is_current: bool
    filename: str | None
    mime_type: str
    size_bytes: int
    content_sha256: str
    page_count: int | None
    pages_reused: int | None
    pages_reembedded: int | None
    chunk_count: int | None
    uploaded_by: str | None
    uploaded_at: datetime
    job_id: uuid.UUID | None

    @classmethod
    def of(cls, version: DocumentVersion, job: IngestionJob | None, *, is_current: bool) -> VersionOut:
        return cls(
            version=version.version,
            status=version.status,
            is_current=is_current,
            filename=version.filename,
            mime_type=version.mime_type,
            size_bytes=version.size_bytes,
            content_sha256=version.content_sha256,
            page_count=version.page_count,
            pages_reused=version.pages_reused,
            pages_reembedded=version.pages_embedded,
            chunk_count=version.chunk_count,
            uploaded_by=version.uploaded_by,
            uploaded_at=version.uploaded_at,
            job_id=job.id if job is not None else None,
        )

    @classmethod
    def of_entry(cls, entry: VersionEntry) -> VersionOut:
        return cls.of(entry.version, entry.job, is_current=entry.is_current)


class DocumentAccess(BaseModel):
    """Who may see a document besides the tenant's admins; both empty: the whole tenant."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(
        default_factory=list,
        description=f"group names ({GROUP_PATTERN}); with principals at most {MAX_ACCESS_ENTRIES}",
    )
    principals: list[str] = Field(
        default_factory=list, description="principal ids: 'key:<api key id>' or 'user:<token sub>'"
    )

    def parsed(self) -> AccessList:
        """422 ``invalid_access`` for a name outside the pattern or a list over the bound."""
        return AccessList.parse(self.groups, self.principals)


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    path: str | None
    author: str | None
    tags: list[str]
    current_version: int | None
    source_url: str | None = Field(description="where a document added from a URL is fetched from")
    source_etag: str | None = Field(description="ETag of the content last fetched from source_url")
    source_last_modified: str | None = Field(description="Last-Modified of the content last fetched")
    access: DocumentAccess
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @field_validator("access", mode="before")
    @classmethod
    def _grants(cls, value: object) -> object:
        if isinstance(value, list):  # the row's grants
            listed = AccessList.of_grants(value)
            return {"groups": list(listed.groups), "principals": list(listed.principals)}
        return value

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        return cls.model_validate(document)


class DocumentDetailOut(DocumentOut):
    page_count: int | None = Field(description="pages of the current version")
    chunk_count: int = Field(description="chunks retrieval sees for this document")
    current: VersionOut | None
    latest: VersionOut | None = Field(description="the newest upload, possibly still ingesting")

    @classmethod
    def of_detail(cls, detail: DocumentDetail) -> DocumentDetailOut:
        base = DocumentOut.of(detail.document).model_dump()
        latest_job = detail.latest_job
        current = detail.current
        return cls(
            **base,
            page_count=current.page_count if current is not None else None,
            chunk_count=detail.chunk_count,
            current=VersionOut.of(current, None, is_current=True) if current is not None else None,
            latest=(
                VersionOut.of(
                    detail.latest,
                    latest_job,
                    is_current=detail.latest.version == detail.document.current_version,
                )
                if detail.latest is not None
                else None
            ),
        )


class DocumentListOut(BaseModel):
    items: list[DocumentOut]
    total: int
    limit: int
    offset: int


class UrlDocumentIn(BaseModel):
    """``POST /api/v1/docs`` with a JSON body: a document the worker fetches from ``url``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=2048, description="http(s) URL of an HTML, PDF, text or Markdown document"
    )
    title: PlainText | None = Field(default=None, max_length=500)
    tags: list[PlainText] | None = None
    author: PlainText | None = Field(default=None, max_length=200)
    access: DocumentAccess | None = None


class DocumentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: PlainText | None = Field(default=None, min_length=1, max_length=500)
    tags: list[PlainText] | None = None
    author: PlainText | None = Field(default=None, max_length=200)
    access: DocumentAccess | None = Field(
        default=None, description="replaces the access list; empty lists open it to the whole tenant"
    )


class JobOut(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    version: int | None
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: int
    stage: Literal["fetching", "parsing", "ocr", "chunking", "embedding", "storing"] | None
    stage_page: int | None = Field(default=None, description="page n of stage_pages in the ocr stage")
    stage_pages: int | None = None
    error: str | None
    error_code: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: IngestionJob, version: int | None) -> JobOut:
        return cls(
            id=job.id,
            document_id=job.document_id,
            version=version,
            status=job.status,
            progress=job.progress,
            stage=job.stage,
            stage_page=job.stage_page,
            stage_pages=job.stage_pages,
            error=job.error,
            error_code=job.error_code,
            attempts=job.attempts,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
