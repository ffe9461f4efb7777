"""structlog configuration: JSON lines in production, a readable console in development.

Standard-library loggers (uvicorn, gunicorn, sqlalchemy, alembic) are routed through the same
processor chain so every line has the same shape, carries the request's correlation ids and is
masked (API keys, bearer tokens, JWTs, passwords, e-mail addresses) before it is written.

With ``LOG_TO_FILE`` set to a directory, every process also writes JSON lines to
``ragchat-<YYYYMMDD>-<pid>.log`` there (one file per gunicorn worker, so rotation never races),
rotated by size and gzip-compressed (``….log.1.gz``).
"""

from __future__ import annotations

import gzip
import json
import logging
import logging.handlers
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic_core
import structlog

from app.observability.context import current_request_id, current_trace_id
from app.observability.masking import mask_value
from app.settings import Settings

LOG_FILE_PREFIX = "ragchat"
ROUTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
)


def _add_correlation_ids(
    _: object, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    request_id = current_request_id()
    trace_id = current_trace_id()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def _add_process_id(_: object, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    # Several gunicorn workers share one stream: the pid tells their lines apart.
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def mask_event(_: object, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """structlog processor: the message and every field, masked (keys such as ``password`` or
    ``authorization`` lose their value whole)."""
    masked = mask_value(dict(event_dict))
    assert isinstance(masked, dict)
    return masked


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None, **kw: Any) -> str:
    """JSON by pydantic-core's serializer, in about a quarter of ``json.dumps``'s time on an access
    line; what it cannot serialize goes through ``json.dumps`` (structlog's fallback: ``repr``)."""
    try:
        return pydantic_core.to_json(obj, fallback=default).decode()
    except pydantic_core.PydanticSerializationError:
        return json.dumps(obj, default=default, **kw)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as plain, gzip.open(dest, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    os.remove(source)


def log_file_path(directory: Path, *, pid: int | None = None, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return directory / f"{LOG_FILE_PREFIX}-{stamp}-{pid or os.getpid()}.log"


def rotating_file_handler(settings: Settings) -> logging.handlers.RotatingFileHandler:
    assert settings.log_to_file is not None
    settings.log_to_file.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_file_path(settings.log_to_file),
        maxBytes=settings.log_file_max_mb * 1024 * 1024,
        backupCount=settings.log_file_backups,
        encoding="utf-8",
    )
    handler.namer = lambda name: name + ".gz"
    handler.rotator = _gzip_rotator
    return handler


def _formatter(
    shared: list[structlog.typing.Processor], renderer: structlog.typing.Processor
) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_event,
            renderer,
        ],
    )


def configure_logging(settings: Settings) -> None:
    """Idempotent: a second call (another app in the same process, a gunicorn worker after
    fork) replaces the handlers this function installed before and closes them."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation_ids,
        _add_process_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    json_renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    renderer: structlog.typing.Processor = (
        json_renderer if settings.json_logs else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handlers: list[logging.Handler] = [_StderrHandler()]
    handlers[0].setFormatter(_formatter(shared, renderer))
    if settings.log_to_file is not None:
        file_handler = rotating_file_handler(settings)
        file_handler.setFormatter(_formatter(shared, json_renderer))
        handlers.append(file_handler)

    root = logging.getLogger()
    for old in root.handlers:
        if getattr(old, "_ragchat", False):
            old.close()
    for handler in handlers:
        handler._ragchat = True  # type: ignore[attr-defined]
    root.handlers = handlers
    root.setLevel(settings.log_level)
    for name in ROUTED_LOGGERS:
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
        named.setLevel(logging.NOTSET)
    # logging.config.fileConfig (alembic's env.py) disables every logger it does not name.
    for existing in list(logging.root.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger):
            existing.disabled = False
    # One access line per request comes from our middleware; uvicorn's own would duplicate it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
