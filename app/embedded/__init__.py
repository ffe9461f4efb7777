"""Embedded PostgreSQL+pgvector and Redis servers for the zero-configuration default."""
