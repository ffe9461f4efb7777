"""Errors a client can cause with a document; each has its own stable ``code``."""

from __future__ import annotations

from app.errors import AppError, ConflictError, NotFoundError


class MissingFileError(AppError):
    status = 400
    code = "missing_file"
    title = "The request has no file part"


class UploadTooLargeError(AppError):
    status = 413
    code = "upload_too_large"
    title = "The upload is larger than MAX_UPLOAD_MB"


class UnsupportedDocumentTypeError(AppError):
    status = 415
    code = "unsupported_document_type"
    title = "Unsupported document type"


class EncryptedDocumentError(AppError):
    status = 422
    code = "encrypted_document"
    title = "The document is encrypted"


class CorruptDocumentError(AppError):
    status = 422
    code = "corrupt_document"
    title = "The document cannot be read"


class EmptyDocumentError(AppError):
    status = 422
    code = "empty_document"
    title = "The document has no text"


class ArchiveBombError(AppError):
    status = 422
    code = "archive_bomb"
    title = "The document expands to an unsafe size"


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


DocumentInputError = (
    UnsupportedDocumentTypeError,
    EncryptedDocumentError,
    CorruptDocumentError,
    EmptyDocumentError,
    ArchiveBombError,
)
