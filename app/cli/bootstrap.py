"""The setup every command shares: settings, the servers in use, the schema, a database session.

Whatever an operator can get wrong here (a bad setting, an unreachable database, a server without
pgvector) is raised as a ``StartupError``, which ``main`` prints as one sentence with exit code 2.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache.corpus import CorpusChanges, track_corpus_changes
from app.db.engine import create_engine, create_session_factory
from app.db.redis import KeySpace, create_redis
from app.embedded.errors import StartupError
from app.embedded.postgres import EmbeddedPostgres
from app.embedded.services import EmbeddedServices
from app.settings import Settings

if TYPE_CHECKING:
    import argparse

    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

T = TypeVar("T")


class Servers(enum.Enum):
    """Which unconfigured servers a command starts (or joins, when ``make run`` already has)."""

    ALL = "all"
    """PostgreSQL and both Redis servers: the HTTP service and the tools that stand in for it."""
    POSTGRES = "postgres"
    """PostgreSQL only: the document commands start no Redis (a configured one hears of their
    document commits, for the answer cache)."""


class Migrations(enum.Enum):
    """When a command upgrades the schema before it runs."""

    ALWAYS = "always"
    AUTO = "auto"
    """As ``AUTO_MIGRATE`` says (by default: only the embedded database)."""
    AUTO_OR_EMBEDDED = "auto-or-embedded"
    """Also on an embedded database when ``AUTO_MIGRATE=false``: the document commands write to it
    at once, and nobody else would have migrated a database that only they started."""
    NEVER = "never"

    def applies_to(self, settings: Settings) -> bool:
        """Decided on the settings as given, before embedded servers fill in their URLs."""
        if self is Migrations.ALWAYS:
            return True
        if self is Migrations.AUTO:
            return settings.should_auto_migrate
        if self is Migrations.AUTO_OR_EMBEDDED:
            return settings.should_auto_migrate or settings.uses_embedded_postgres
        return False


@dataclass(frozen=True)
class Attached:
    """The servers a command runs against."""

    settings: Settings
    """The given settings with the URLs of the embedded servers filled in."""
    embedded_postgres: bool
    embedded_redis: bool

    @property
    def database_url(self) -> str:
        assert self.settings.database_url is not None
        return self.settings.database_url


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]).upper() or "settings"
        raise StartupError(f"invalid configuration: {where}: {first['msg']}") from exc


def migrate(database_url: str) -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.db.migrations import upgrade_to_head

    try:
        upgrade_to_head(database_url)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise StartupError(f"cannot reach PostgreSQL at DATABASE_URL: {reason}") from exc
    except (ProgrammingError, Exception) as exc:
        message = str(getattr(exc, "orig", exc))
        if 'extension "vector"' in message or "vector.control" in message:
            raise StartupError(
                "the PostgreSQL server has no pgvector extension; install pgvector 0.8+ "
                "or unset DATABASE_URL to use the embedded server"
            ) from exc
        raise


@contextlib.contextmanager
def attach(
    settings: Settings,
    *,
    servers: Servers = Servers.ALL,
    migrations: Migrations = Migrations.NEVER,
    export_env: bool = False,
) -> Iterator[Attached]:
    """Start (or join) the servers the settings leave unconfigured, migrate as asked, and stop
    the embedded servers on exit. ``export_env`` puts their URLs in the environment so that child
    processes (gunicorn workers, a shell) share them; it needs ``Servers.ALL``."""
    if servers is Servers.ALL:
        with EmbeddedServices(settings) as services:
            if export_env:
                services.export_env()
            attached = Attached(services.settings, services.postgres is not None, services.redis is not None)
            if migrations.applies_to(settings):
                migrate(attached.database_url)
            yield attached
        return
    if export_env:
        raise ValueError("export_env needs Servers.ALL")
    postgres = EmbeddedPostgres(settings.data_dir) if settings.uses_embedded_postgres else None
    try:
        resolved = settings
        if postgres is not None:
            resolved = settings.model_copy(update={"database_url": postgres.start()})
        attached = Attached(resolved, embedded_postgres=postgres is not None, embedded_redis=False)
        if migrations.applies_to(settings):
            migrate(attached.database_url)
        yield attached
    finally:
        if postgres is not None:
            postgres.stop()


@contextlib.asynccontextmanager
async def database_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on its own engine, disposed of on exit. With a Redis configured, its
    document commits tell the answer cache (``app.cache.corpus``); without one, the API sees them
    within ``STATE_TTL_MS``."""
    engine = create_engine(settings)
    cache_url = settings.cache_redis_url or settings.redis_url
    redis = create_redis(cache_url) if cache_url else None
    try:
        sessions = create_session_factory(engine)
        if redis is not None:
            track_corpus_changes(sessions, CorpusChanges(redis, KeySpace(settings.redis_key_prefix)))
        yield sessions
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, committed when it returns."""
    async with database_sessions(settings) as sessions, sessions() as session, session.begin():
        return await work(session)
