"""/api/v1/docs: upload, versions, metadata, soft delete and restore. Reads need the reader role,
writes the editor role; every lookup is scoped to the caller's tenant (a foreign id is a 404)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError, WithJsonSchema

from app.api.auth import EditorPrincipal, ReaderPrincipal
from app.api.deps import JobQueueDep, ReadSessionDep, SessionDep, SettingsDep
from app.api.limits import UploadRateLimit
from app.auth.access import AccessList, AccessSet
from app.auth.errors import PermissionDeniedError
from app.auth.principal import Principal, Role
from app.documents.errors import InvalidFilenameError, MissingFileError, UploadTooLargeError
from app.documents.metadata import DocumentMetadata
from app.documents.schemas import (
    DocumentDetailOut,
    DocumentListOut,
    DocumentOut,
    DocumentPatch,
    UploadAccepted,
    UrlDocumentIn,
    VersionOut,
)
from app.documents.service import DocumentService, UploadedFile
from app.security.text import PlainText, has_control_characters
from app.settings import Settings

router = APIRouter(prefix="/api/v1/docs", tags=["documents"])

READ_CHUNK = 1024 * 1024
MAX_FILENAME_CHARS = 500  # document_versions.filename


async def read_limited(file: UploadFile | None, settings: Settings) -> UploadedFile:
    """Read the file part in 1 MiB pieces and stop at MAX_UPLOAD_MB."""
    if file is None:
        raise MissingFileError("send the document as the multipart field 'file'")
    if file.filename and (has_control_characters(file.filename) or len(file.filename) > MAX_FILENAME_CHARS):
        raise InvalidFilenameError(
            f"the file name must be at most {MAX_FILENAME_CHARS} characters, without NUL or other "
            "control characters"
        )
    limit = settings.max_upload_bytes
    buffer = bytearray()
    while piece := await file.read(READ_CHUNK):
        if len(buffer) + len(piece) > limit:
            raise UploadTooLargeError(f"uploads are limited to {settings.max_upload_mb} MB (MAX_UPLOAD_MB)")
        buffer.extend(piece)
    return UploadedFile(data=bytes(buffer), filename=file.filename)


def _service(
    session: SessionDep, settings: SettingsDep, queue: JobQueueDep, principal: Principal
) -> DocumentService:
    access = AccessSet.of(principal)  # a document the caller may not see is a 404
    return DocumentService(session, settings, dispatcher=queue, principal_id=principal.id, access=access)


async def writer_service(
    session: SessionDep, settings: SettingsDep, queue: JobQueueDep, principal: EditorPrincipal
) -> DocumentService:
    return _service(session, settings, queue, principal)


async def reader_service(
    session: ReadSessionDep, settings: SettingsDep, queue: JobQueueDep, principal: ReaderPrincipal
) -> DocumentService:
    """Listings, details and versions: on a read replica if one is healthy."""
    return _service(session, settings, queue, principal)


def _check_include_deleted(principal: Principal, include_deleted: bool) -> None:
    """Deleted documents are the editors' to see (and restore); readers see live ones only."""
    if include_deleted and not principal.role.allows(Role.editor):
        raise PermissionDeniedError(
            "include_deleted=true needs the editor role; readers see live documents only"
        )


MAX_LIST_OFFSET = 1_000_000  # far past any real listing, far below PostgreSQL's bigint

WriterService = Annotated[DocumentService, Depends(writer_service)]
ReaderService = Annotated[DocumentService, Depends(reader_service)]
FILE_DESCRIPTION = "PDF, DOCX, TXT, Markdown, HTML or an image (PNG, JPEG, TIFF, WebP: OCR)"
# Optional in the signature so that a request without it gets our 400 `missing_file` problem, but
# documented as what it is: a binary file part (OpenAPI 3.1's `format: binary`). Left to itself,
# `UploadFile | None` becomes `anyOf: [binary string, null]`, which clients and generators (e.g.
# Schemathesis) read as a plain text field, and a "null" part is never a document.
FilePart = Annotated[
    UploadFile | None,
    File(description=FILE_DESCRIPTION),
    WithJsonSchema(
        {"type": "string", "contentMediaType": "application/octet-stream", "description": FILE_DESCRIPTION}
    ),
]


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == "application/json"


async def read_url_document(request: Request) -> UrlDocumentIn:
    """The JSON alternative of ``POST /api/v1/docs`` (its size is bounded by MAX_REQUEST_BODY_MB)."""
    try:
        return UrlDocumentIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc


# The operation takes a multipart upload or, documented here, a JSON body naming a URL.
URL_BODY_OPENAPI = {
    "requestBody": {"content": {"application/json": {"schema": UrlDocumentIn.model_json_schema()}}}
}


