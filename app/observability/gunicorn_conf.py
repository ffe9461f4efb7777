"""gunicorn configuration module (``gunicorn -c python:app.observability.gunicorn_conf``).

* gunicorn's own log lines (master and workers) go through the structlog pipeline, so they are
  JSON in production and masked like every other line.
* ``child_exit`` removes a dead worker's live gauges from the Prometheus multiprocess directory.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

logger_class = "app.observability.gunicorn_conf.StructlogGunicornLogger"


class StructlogGunicornLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from app.observability.logging import configure_logging
        from app.settings import Settings

        # Replaces the handlers gunicorn just installed with the shared pipeline.
        configure_logging(Settings())


def child_exit(server: Any, worker: Any) -> None:
    from app.observability.metrics.prometheus import mark_worker_dead

    mark_worker_dead(worker.pid)
