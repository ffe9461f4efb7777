"""`make benchmark-chat`: p50/p95/p99 latency of /api/v1/chat, uncached and cached.

Starts everything locally: the fake LLM server (OpenAI wire protocol) answering after a fixed
latency, and the real service (`python -m app serve`, embedded PostgreSQL + Redis in a temporary
DATA_DIR, seeded with the demo documents). Uncached requests each ask a different question (query
embedding + hybrid retrieval + prompt + provider call); cached requests repeat one question.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from scripts.benchmark_load import seed
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import start_server

TOPICS = [
    "backups",
    "rate limits",
    "API keys",
    "ingestion jobs",
    "the LLM router",
    "readiness",
    "metrics",
    "soft delete",
    "document versions",
    "the answer cache",
    "cooldowns",
    "migrations",
    "streaming",
    "sessions",
    "embeddings",
    "tenants",
    "uploads",
    "HNSW",
    "workers",
    "logging",
]
FORMS = [
    "How does {} work?",
    "What should I know about {}?",
    "Explain {} briefly.",
    "Where are {} described?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(name: str, samples: list[float]) -> str:
    return (
        f"| {name} | {len(samples)} | {percentile(samples, 50):.1f} | {percentile(samples, 95):.1f} "
        f"| {percentile(samples, 99):.1f} | {statistics.fmean(samples):.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=80, help="requests per scenario")
    parser.add_argument("--provider-latency", type=float, default=0.05, help="fake provider latency, s")
    args = parser.parse_args(argv)

    fake = FakeLLMServer().start()
    fake.configure("openai", text="Here is what the documents say [1].", latency_s=args.provider_latency)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as data_dir:
        env = {
            "DATA_DIR": data_dir,
            "LLM_PROVIDERS": "openai",
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": fake.openai_base_url,
            "RATE_LIMIT_PER_PRINCIPAL": "100000/minute",
            "RATE_LIMIT_PER_IP": "100000/minute",
            "LOG_LEVEL": "WARNING",
        }
        for unset in ("DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL"):
            env[unset] = ""
        print("seeding the demo documents …", file=sys.stderr)
        key = seed(env)
        server = start_server(
            env, Path(data_dir) / "server.log", workers=1, ready_path="/readyz", timeout=180
        )
        try:
            headers = {"X-API-Key": key}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
                client.post("/api/v1/chat", json={"question": "warm-up: what is this service?"})
                questions = [form.format(topic) for topic in TOPICS for form in FORMS]
                uncached: list[float] = []
                for n in range(args.requests):
                    question = f"{questions[n % len(questions)]} ({n})"
                    started = time.perf_counter()
                    body = client.post("/api/v1/chat", json={"question": question}).json()
                    uncached.append((time.perf_counter() - started) * 1000)
                    assert body["cached"] is False, body
                client.post("/api/v1/chat", json={"question": "How are streaming answers sent?"})
                cached: list[float] = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    body = client.post(
                        "/api/v1/chat", json={"question": "How are streaming answers sent?"}
                    ).json()
                    cached.append((time.perf_counter() - started) * 1000)
                    assert body["cached"] is True, body
        finally:
            server.stop()
            fake.stop()
    print(
        f"\n/api/v1/chat, 1 worker, fake provider latency {args.provider_latency * 1000:.0f} ms, sequential\n"
    )
    print("| scenario | n | p50 ms | p95 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("uncached", uncached))
    print(row("cached", cached))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
