"""Errors of the documents capability, each an ``AppError`` with its own stable ``code``: the ones
a client can cause with a document (4xx), and the one an ingestion worker meets and retries."""

from __future__ import annotations

import re
import uuid

from app.errors import AppError, ConflictError, NotFoundError


class DocumentInputError(AppError):
    """A problem of the document itself, found at upload (4xx) or by the ingestion job (which
    then fails for good, with the subclass's ``code`` and message: a retry cannot fix it)."""

    status = 422
    code = "invalid_document"
    title = "The document cannot be ingested"


class MissingFileError(AppError):
    status = 400
    code = "missing_file"
    title = "The request has no file part"


class InvalidFilenameError(AppError):
    status = 422
    code = "invalid_filename"
    title = "The file name cannot be stored"


class UploadTooLargeError(AppError):
    status = 413
    code = "upload_too_large"
    title = "The upload is larger than MAX_UPLOAD_MB"


class UnsupportedDocumentTypeError(DocumentInputError):
    status = 415
    code = "unsupported_document_type"
    title = "Unsupported document type"


class EncryptedDocumentError(DocumentInputError):
    status = 422
    code = "encrypted_document"
    title = "The document is encrypted"


class CorruptDocumentError(DocumentInputError):
    status = 422
    code = "corrupt_document"
    title = "The document cannot be read"


class EmptyDocumentError(DocumentInputError):
    status = 422
    code = "empty_document"
    title = "The document has no text"


class ArchiveBombError(DocumentInputError):
    status = 422
    code = "archive_bomb"
    title = "The document expands to an unsafe size"


class TooManyPagesError(DocumentInputError):
    status = 422
    code = "too_many_pages"
    title = "The document has more pages than DOC_MAX_PAGES"


class DocumentTooLargeError(DocumentInputError):
    status = 422
    code = "document_too_large"
    title = "The document has more text than DOC_MAX_CHARS"


class PageParseTimeoutError(DocumentInputError):
    status = 422
    code = "page_parse_timeout"
    title = "A page took longer than DOC_PAGE_PARSE_TIMEOUT_S to parse"


class UrlForbiddenError(DocumentInputError):
    status = 422
    code = "url_forbidden"
    title = "The URL may not be fetched"


class UrlUnreachableError(DocumentInputError):
    status = 422
    code = "url_unreachable"
    title = "The URL could not be fetched"


class UrlTooLargeError(DocumentInputError):
    status = 413
    code = "url_too_large"
    title = "The document at the URL is larger than MAX_UPLOAD_MB"


class UrlTimeoutError(DocumentInputError):
    status = 422
    code = "url_timeout"
    title = "Fetching the URL took longer than URL_FETCH_TIMEOUT_S"


class UnsupportedMediaTypeError(DocumentInputError):
    status = 415
    code = "unsupported_media_type"
    title = "The URL serves a type of content that cannot be ingested"


class NotUrlDocumentError(ConflictError):
    code = "not_a_url_document"
    title = "The document was not added from a URL"


class ImageTooLargeError(DocumentInputError):
    status = 422
    code = "image_too_large"
    title = "The image has more pixels than OCR_MAX_PIXELS"


class OcrUnavailableError(DocumentInputError):
    """A scanned page or an image needs OCR, and this installation has none (the default image
    leaves it out to stay small; the `ocr` image and ``make`` installs have it)."""

    status = 422
    code = "ocr_unavailable"
    title = "The document needs OCR, which this installation does not have"


class InvalidMetadataError(AppError):
    status = 422
    code = "invalid_document_metadata"
    title = "Invalid document metadata"


class DocumentNotFoundError(NotFoundError):
    code = "document_not_found"
    title = "Document not found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"
    title = "Ingestion job not found"


class DocumentDeletedError(ConflictError):
    code = "document_deleted"
    title = "The document is deleted"


DOCUMENT_INPUT_ERRORS: tuple[type[DocumentInputError], ...] = (
    UnsupportedDocumentTypeError,
    EncryptedDocumentError,
    CorruptDocumentError,
    EmptyDocumentError,
    ArchiveBombError,
    TooManyPagesError,
    DocumentTooLargeError,
    PageParseTimeoutError,
    UrlForbiddenError,
    UrlUnreachableError,
    UrlTooLargeError,
    UrlTimeoutError,
    UnsupportedMediaTypeError,
    ImageTooLargeError,
    OcrUnavailableError,
)


class ConcurrentChangeError(ConflictError):
    """The document's current chunks changed while an ingestion job embedded. Only a worker meets
    it (the job is retried, and the retry recomputes); no client request can cause it."""

    code = "concurrent_document_change"
    title = "The document changed during ingestion"


# --- job errors as clients see them ----------------------------------------------------------

WORKER_STOPPED = "worker_stopped"
SUPERSEDED = "superseded"
INGESTION_ERROR = "ingestion_error"

# Codes whose stored ``error`` is a message written for people (the document's problem, or the
# job's fate); any other code's stored text may be an internal failure and is never shown.
_READABLE_JOB_ERRORS: dict[str, str] = {
    **{error.code: error.title for error in DOCUMENT_INPUT_ERRORS},
    SUPERSEDED: "A newer version of the document replaced this one",
    WORKER_STOPPED: "The worker processing this document stopped",
}
# Signs of internals in a stored message (rows written before messages were cleaned up, or a
# message that quotes a library): exception class names, tracebacks, file paths, SQL.
_INTERNALS = re.compile(
    r"Traceback|File \"|\b[A-Za-z_]\w*(?:Error|Exception|Warning)\b|(?:^|[\s(\"'])/\w+/"
    r"|\b(?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|\bpsycopg\b|\bsqlalchemy\b",
)


def generic_job_error(job_id: uuid.UUID) -> str:
    return f"ingestion failed; quote the job id {job_id} when reporting it"


def public_job_error(job_id: uuid.UUID, code: str | None, error: str | None) -> str | None:
    """The job's ``error`` as an API client may see it: a known problem's own readable message
    (its title if the stored text shows internals), anything else the generic message with the
    job id. The raw text of unexpected failures goes only to the logs."""
    if error is None and code is None:
        return None
    if code in _READABLE_JOB_ERRORS:
        if error and not _INTERNALS.search(error):
            return error
        return _READABLE_JOB_ERRORS[code]
    return generic_job_error(job_id)
