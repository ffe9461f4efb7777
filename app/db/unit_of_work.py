"""A unit of work: one database session, committed by whoever opened it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession

UnitOfWork = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Opens one database session (an ``async_sessionmaker`` is one); the opener commits."""
