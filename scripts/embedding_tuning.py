"""The rows of ``make benchmark-embeddings`` about how the ONNX model uses the CPU, each before
(ONNX Runtime's default session: one thread per core that spins when idle, one session for
everything) and after (questions on ``EMBEDDING_QUERY_THREADS``, documents on every core, idle
threads asleep, concurrent questions batched): query latency with the machine as it is and beside a
busy process, concurrent questions batched or one per call, and ingestion chunks/s on the golden
corpus (eval/sqlite) chunked as ingestion chunks it. Used by scripts/benchmark_embeddings.py."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from app.documents.chunking import chunk_pages
from app.documents.parsing.model import Page
from app.rag.embeddings import OnnxEmbedder, length_sorted_batches
from app.rag.embeddings.onnx_backend import _OnnxModel, _pool
from app.rag.local_models import InferenceLock, OnnxSession
from app.rag.tokens import WordPieceTokenCounter
from app.settings import Settings
from scripts.eval.golden import load as load_golden


class OrtDefaults(OnnxEmbedder):
    """The embedder as it was: one session with ONNX Runtime's default options for everything,
    every question its own call."""

    def _load(self) -> _OnnxModel:
        import onnxruntime

        tuned = super()._load()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        raw = onnxruntime.InferenceSession(
            str(self._recipe.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        session = OnnxSession(raw, frozenset(i.name for i in raw.get_inputs()))
        return _OnnxModel(tuned.tokenizer, tuned.padding, session, session, tuned.output)

    def _run(self, model: _OnnxModel, session: OnnxSession, texts: Sequence[str]) -> list[list[float]]:
        """As it was: batches of ``batch_size`` by character length, each padded to its longest."""
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        for batch in length_sorted_batches(texts, self._batch_size):
            encodings = model.tokenizer.encode_batch([texts[i] for i in batch])
            longest = max(len(e.ids) for e in encodings)
            for encoding in encodings:
                encoding.pad(longest, **model.padding)
            output = session.run(encodings)[model.output]
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            pooled = _pool(output, mask, self._recipe.pooling)
            vectors[batch] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        rows: list[list[float]] = vectors.tolist()
        return rows


def pair(settings: Settings) -> tuple[OnnxEmbedder, OnnxEmbedder]:
    """(before, after), loaded."""
    before = OrtDefaults(
        settings.embedding_model, settings.embedding_dim, batch_size=settings.embedding_batch_size
    )
    after = OnnxEmbedder(
        settings.embedding_model,
        settings.embedding_dim,
        batch_size=settings.embedding_batch_size,
        query_threads=settings.embedding_query_threads,
        document_threads=settings.embedding_document_threads,
    )
    before.load()
    after.load()
    return before, after


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """One process spinning on a core beside the measurement (a worker's PostgreSQL, its loop)."""
    if not on:
        yield
        return
    process = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join()


def query_latencies(embedders: list[OnnxEmbedder], texts: list[str]) -> list[list[float]]:
    """One question per call, the embedders alternating, milliseconds each."""
    for embedder in embedders:
        for text in texts[:10]:
            embedder.encode_queries([text])
    latencies: list[list[float]] = [[] for _ in embedders]
    for index, text in enumerate(texts):
        order = list(enumerate(embedders))
        if index % 2:
            order.reverse()
        for slot, embedder in order:
            start = time.perf_counter()
            embedder.encode_queries([text])
            latencies[slot].append((time.perf_counter() - start) * 1000)
    return latencies


async def _concurrent(
    embedder: OnnxEmbedder, texts: list[str], askers: int, batched: bool
) -> tuple[float, list[float]]:
    """``askers`` callers each asking their share of ``texts`` one after another: questions/s, and
    each question's wait in ms (lock, batching and model). Not ``batched``: each question its own
    call under the inference lock, as ``embed_query`` was."""
    waits: list[float] = []
    lock = InferenceLock()

    async def alone(text: str) -> list[float]:
        async with lock.current():
            return (await asyncio.to_thread(embedder.encode_queries, [text]))[0]

    async def asker(mine: list[str]) -> None:
        for text in mine:
            start = time.perf_counter()
            await (embedder.embed_query(text) if batched else alone(text))
            waits.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(asker(texts[i::askers]) for i in range(askers)))
    return len(texts) / (time.perf_counter() - start), waits


