"""Declarative base with explicit constraint and index names (stable across migrations)."""

from __future__ import annotations

import os

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def embedding_dim_from_env() -> int:
    """The vector column's dimension. It is part of the schema, so it is read when the models
    are imported (and by the migration that creates the column) rather than per request."""
    return int(os.environ.get("EMBEDDING_DIM", "384"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
