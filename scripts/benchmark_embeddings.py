"""Local embedding backends side by side: ONNX Runtime (its int8 graph, the default, and the wheel's
float32 products, EMBEDDING_ONNX_QUANTIZATION=weights) vs sentence-transformers on torch, same model
(all-MiniLM-L6-v2), same process, same inputs.

It measures what a user waits for: the time to embed one question (p50/p95 over ``--queries``
questions, one call each, the embedders taking turns so machine noise hits all alike; again with
the CPU caches flushed before each question, as a server's other work flushes them), and
ingestion throughput in chunks per second (the demo documents cut by the service's own chunker at
CHUNK_MAX_TOKENS, embedded in batches of EMBEDDING_BATCH_SIZE, best of ``--rounds``). It also
reports how closely the two agree (cosine of the two vectors of each text) and how long each takes
to load. Prints a markdown table.

Then the tuning rows (scripts/embedding_tuning.py): the ONNX backend before (ONNX Runtime's default
session) and after (sized threads that sleep when idle, concurrent questions batched), idle and
beside a busy process, and ingestion chunks/s on ``--golden-pages`` pages of the golden corpus.

    python -m scripts.benchmark_embeddings --queries 200 --chunks 256 --golden-pages 120
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.documents.chunking import chunk_text
from app.rag.embeddings import LocalEmbedder, OnnxEmbedder, TorchEmbedder
from app.rag.embeddings.bundled_graph import QUANTIZATIONS
from app.settings import Settings
from scripts.embedding_tuning import tuning_tables

SEED_DIR = Path(__file__).resolve().parents[1] / "app" / "documents" / "seed"
QUESTIONS = [
    "How do I upload a new version of a document?",
    "What happens when an ingestion worker dies in the middle of a job?",
    "Which endpoint lists my API keys?",
    "How are rate limits enforced across several servers?",
    "Where does the service keep its PostgreSQL data by default?",
    "How do I rotate an admin key?",
    "What does /readyz check?",
    "Can I pin a specific model per request?",
    "How is the answer cache invalidated when a document changes?",
    "Why did my chat answer come back degraded?",
]


@dataclass
class Result:
    backend: str
    model_name: str
    load_s: float
    latencies_ms: list[float]
    cold_latencies_ms: list[float]
    chunks_per_s: float


def corpus_chunks(count: int, settings: Settings) -> list[str]:
    pieces: list[str] = []
    for path in sorted(SEED_DIR.glob("*.md")):
        pieces += chunk_text(
            path.read_text(),
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
    return [pieces[i % len(pieces)] for i in range(count)]


def questions(count: int) -> list[str]:
    return [f"{QUESTIONS[i % len(QUESTIONS)]} ({i})" for i in range(count)]


def timed_load(embedder: LocalEmbedder) -> float:
    start = time.perf_counter()
    embedder.load()
    return time.perf_counter() - start


# Larger than this machine's caches: reading it before a question leaves the model's weights in
# memory only, as a server's other work between two questions does.
EVICTION_BYTES = 256 << 20


def query_latencies(
    embedders: list[LocalEmbedder], texts: list[str], *, cold: bool = False
) -> list[list[float]]:
    """Per embedder, ms per question (one per call); ``cold``: the CPU caches flushed before each."""
    sweep = np.ones(EVICTION_BYTES // 8) if cold else None
    for embedder in embedders:  # warm-up: first calls allocate buffers
        for text in texts[:10]:
            embedder.encode([text])
    latencies: list[list[float]] = [[] for _ in embedders]
    for index, text in enumerate(texts):
        order = list(enumerate(embedders))
        if index % 2:
            order.reverse()
        for slot, embedder in order:
            if sweep is not None:
                sweep.sum()
            start = time.perf_counter()
            embedder.encode([text])
            latencies[slot].append((time.perf_counter() - start) * 1000)
    return latencies


def throughput(embedder: LocalEmbedder, chunks: list[str], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.encode(chunks)
        best = max(best, len(chunks) / (time.perf_counter() - start))
    return best


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="questions embedded one at a time")
    parser.add_argument("--chunks", type=int, default=256, help="chunks per ingestion round")
    parser.add_argument("--rounds", type=int, default=3, help="ingestion rounds per backend (best counts)")
    parser.add_argument("--golden-pages", type=int, default=120, help="golden pages for ingestion chunks/s")
    parser.add_argument("--no-backends", action="store_true", help="only the ONNX tuning rows")
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    if not args.no_backends:
        backends(args, settings)
    print("\nONNX Runtime tuning, before (its default session) and after, in one process:\n")
    print(tuning_tables(settings, questions(args.queries), args.golden_pages))


def backends(args: argparse.Namespace, settings: Settings) -> None:
    size = settings.embedding_batch_size
    embedders: list[LocalEmbedder] = [
        OnnxEmbedder(settings.embedding_model, settings.embedding_dim, batch_size=size, quantization=kind)
        for kind in QUANTIZATIONS
    ]
    if importlib.util.find_spec("sentence_transformers") is not None:
        embedders.append(TorchEmbedder(settings.embedding_model, settings.embedding_dim, batch_size=size))
    else:
        print("torch backend not installed (requirements-local.txt): ONNX only\n")
    loads = [timed_load(embedder) for embedder in embedders]
    texts = questions(args.queries)
    chunks = corpus_chunks(args.chunks, settings)
    latencies = query_latencies(embedders, texts)
    cold = query_latencies(embedders, texts, cold=True)
    results = [
        Result(
            backend="onnx" if isinstance(embedder, OnnxEmbedder) else "torch",
            model_name=embedder.model_name,
            load_s=load,
            latencies_ms=latency,
            cold_latencies_ms=cold_latency,
            chunks_per_s=throughput(embedder, chunks, args.rounds),
        )
        for embedder, load, latency, cold_latency in zip(embedders, loads, latencies, cold, strict=True)
    ]

    print(
        f"{args.queries} questions one at a time; {len(chunks)} chunks of ≤ {settings.chunk_max_tokens} "
        f"tokens (mean {statistics.mean(len(c.split()) for c in chunks):.0f} words) in batches of {size}\n"
    )
    print(
        "| backend | stored model name | load s | query p50 ms | query p95 ms "
        "| query p50 ms, caches cold | ingestion chunks/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.backend} | `{r.model_name}` | {r.load_s:.2f} | {percentile(r.latencies_ms, 50):.1f} "
            f"| {percentile(r.latencies_ms, 95):.1f} | {percentile(r.cold_latencies_ms, 50):.1f} "
            f"| {r.chunks_per_s:.0f} |"
        )
    sample = texts + chunks[: min(len(chunks), 100)]
    vectors = [np.array(embedder.encode(sample)) for embedder in embedders]
    print(f"\nAgreement over {len(sample)} texts (cosine per text):")
    for first in range(len(embedders)):
        for second in range(first + 1, len(embedders)):
            cosines = (vectors[first] * vectors[second]).sum(axis=1)
            print(
                f"- `{results[first].model_name}` vs `{results[second].model_name}`: "
                f"min {cosines.min():.4f}, mean {cosines.mean():.4f}"
            )


if __name__ == "__main__":
    main()
