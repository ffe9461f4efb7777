"""A unit of work: one database session, committed by whoever opened it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession

UnitOfWork = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Opens one database session (an ``async_sessionmaker`` is one); the opener commits."""


async def end_read(db: AsyncSession) -> None:
    """End a transaction that only read, by committing it. To the database that is the same as a
    rollback, but psycopg forgets every statement it prepared on the connection at a ROLLBACK
    (in case the transaction changed what they refer to) and keeps them at a COMMIT. Ending the
    hot reads this way (a chat turn's retrieval, the API-key lookup) lets psycopg prepare their
    statements once per connection, so PostgreSQL stops parsing the hybrid search on every
    question (``tests/integration/chat/test_prepared_reads.py``); it still plans each execution
    for its own values (``app.rag.repository``)."""
    if db.in_transaction():
        await db.commit()


async def autocommit(db: AsyncSession) -> None:
    """Run each of ``db``'s statements as its own transaction, with no BEGIN before it and no
    COMMIT after: for a unit of work of one write, one round trip where a transaction takes three.
    Call it before the first statement; the connection goes back to the pool as it came."""
    await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
