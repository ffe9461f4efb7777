"""Documents: upload, versioning, soft delete and durable incremental ingestion into pgvector."""
