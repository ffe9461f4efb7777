"""What the ``serve`` launcher prepares for gunicorn: the config module and, with the Prometheus
backend, a fresh multiprocess directory exported before any worker starts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.settings import Settings

GUNICORN_CONFIG = "python:app.observability.gunicorn_conf"


@contextmanager
def worker_environment(settings: Settings) -> Iterator[None]:
    from app.observability.metrics.factory import resolve_backend_name

    if resolve_backend_name(settings) != "prometheus":
        yield
        return
    from app.observability.metrics.prometheus import multiprocess_directory

    with multiprocess_directory():
        yield