def _respond(outcome_status: str, response: Response, body: UploadAccepted) -> UploadAccepted:
    response.headers["Location"] = body.status_url
    response.status_code = status.HTTP_200_OK if outcome_status == "unchanged" else status.HTTP_202_ACCEPTED
    return body


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Upload a document (a new version of the live document with the same path), or add a URL",
    description=(
        'multipart/form-data: the file and its metadata. application/json: `{"url", "title"?, '
        '"tags"?, "author"?}`, a document the worker fetches (HTML, PDF, text or Markdown); '
        "a URL that may not be fetched is refused now (`url_forbidden`, `url_unreachable`), "
        "anything found while fetching ends the job with its code."
    ),
    responses={
        200: {"model": UploadAccepted, "description": "identical to the latest version; nothing stored"}
    },
    openapi_extra=URL_BODY_OPENAPI,
)
async def upload_document(
    request: Request,
    response: Response,
    service: WriterService,
    principal: UploadRateLimit,
    settings: SettingsDep,
    file: FilePart = None,
    title: Annotated[PlainText | None, Form(max_length=500)] = None,
    tags: Annotated[
        list[PlainText] | None, Form(description="repeat the field or separate with commas")
    ] = None,
    author: Annotated[PlainText | None, Form(max_length=200)] = None,
    path: Annotated[PlainText | None, Form(max_length=1000)] = None,
    access_groups: Annotated[
        list[PlainText] | None, Form(description="groups that may see it (repeat or comma-separate)")
    ] = None,
    access_principals: Annotated[
        list[PlainText] | None, Form(description="principal ids that may see it ('key:<id>', 'user:<sub>')")
    ] = None,
) -> UploadAccepted:
    if file is None and _is_json(request):
        body = await read_url_document(request)
        access = body.access.parsed() if body.access is not None else None
        url_meta = DocumentMetadata(title=body.title, tags=body.tags, author=body.author, access=access)
        added = await service.add_url(principal.tenant_id, body.url, url_meta)
        return _respond(added.status, response, UploadAccepted.of(added))
    upload = await read_limited(file, settings)
    access = None
    if access_groups is not None or access_principals is not None:
        access = AccessList.parse(access_groups, access_principals)
    meta = DocumentMetadata(title=title, tags=tags, author=author, path=path or None, access=access)
    outcome = await service.upload(principal.tenant_id, upload, meta)
    return _respond(outcome.status, response, UploadAccepted.of(outcome))


@router.put(
    "/{document_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Upload a new version",
    responses={
        200: {"model": UploadAccepted, "description": "identical to the latest version; nothing stored"}
    },
)
async def upload_version(
    document_id: uuid.UUID,
    response: Response,
    service: WriterService,
    principal: UploadRateLimit,
    settings: SettingsDep,
    file: FilePart = None,
) -> UploadAccepted:
    upload = await read_limited(file, settings)
    outcome = await service.upload_version(principal.tenant_id, document_id, upload)
    return _respond(outcome.status, response, UploadAccepted.of(outcome))


@router.post(
    "/{document_id}/refresh",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Fetch a URL document again; a new version only if its content changed",
)
async def refresh_document(
    document_id: uuid.UUID, response: Response, service: WriterService, principal: UploadRateLimit
) -> UploadAccepted:
    outcome = await service.refresh(principal.tenant_id, document_id)
    return _respond(outcome.status, response, UploadAccepted.of(outcome))


@router.get("", response_model=DocumentListOut, summary="List documents")
async def list_documents(
    service: ReaderService,
    principal: ReaderPrincipal,
    tag: Annotated[PlainText | None, Query(max_length=64)] = None,
    q: Annotated[PlainText | None, Query(max_length=200, description="text in title or path")] = None,
    include_deleted: Annotated[
        bool, Query(description="editors only: list soft-deleted documents too")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> DocumentListOut:
    _check_include_deleted(principal, include_deleted)
    page = await service.list_documents(
        principal.tenant_id,
        tag=tag,
        text_query=q,
        include_deleted=include_deleted,
        limit=limit,
        offset=offset,
    )
    return DocumentListOut(
        items=[DocumentOut.of(d) for d in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/{document_id}", response_model=DocumentDetailOut, summary="A document and its current version")
async def get_document(
    document_id: uuid.UUID,
    service: ReaderService,
    principal: ReaderPrincipal,
    include_deleted: Annotated[bool, Query(description="editors only: a soft-deleted document too")] = False,
) -> DocumentDetailOut:
    _check_include_deleted(principal, include_deleted)
    detail = await service.detail(principal.tenant_id, document_id, include_deleted=include_deleted)
    return DocumentDetailOut.of_detail(detail)


@router.get("/{document_id}/versions", response_model=list[VersionOut], summary="Version history")
async def list_versions(
    document_id: uuid.UUID, service: ReaderService, principal: ReaderPrincipal
) -> list[VersionOut]:
    return [VersionOut.of_entry(entry) for entry in await service.versions(principal.tenant_id, document_id)]


@router.patch(
    "/{document_id}", response_model=DocumentOut, summary="Change title, tags, author or access list"
)
async def patch_document(
    document_id: uuid.UUID, body: DocumentPatch, service: WriterService, principal: EditorPrincipal
) -> DocumentOut:
    access = body.access.parsed() if body.access is not None else None
    meta = DocumentMetadata(title=body.title, tags=body.tags, author=body.author, access=access)
    return DocumentOut.of(await service.update_metadata(principal.tenant_id, document_id, meta))


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Soft-delete")
async def delete_document(
    document_id: uuid.UUID, service: WriterService, principal: EditorPrincipal
) -> Response:
    await service.soft_delete(principal.tenant_id, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{document_id}/restore", response_model=DocumentOut, summary="Undo a soft delete")
async def restore_document(
    document_id: uuid.UUID, service: WriterService, principal: EditorPrincipal
) -> DocumentOut:
    return DocumentOut.of(await service.restore(principal.tenant_id, document_id))
