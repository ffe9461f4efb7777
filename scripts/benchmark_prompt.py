"""Fitting the prompt of an uncached answer: the CPU of ``build_prompt`` for ``top_k`` retrieved
passages, with each passage's text tokenized per request (chunks stored before revision 0013, or
``text_tokens`` None) against ingestion's stored counts, in one process on the same inputs.

The passages are the demo documents cut by the service's own chunker (CHUNK_MAX_TOKENS, WordPiece
counts). "counted, miss" gives every passage a text the token counter's cache has not seen (a
passage new to this worker); "counted, hit" repeats texts it has (a popular passage). It also
times what ``_fit_prompt`` pays on the event loop to fit inline or in a worker thread
(``anyio.to_thread``). Prints a markdown table: median microseconds per prompt.

    python -m scripts.benchmark_prompt --prompts 300
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from app.documents.chunking import chunk_pages
from app.documents.parsing import Page
from app.rag.prompt import build_prompt, passage_text_tokens
from app.rag.query import RetrievedChunk
from app.rag.tokens import WordPieceTokenCounter
from app.settings import Settings

SEED_DIR = Path(__file__).resolve().parents[1] / "app" / "documents" / "seed"
BUDGET = 6000  # room for every passage: the cost of fitting them all


def _passages(counter: WordPieceTokenCounter) -> list[str]:
    settings = Settings()
    pages = [Page(number=1, text=path.read_text()) for path in sorted(SEED_DIR.glob("*.md"))]
    drafts = chunk_pages(
        pages,
        max_tokens=settings.chunk_max_tokens,
        overlap_tokens=settings.chunk_overlap_tokens,
        count=counter.count_uncached,
    )
    return [draft.text for draft in drafts]


def _chunks(texts: list[str], start: int, top_k: int, run: int) -> list[RetrievedChunk]:
    picked = [
        texts[(start + n) % len(texts)] + (f" (run {run}.{n})" if run >= 0 else "") for n in range(top_k)
    ]
    return [
        RetrievedChunk(n, uuid.UUID(int=n), 1, f"Guide {n}", n, text, (), 1.0, text_tokens=None)
        for n, text in enumerate(picked, start=1)
    ]


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _time(build: Callable[[int], object], prompts: int) -> float:
    samples = []
    for n in range(prompts):
        started = time.perf_counter()
        build(n)
        samples.append(time.perf_counter() - started)
    return _median_us(samples)


def _fit(counter: WordPieceTokenCounter, chunks: list[RetrievedChunk], n: int) -> object:
    return build_prompt(f"question {n}?", [], chunks, budget_tokens=BUDGET, counter=counter)


def measure(top_k: int, prompts: int, texts: list[str], counter: WordPieceTokenCounter) -> dict[str, float]:
    # Inputs are made before timing: what is timed is fitting alone.
    miss = [_chunks(texts, n, top_k, run=n) for n in range(prompts)]
    hit = [_chunks(texts, n % 8, top_k, run=-1) for n in range(prompts)]
    stored = [
        [replace(c, text_tokens=passage_text_tokens(c.text, counter.count_uncached)) for c in chunks]
        for chunks in miss
    ]
    for chunks in hit[:8]:
        _fit(counter, chunks, 0)  # warm the counter's cache with the popular passages
    return {
        "counted, miss": _time(lambda n: _fit(counter, miss[n], n), prompts),
        "counted, hit": _time(lambda n: _fit(counter, hit[n], n), prompts),
        "stored": _time(lambda n: _fit(counter, stored[n], n), prompts),
    }


async def _loop_cost(
    top_k: int, prompts: int, texts: list[str], counter: WordPieceTokenCounter
) -> dict[str, float]:
    """Event-loop wall time per prompt fitted from stored counts: inline vs a worker thread."""
    stored = [
        [replace(c, text_tokens=passage_text_tokens(c.text, counter.count_uncached)) for c in chunks]
        for chunks in (_chunks(texts, n, top_k, run=n) for n in range(prompts))
    ]
    inline, threaded = [], []
    for n in range(prompts):
        started = time.perf_counter()
        _fit(counter, stored[n], n)
        inline.append(time.perf_counter() - started)
        started = time.perf_counter()
        await anyio.to_thread.run_sync(partial(_fit, counter, stored[n], n))
        threaded.append(time.perf_counter() - started)
    return {"inline": _median_us(inline), "thread": _median_us(threaded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--top-k", default="5,10,20")
    args = parser.parse_args()
    counter = WordPieceTokenCounter()
    texts = _passages(counter)
    print(f"{len(texts)} passages from {SEED_DIR.name}/, {args.prompts} prompts per cell, median µs\n")
    print("| top_k | counted, miss | counted, hit | stored | stored, inline (loop) | stored, thread (loop) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for top_k in (int(k) for k in args.top_k.split(",")):
        cells = measure(top_k, args.prompts, texts, counter)
        loop = asyncio.run(_loop_cost(top_k, args.prompts, texts, counter))
        print(
            f"| {top_k} | {cells['counted, miss']:.0f} | {cells['counted, hit']:.0f} | {cells['stored']:.0f} "
            f"| {loop['inline']:.0f} | {loop['thread']:.0f} |"
        )


if __name__ == "__main__":
    main()
