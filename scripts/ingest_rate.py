"""Golden pages per second through the service whose code is first on ``PYTHONPATH``.

Run as a file (``python scripts/ingest_rate.py PAGES CONCURRENCY``) by ``scripts.benchmark_ingest``,
so that ``app``, ``scripts.eval`` and ``tests.support`` come from the tree being measured: this
checkout, or an earlier commit's worktree. It uploads the golden corpus's first PAGES pages over
the API, then runs the ingestion worker until the queue is empty (as ``make eval`` ingests),
on embedded PostgreSQL and Redis of its own, and prints one JSON line: pages, seconds, pages/s.
Only what both trees have is used here; the model is loaded and warmed before the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path


async def measure(pages: int, concurrency: int) -> dict[str, float]:
    from app.auth.principal import Role
    from app.settings import Settings
    from scripts.eval.golden import load as load_golden
    from scripts.eval.harness import UNLIMITED, ingest
    from tests.support.apps import running_app
    from tests.support.services import start_postgres, start_redis

    golden = load_golden("sqlite")
    golden = type(golden)(golden.name, golden.pages[:pages], golden.questions)
    with tempfile.TemporaryDirectory(prefix="ragchat-ingest-") as work:
        postgres, redis = start_postgres(), start_redis(Path(work) / "redis")
        try:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                redis_url=redis.url,
                log_level="ERROR",
                data_dir=Path(work) / "data",
                worker_concurrency=concurrency,
                database_url=postgres.create_database(f"ragchat_ingest_{secrets.token_hex(4)}"),
            ).model_copy(update=UNLIMITED)
            async with running_app(settings) as (app, client, make_caller):
                await app.state.resources.embedder.embed_documents(["warm the document session up"])
                caller = await make_caller(tenant="bench", role=Role.editor)
                start = time.perf_counter()
                await ingest(client, app.state.resources, caller, golden)
                seconds = time.perf_counter() - start
        finally:
            postgres.drop_databases()
            postgres.stop()
            redis.stop()
    return {"pages": pages, "seconds": seconds, "pages_per_s": pages / seconds}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(int(sys.argv[1]), int(sys.argv[2])))))
