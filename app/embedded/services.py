"""Start whatever the settings leave unconfigured, and hand back settings that point at it."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from types import TracebackType

from app.embedded.postgres import EmbeddedPostgres
from app.embedded.redis import EmbeddedRedis
from app.settings import Settings

CACHE_MAXMEMORY_MB = 64


class EmbeddedServices(AbstractContextManager["EmbeddedServices"]):
    """Owns the embedded PostgreSQL and Redis servers of one process tree.

    ``settings`` after ``__enter__`` carries the URLs in use; ``export_env()`` puts them in the
    environment so that child processes (gunicorn workers, the job worker) share the servers.
    """

    def __init__(self, settings: Settings) -> None:
        self._original = settings
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.cache_redis: EmbeddedRedis | None = None

    def __enter__(self) -> EmbeddedServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        updates: dict[str, str] = {}
        data_dir = self._original.data_dir
        if self._original.uses_embedded_postgres:
            self.postgres = EmbeddedPostgres(data_dir)
            updates["database_url"] = self.postgres.start()
        if self._original.uses_embedded_redis:
            self.redis = EmbeddedRedis(data_dir, "redis")
            updates["redis_url"] = self.redis.start()
            if self._original.cache_redis_url is None:
                self.cache_redis = EmbeddedRedis(data_dir, "redis-cache", maxmemory_mb=CACHE_MAXMEMORY_MB)
                updates["cache_redis_url"] = self.cache_redis.start()
        self.settings = self._original.model_copy(update=updates)

    def stop(self) -> None:
        for server in (self.cache_redis, self.redis, self.postgres):
            if server is not None:
                server.stop()

    def export_env(self) -> None:
        for name in ("database_url", "redis_url", "cache_redis_url"):
            value = getattr(self.settings, name)
            if value is not None:
                os.environ[name.upper()] = value
