"""Vector search benchmark: exact scan vs IVFFlat vs HNSW on synthetic clustered 384-d vectors.

For each N it builds a table in a *separate* database (``ragchat_bench``, dropped afterwards) on
the embedded PostgreSQL (or on BENCH_DATABASE_URL), computes exact top-10 neighbours for a set of
queries, then measures recall@10 against them and p50/p95/p99 latency and QPS (sequential, one
connection) for: exact scan, IVFFlat (lists = sqrt(N), probes 10) and HNSW (m=32,
ef_construction=64; ef_search 40/100/200), all with cosine distance.

    python -m scripts.benchmark_vector_search --sizes 10000,100000 --queries 200
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

DIM = 384
TOP_K = 10
BENCH_DB = "ragchat_bench"


@dataclass
class Row:
    n: int
    method: str
    build_s: float | None
    recall: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float


def clustered_vectors(n: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blobs around random unit centres, normalised: like embeddings of a topical corpus."""
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    points = centres[labels] + rng.normal(scale=0.35 / math.sqrt(DIM) * 4, size=(n, DIM)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


@contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=BENCH_DB)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


def load(conn: psycopg.Connection, vectors: np.ndarray) -> None:
    conn.execute("DROP TABLE IF EXISTS items")
    conn.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL)")
    with conn.cursor().copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "vector"])
        for index, vector in enumerate(vectors):
            copy.write_row((index, vector))
    conn.execute("ANALYZE items")
    conn.commit()


def timed_queries(
    conn: psycopg.Connection, queries: np.ndarray, setup: Callable[[psycopg.Connection], None]
) -> tuple[list[list[int]], list[float]]:
    results: list[list[int]] = []
    latencies: list[float] = []
    query = "SELECT id FROM items ORDER BY embedding <=> %s LIMIT %s"
    with conn.transaction():
        setup(conn)
        for vector in queries[:5]:  # warm-up
            conn.execute(query, (vector, TOP_K)).fetchall()
        for vector in queries:
            started = time.perf_counter()
            rows = conn.execute(query, (vector, TOP_K)).fetchall()
            latencies.append(time.perf_counter() - started)
            results.append([row[0] for row in rows])
    return results, latencies


def summarise(
    n: int,
    method: str,
    build_s: float | None,
    found: list[list[int]],
    truth: list[list[int]],
    lat: list[float],
) -> Row:
    recall = statistics.fmean(len(set(f) & set(t)) / TOP_K for f, t in zip(found, truth, strict=True))
    ms = sorted(x * 1000 for x in lat)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return Row(n, method, build_s, recall, pct(50), pct(95), pct(99), len(lat) / sum(lat))


def run_size(url: str, n: int, n_queries: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    data = clustered_vectors(n + n_queries, clusters=max(10, n // 500), rng=rng)
    vectors, queries = data[:n], data[n:]
    rows: list[Row] = []
    with psycopg.connect(url) as conn:
        register_vector(conn)
        print(f"[N={n}] loading vectors", file=sys.stderr, flush=True)
        load(conn, vectors)

        def exact(c: psycopg.Connection) -> None:
            c.execute("SET LOCAL enable_indexscan = off")
            c.execute("SET LOCAL enable_bitmapscan = off")

        print(f"[N={n}] exact scan", file=sys.stderr, flush=True)
        truth, lat = timed_queries(conn, queries, exact)
        rows.append(summarise(n, "exact scan", None, truth, truth, lat))

        lists = max(10, int(math.sqrt(n)))
        print(f"[N={n}] building IVFFlat (lists={lists})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            "CREATE INDEX items_ivf ON items USING ivfflat (embedding vector_cosine_ops) "
            f"WITH (lists = {lists})"
        )
        conn.commit()
        build = time.perf_counter() - started
        found, lat = timed_queries(conn, queries, lambda c: c.execute("SET LOCAL ivfflat.probes = 10"))
        rows.append(summarise(n, f"IVFFlat lists={lists} probes=10", build, found, truth, lat))
        conn.execute("DROP INDEX items_ivf")
        conn.commit()

        print(f"[N={n}] building HNSW (m=32, ef_construction=64)", file=sys.stderr, flush=True)
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {os.cpu_count() or 1}")
        conn.execute(
            "CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 32, ef_construction = 64)"
        )
        conn.commit()
        build = time.perf_counter() - started
        for ef in (40, 100, 200):
            found, lat = timed_queries(
                conn, queries, lambda c, ef=ef: c.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            )
            rows.append(summarise(n, f"HNSW ef_search={ef}", build if ef == 40 else None, found, truth, lat))
        conn.execute("DROP TABLE items")
        conn.commit()
    return rows


def print_table(rows: list[Row]) -> None:
    header = (
        f"| {'N':>7} | {'method':<30} | {'build s':>7} | {'recall@10':>9} | "
        f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'QPS':>7} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for r in rows:
        build = f"{r.build_s:7.1f}" if r.build_s is not None else " " * 7
        print(
            f"| {r.n:>7} | {r.method:<30} | {build} | {r.recall:>9.3f} | {r.p50_ms:>7.2f} | "
            f"{r.p95_ms:>7.2f} | {r.p99_ms:>7.2f} | {r.qps:>7.0f} |"
        )


@contextmanager
def admin_url(data_dir: Path) -> Iterator[str]:
    external = os.environ.get("BENCH_DATABASE_URL")
    if external:
        yield external.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    from app.embedded.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir, database="postgres")
    server.start()
    try:
        yield server.admin_conninfo()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated N values")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", ".data")))
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    rows: list[Row] = []
    with admin_url(args.data_dir) as admin, bench_database(admin) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for n in sizes:
            rows.extend(run_size(url, n, args.queries, args.seed))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
