"""Runs the golden set through the real service: every page uploaded over the API and ingested by
the real worker, every question asked over ``POST /api/v1/chat`` in each retrieval mode, and the
documents named by ``sources`` scored (``scripts.eval.golden``).

Two requests per question and mode: ``top_k: 10`` gives the ranking for hit@1/3/5/10, MRR and
nDCG@10; ``top_k: 5`` gives "served@5", the hit rate and MRR of exactly what a client asking for
five passages gets (several passages of one page count once).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.auth.principal import Role
from app.db.models import Chunk
from app.rag.embeddings import Embedder
from app.rag.query import RetrievalMode
from app.resources import Resources
from app.settings import Settings
from scripts.eval.golden import GoldenSet, Scores, distinct, score
from tests.support.apps import running_app
from tests.support.callers import Caller
from tests.support.documents import count_rows, run_jobs, upload

MODES = tuple(RetrievalMode)
Progress = Callable[[str], None]
# A further evaluation on the same ingested corpus (the conversations, …): client, caller, page ids.
Probe = Callable[[httpx.AsyncClient, Caller, dict[str, str]], Awaitable[Any]]
# Evaluation traffic is one caller asking hundreds of questions: no rate limit should refuse it.
UNLIMITED = {
    "rate_limit_per_principal": "1000000/minute",
    "rate_limit_per_ip": "1000000/minute",
    "rate_limit_per_tenant": "1000000/minute",
    "rate_limit_uploads": "1000000/hour",
    "llm_providers": [],  # sources are what is scored: the extractive answer needs no model
}


@dataclass(frozen=True)
class Configuration:
    """A named set of settings overrides (``Settings`` field names), e.g. ``chunk_max_tokens``."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def changes_embeddings(self) -> bool:
        return any(key.startswith("embedding_") for key in self.overrides)


@dataclass(frozen=True)
class ModeResult:
    mode: RetrievalMode
    ranked: Scores  # top_k 10
    served5: Scores  # top_k 5
    latency_ms_p50: float


@dataclass(frozen=True)
class Result:
    configuration: Configuration
    pages: int
    chunks: int
    ingest_s: float
    modes: list[ModeResult]
    probes: dict[str, Any] = field(default_factory=dict)  # each probe's result, by name


async def ingest(
    client: httpx.AsyncClient,
    resources: Resources,
    caller: Caller,
    golden: GoldenSet,
    *,
    progress: Progress = lambda _: None,
    label: str = "",
) -> dict[str, str]:
    """Uploads every page over the API and runs the ingestion jobs to completion: the page id of
    each document id. A refused upload or a failed job stops the evaluation."""
    page_of: dict[str, str] = {}
    jobs: list[str] = []
    for number, page in enumerate(golden.pages, start=1):
        response = await upload(
            client, caller.headers, page.text.encode(), filename=f"{page.id}.txt", title=page.title
        )
        if response.status_code != 202:
            raise RuntimeError(f"upload of {page.id} refused: {response.status_code} {response.text}")
        page_of[response.json()["document_id"]] = page.id
        jobs.append(response.json()["status_url"])
        if number % 100 == 0:
            progress(f"{label}: uploaded {number}/{len(golden.pages)} pages")
    progress(f"{label}: ingesting {len(jobs)} documents")
    await run_jobs(resources)
    for status_url in jobs:
        job = (await client.get(status_url, headers=caller.headers)).json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"ingestion failed: {job}")
    return page_of


async def evaluate(
    base: Settings,
    golden: GoldenSet,
    configuration: Configuration,
    *,
    modes: Sequence[RetrievalMode] = MODES,
    embedder: Embedder | None = None,
    progress: Progress = lambda _: None,
    probes: Mapping[str, Probe] | None = None,
) -> Result:
    """``base`` names an empty, migrated database of its own. ``embedder``: an already-loaded
    model to share (ignored when the configuration changes the embedding settings, so the app
    builds the model those settings name)."""
    settings = base.model_copy(update={**UNLIMITED, **configuration.overrides})
    shared = None if configuration.changes_embeddings else embedder
    async with running_app(settings, embedder=shared) as (app, client, make_caller):
        resources = app.state.resources
        caller = await make_caller(tenant=f"eval-{golden.name}", role=Role.editor)
        started = time.perf_counter()
        page_of = await ingest(client, resources, caller, golden, progress=progress, label=configuration.name)
        chunks = await count_rows(resources, Chunk)
        ingest_s = time.perf_counter() - started

        results = []
        for mode in modes:
            progress(f"{configuration.name}: {len(golden.questions)} questions, {mode.value}")
            rankings: dict[int, list[tuple[list[str], frozenset[str]]]] = {10: [], 5: []}
            latencies: list[float] = []
            for question in golden.questions:
                for top_k in (10, 5):
                    asked = time.perf_counter()
                    response = await client.post(
                        "/api/v1/chat",
                        json={"question": question.text, "top_k": top_k, "mode": mode.value},
                        headers=caller.headers,
                    )
                    latencies.append((time.perf_counter() - asked) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(
                            f"chat refused {question.id}: {response.status_code} {response.text}"
                        )
                    ranked = distinct(page_of[s["document_id"]] for s in response.json()["sources"])
                    rankings[top_k].append((ranked, question.relevant))
            results.append(
                ModeResult(mode, score(rankings[10]), score(rankings[5]), statistics.median(latencies))
            )
        probed = {}
        for name, probe in (probes or {}).items():
            progress(f"{configuration.name}: {name}")
            probed[name] = await probe(client, caller, page_of)
    return Result(configuration, len(golden.pages), chunks, ingest_s, results, probed)


def table(results: Sequence[Result], baselines: Sequence[tuple[str, Scores]] = ()) -> str:
    lines = [
        "| configuration | mode | hit@1 | hit@3 | hit@5 | hit@10 | MRR | nDCG@10 | served@5 hit / MRR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for mode in result.modes:
            r, s = mode.ranked, mode.served5
            lines.append(
                f"| {result.configuration.name} | {mode.mode.value} | {r.hits[1]:.3f} | {r.hits[3]:.3f} "
                f"| {r.hits[5]:.3f} | {r.hits[10]:.3f} | {r.mrr:.3f} | {r.ndcg10:.3f} "
                f"| {s.hits[5]:.3f} / {s.mrr:.3f} |"
            )
    for name, r in baselines:
        lines.append(
            f"| naive baseline | {name} | {r.hits[1]:.3f} | {r.hits[3]:.3f} | {r.hits[5]:.3f} "
            f"| {r.hits[10]:.3f} | {r.mrr:.3f} | {r.ndcg10:.3f} | |"
        )
    return "\n".join(lines)


def costs(results: Sequence[Result]) -> str:
    lines = [
        "| configuration | pages | chunks | ingest s | chat p50 ms per mode |",
        "|---|---:|---:|---:|---|",
    ]
    for result in results:
        latency = " · ".join(f"{m.mode.value} {m.latency_ms_p50:.1f}" for m in result.modes)
        name = result.configuration.name
        lines.append(f"| {name} | {result.pages} | {result.chunks} | {result.ingest_s:.1f} | {latency} |")
    return "\n".join(lines)
