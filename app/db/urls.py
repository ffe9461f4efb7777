"""Database URLs in the spellings each client wants."""

from __future__ import annotations


def libpq_url(database_url: str) -> str:
    """The libpq form (psql, psycopg, procrastinate) of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)
