"""Filtered-recall benchmark of per-document access (issue 31): the app's own vector search
(``ChunkSearchRepository.nearest``: HNSW with pgvector's iterative index scan, the access filter
in the WHERE) for a caller whose groups open 1 % of the chunks, against the exact answer for that
caller, and beside the same search unrestricted (an admin).

It migrates a throwaway database (``ragchat_access_bench`` on the embedded PostgreSQL, or on
BENCH_DATABASE_URL; dropped afterwards) to the app's schema, loads N chunks of synthetic clustered
384-d vectors in documents of ``--chunks-per-document`` chunks, restricts every document to a group
and gives the measured caller's group ``--share`` of them (spread over the clusters), builds the
app's HNSW index, and reports recall@10 and p50/p95 latency per search.

    python -m scripts.benchmark_access --chunks 100000 --share 0.01 --queries 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrations import upgrade_to_head
from app.db.unit_of_work import end_read
from app.rag.query import RetrievalMode, RetrievalQuery
from app.rag.repository import EXACT_SCAN_MAX_ROWS, ChunkSearchRepository
from scripts.benchmark_vector_search import clustered_vectors

TOP_K = 10
BENCH_DB = "ragchat_access_bench"
OTHER = "g:bench-other"


def grant(share: float) -> str:
    return f"g:share-{share:g}"


@dataclass
class Row:
    search: str
    recall: float
    p50_ms: float
    p95_ms: float


@contextmanager
def database() -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, libpq conninfo) of a fresh database, dropped afterwards."""
    external = os.environ.get("BENCH_DATABASE_URL")
    server = None
    if external:
        admin = external.replace("postgresql+psycopg://", "postgresql://", 1)
    else:
        from app.embedded.postgres import EmbeddedPostgres

        server = EmbeddedPostgres(Path(os.environ.get("DATA_DIR", ".data")), database="postgres")
        server.start()
        admin = server.admin_conninfo()
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    conninfo = psycopg.conninfo.make_conninfo(admin, dbname=BENCH_DB)
    url = server.url(BENCH_DB) if server else external.rsplit("/", 1)[0] + f"/{BENCH_DB}"  # type: ignore[union-attr]
    try:
        yield url, conninfo
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)
        if server is not None:
            server.stop()


def load(conninfo: str, vectors: np.ndarray, per_document: int, shares: list[float]) -> uuid.UUID:
    """One tenant; documents of ``per_document`` chunks, each restricted to OTHER and, for every
    share s, every (1/s)-th document also to ``grant(s)``: that group opens s of the chunks."""
    tenant = uuid.uuid4()
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'bench', 'bench')", (tenant,))
        documents = [uuid.uuid4() for _ in range(len(vectors) // per_document)]
        columns = "id, tenant_id, title, current_version, access"
        with conn.cursor().copy(f"COPY documents ({columns}) FROM STDIN") as copy:
            for index, document in enumerate(documents):
                grants = [OTHER] + [grant(s) for s in shares if index % round(1 / s) == 0]
                copy.write_row((document, tenant, f"doc {index}", 1, grants))
        conn.execute("DROP INDEX ix_chunks_embedding_hnsw")  # built once, after the load
        columns = (
            "tenant_id, document_id, page, position, text, context, page_sha256, embedding, "
            "embedding_model, valid_from_version"
        )
        with conn.cursor().copy(f"COPY chunks ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(
                ["uuid", "uuid", "int4", "int4", "text", "text", "varchar", "vector", "varchar", "int4"]
            )
            for index, vector in enumerate(vectors):
                document = documents[index % len(documents)]  # a document's chunks span the clusters
                copy.write_row(
                    (tenant, document, 1, index, f"passage {index}", "", "0" * 64, vector, "bench", 1)
                )
        conn.commit()
        print(f"building HNSW over {len(vectors)} chunks", file=sys.stderr, flush=True)
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {os.cpu_count() or 1}")
        conn.execute(
            "CREATE INDEX ix_chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 32, ef_construction = 64)"
        )
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # the steady state autovacuum keeps: visibility map set
    return tenant


def exact(conninfo: str, tenant: uuid.UUID, queries: np.ndarray, grants: list[str] | None) -> list[list[int]]:
    """The true top 10 for a caller holding ``grants`` (None: unrestricted), by a full scan."""
    where = "" if grants is None else "AND d.access && %(grants)s::varchar[]"
    statement = (
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
        f"WHERE c.tenant_id = %(tenant)s {where} ORDER BY c.embedding <=> %(vector)s LIMIT {TOP_K}"
    )
    truth = []
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        for vector in queries:
            rows = conn.execute(statement, {"tenant": tenant, "grants": grants, "vector": vector}).fetchall()
            truth.append([row[0] for row in rows])
    return truth


async def app_search(
    url: str, tenant: uuid.UUID, queries: np.ndarray, access: tuple[str, ...] | None, ef_search: int
) -> tuple[list[list[int]], list[float]]:
    engine = create_async_engine(url)
    found, latencies = [], []
    try:
        for number, vector in enumerate(queries):
            query = RetrievalQuery(
                tenant_id=tenant,
                text="",
                vector=[float(x) for x in vector],
                top_k=TOP_K,
                mode=RetrievalMode.vector,
                ef_search=ef_search,
                access=access,
            )
            async with engine.connect() as connection:
                from sqlalchemy.ext.asyncio import AsyncSession

                async with AsyncSession(bind=connection) as session:
                    started = time.perf_counter()
                    chunks = await ChunkSearchRepository(session).nearest(query, TOP_K)
                    elapsed = time.perf_counter() - started
                    await end_read(session)  # as the app ends its reads: the search stays prepared
            if number >= 5:  # the first few warm the connection and the index pages
                latencies.append(elapsed)
            found.append([chunk.chunk_id for chunk in chunks])
    finally:
        await engine.dispose()
    return found, latencies


def row(name: str, found: list[list[int]], truth: list[list[int]], latencies: list[float]) -> Row:
    recall = statistics.fmean(
        len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)
    )
    ms = sorted(x * 1000 for x in latencies)
    return Row(name, recall, ms[len(ms) // 2], ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument(
        "--shares", default="0.01,0.1,1", help="shares of the chunks a measured caller's group opens"
    )
    parser.add_argument("--chunks-per-document", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=100, help="as HNSW_EF_SEARCH")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    data = clustered_vectors(args.chunks + args.queries, clusters=max(10, args.chunks // 500), rng=rng)
    vectors, queries = data[: args.chunks], data[args.chunks :]
    with database() as (url, conninfo):
        upgrade_to_head(url)
        with psycopg.connect(conninfo) as conn:
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        shares = [float(part) for part in args.shares.split(",") if part.strip()]
        tenant = load(conninfo, vectors, args.chunks_per_document, shares)
        rows = []
        searches: list[tuple[str, list[str] | None]] = [("unrestricted (admin)", None)]
        searches += [(f"access filter keeps {s:.0%}", [grant(s)]) for s in shares]
        for name, grants in searches:
            print(f"exact and app search: {name}", file=sys.stderr, flush=True)
            truth = exact(conninfo, tenant, queries, grants)
            access = None if grants is None else (grants[0],)
            found, latencies = asyncio.run(app_search(url, tenant, queries, access, args.ef_search))
            rows.append(row(name, found, truth, latencies))
    print(
        f"pgvector {version[0] if version else '?'}, {args.chunks} chunks, ef_search {args.ef_search}, "
        f"{args.queries} queries, EXACT_SCAN_MAX_ROWS {EXACT_SCAN_MAX_ROWS}"
    )
    print("| search | recall@10 vs exact | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.search} | {r.recall:.3f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
