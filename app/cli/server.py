"""``serve``: gunicorn with uvicorn workers, on the servers in use (embedded ones if no URLs)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.bootstrap import bootstrap_dev_admin, dev_key_path
from app.cli.bootstrap import Migrations, attach, in_transaction, load_settings
from app.embedded.errors import StartupError
from app.observability.serving import GUNICORN_CONFIG, worker_environment
from app.settings import Settings

if TYPE_CHECKING:
    from app.cli.bootstrap import Subcommands


def add_serve_command(commands: Subcommands) -> None:
    serve = commands.add_parser("serve", help="start the HTTP server (embedded services if no URLs)")
    serve.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WEB_CONCURRENCY or 1)")
    serve.set_defaults(handler=cmd_serve)


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pass --port"
            ) from exc


def _forward_signals(child: subprocess.Popen[bytes]) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, _: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    return handler


def _gunicorn_command(host: str, port: int, workers: int, grace_s: float) -> list[str]:
    """``grace_s`` (SHUTDOWN_GRACE_S): how long a stopping worker has before gunicorn SIGKILLs it;
    the worker class ends its streams and requests within it (``app.observability.draining``)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "app.asgi:app",
        "--worker-class",
        "app.observability.gunicorn_worker.DrainingUvicornWorker",
        "--workers",
        str(workers),
        "--bind",
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "--graceful-timeout",
        f"{grace_s:g}",
        "--timeout",
        "120",
        "--control-socket",
        os.path.join(tempfile.gettempdir(), f"ragchat-gunicorn-{os.getpid()}.ctl"),
        "--config",
        GUNICORN_CONFIG,
    ]


def _check_local_models(settings: Settings) -> None:
    """A local model the settings name but that cannot run (no such directory, neither layout,
    another dimension, torch missing, RERANKER without a model) is one sentence here, not a
    traceback in every worker. Nothing is loaded."""
    from app.rag.embeddings import EmbeddingError, create_embedder
    from app.rag.rerank import RerankerError, build_reranker

    try:
        if settings.embedding_provider == "local" or settings.embedding_model_path is not None:
            create_embedder(settings)
        build_reranker(settings)
    except (EmbeddingError, RerankerError) as exc:
        raise StartupError(str(exc)) from exc


def check_read_replicas(settings: Settings) -> None:
    """Each of DATABASE_REPLICA_URLS reachable and a standby, or one sentence (exit status 2)."""
    from app.db.replicas import ReplicaError, target_name, verify_replica

    async def verify_all() -> None:
        for index, url in enumerate(settings.database_replica_urls, start=1):
            await verify_replica(url, target_name(url, index))

    try:
        asyncio.run(verify_all())
    except ReplicaError as exc:
        raise StartupError(str(exc)) from exc


def check_sentinels(settings: Settings) -> None:
    """REDIS_URL / CACHE_REDIS_URL as ``redis+sentinel://``: sentinels reachable and the master
    known to them, or one sentence (exit status 2)."""
    from app.db.redis import SentinelError, verify_sentinel

    async def verify_all() -> None:
        for url in {settings.redis_url, settings.cache_redis_url} - {None}:
            assert url is not None
            await verify_sentinel(url)

    try:
        asyncio.run(verify_all())
    except (SentinelError, ValueError) as exc:
        raise StartupError(str(exc)) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    _check_local_models(settings)
    host: str = args.host or settings.host
    port: int = args.port or settings.port
    workers: int = args.workers or settings.web_concurrency
    _ensure_port_free(host, port)
    with attach(settings, migrations=Migrations.AUTO, export_env=True) as attached:
        check_read_replicas(attached.settings)
        check_sentinels(attached.settings)
        if settings.uses_embedded_postgres and settings.debug:
            # Only the developer default (`make run` sets DEBUG=true): an image or any production
            # start never creates or prints an admin key; operators use `python -m app keys`.
            _bootstrap_dev_key(attached.settings)
        if settings.uses_embedded_postgres:
            # The embedded default runs an ingestion worker inside each server process.
            os.environ.setdefault("RUN_WORKER_IN_PROCESS", "true")
        command = _gunicorn_command(host, port, workers, settings.shutdown_grace_s)
        print(
            f"serving on http://{host}:{port} with {workers} worker(s)"
            + (" on embedded PostgreSQL" if attached.embedded_postgres else "")
            + (" and embedded Redis" if attached.embedded_redis else ""),
            file=sys.stderr,
            flush=True,
        )
        with worker_environment(settings):
            child = subprocess.Popen(command, env=os.environ.copy())
            forward = _forward_signals(child)
            signal.signal(signal.SIGTERM, forward)
            signal.signal(signal.SIGINT, forward)
            code = child.wait()
        # Ctrl-C reaches gunicorn directly; its orderly exit is not a failure.
        return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


def _bootstrap_dev_key(settings: Settings) -> None:
    async def work(session: AsyncSession) -> str | None:
        issued = await bootstrap_dev_admin(session, settings.data_dir)
        return issued.key if issued else None

    key = asyncio.run(in_transaction(settings, work))
    if key is not None:
        print(
            f"first start: created tenant 'dev' and its admin API key (shown once, also saved to "
            f"{dev_key_path(settings.data_dir)}):\n  {key}",
            file=sys.stderr,
            flush=True,
        )