def concurrent(
    embedder: OnnxEmbedder, texts: list[str], askers: int, *, batched: bool
) -> tuple[float, list[float]]:
    return asyncio.run(_concurrent(embedder, texts, askers, batched))


def golden_documents(settings: Settings, pages: int) -> list[list[str]]:
    """The embedding inputs of the first ``pages`` golden pages, one list per document, cut as
    ingestion cuts them (model tokens, context line)."""
    counter = WordPieceTokenCounter(settings.embedding_tokenizer_path)
    documents = []
    for page in load_golden("sqlite").pages[:pages]:
        drafts = chunk_pages(
            [Page(1, page.text)],
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            count=counter.count_uncached,
            title=page.title,
        )
        documents.append([draft.embedding_input for draft in drafts])
    return documents


def ingestion_rate(embedder: OnnxEmbedder, documents: list[list[str]], batch: int) -> float:
    """Chunks/s, each document's chunks embedded as its ingestion job embeds them: in batches of
    ``batch``, in order (before) or longest first (the embedder sorts within each call)."""
    chunks = sum(len(d) for d in documents)
    start = time.perf_counter()
    for document in documents:
        for first in range(0, len(document), batch):
            embedder.encode(document[first : first + batch])
    return chunks / (time.perf_counter() - start)


@dataclass
class Rows:
    lines: list[str]

    def add(self, *cells: object) -> None:
        self.lines.append("| " + " | ".join(str(c) for c in cells) + " |")


def p(values: list[float], q: float) -> str:
    return f"{float(np.percentile(values, q)):.1f}"


def tuning_tables(settings: Settings, questions: list[str], pages: int) -> str:
    before, after = pair(settings)
    rows = Rows(["| measurement | before (ORT defaults) | after | |", "|---|---:|---:|---|"])
    for loaded in (False, True):
        with busy_process(loaded):
            old, new = query_latencies([before, after], questions)
        beside = "beside a busy process" if loaded else "machine as it is"
        rows.add(f"one question, p50 ms, {beside}", p(old, 50), p(new, 50), f"{len(questions)} questions")
        rows.add(f"one question, p95 ms, {beside}", p(old, 95), p(new, 95), "")
    old_rate, old_waits = concurrent(before, questions, 16, batched=False)
    alone_rate, alone_waits = concurrent(after, questions, 16, batched=False)
    new_rate, new_waits = concurrent(after, questions, 16, batched=True)
    rows.add(
        "16 concurrent askers: questions/s",
        f"{old_rate:.0f}",
        f"{new_rate:.0f}",
        f"after, one per call: {alone_rate:.0f}",
    )
    rows.add(
        "16 concurrent askers: p50 wait ms",
        p(old_waits, 50),
        p(new_waits, 50),
        f"after, one per call: {p(alone_waits, 50)}",
    )
    documents = golden_documents(settings, pages)
    chunks = [chunk for document in documents for chunk in document]
    size = settings.embedding_batch_size
    old_rate, new_rate = ingestion_rate(before, documents, size), ingestion_rate(after, documents, size)
    rows.add(
        f"golden ingestion chunks/s ({len(documents)} pages, {len(chunks)} chunks)",
        f"{old_rate:.1f}",
        f"{new_rate:.1f}",
        "per document, as ingestion",
    )
    sample = chunks[:200] + questions[:50]
    cosines = (np.array(before.encode(sample)) * np.array(after.encode(sample))).sum(axis=1)
    rows.add(
        f"same vectors: min cosine before/after over {len(sample)} texts", "", f"{cosines.min():.6f}", ""
    )
    load = os.getloadavg()
    return "\n".join(rows.lines) + f"\n\nload average before the run: {load[0]:.2f}"
