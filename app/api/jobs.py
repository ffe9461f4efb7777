"""/api/v1/jobs/{id}: ingestion job status, progress, stage and error."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.auth import ReaderPrincipal
from app.api.deps import SessionDep, SettingsDep
from app.auth.access import AccessSet
from app.documents.errors import public_job_error
from app.documents.schemas import JobOut
from app.documents.service import DocumentService

router = APIRouter(prefix="/api/v1/jobs", tags=["documents"])


@router.get("/{job_id}", response_model=JobOut, summary="An ingestion job")
async def get_job(
    job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: ReaderPrincipal
) -> JobOut:
    """``error`` is readable: a known problem's message, or a generic one quoting the job id (the
    raw failure is only in the logs); ``error_code`` is stable."""
    service = DocumentService(session, settings, access=AccessSet.of(principal))
    job, version = await service.job(principal.tenant_id, job_id)
    out = JobOut.of(job, version)
    return out.model_copy(update={"error": public_job_error(job.id, job.error_code, job.error)})
