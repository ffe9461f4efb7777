"""The abstention table of `make eval`: does the service say "nothing in your documents matches"
to questions the documents cannot answer, and only to those?

    python -m scripts.eval.abstention             # the table, and the threshold sweep it was set from

The golden corpus is ingested through the API into a database of its own, then every answerable
question (eval/sqlite/questions.jsonl) and every unanswerable one (unanswerable.jsonl: on-topic,
but not answered by any page) is asked over ``POST /api/v1/chat`` (hybrid, top_k 5) with the
settings' relevance gate: counted are the unanswerable questions given the no-match answer
(abstained), the answerable ones wrongly given it, and the answerable hit@5. The sweep retrieves
each question once more outside the chat service and applies other thresholds to the same passages,
which is how the defaults of RELEVANCE_MIN_SIMILARITY / RELEVANCE_MIN_TEXT_MATCH were chosen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.auth.principal import Role
from app.chat.types import NO_CONTEXT_ANSWER
from app.rag.embeddings import Embedder
from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.relevance import RelevanceGate, evidence, relevance_gate
from app.rag.retrieval import retrieve
from app.resources import Resources
from app.settings import Settings
from scripts.eval.golden import EVAL_DIR, GoldenSet, distinct, load
from scripts.eval.harness import UNLIMITED, Progress, ingest
from tests.support.apps import running_app

# `make eval-check` fails below these (the README measurement less about two questions of each kind).
FLOORS = {"unanswerable abstained": 0.27, "answerable hit@5": 0.92}
CEILINGS = {"answerable wrongly abstained": 0.02}
SWEEP_SIMILARITY = (0.0, 0.3, 0.35, 0.38, 0.4, 0.45)
SWEEP_TEXT_MATCH = (0.0, 0.1, 0.15, 0.2, 0.25)


@dataclass(frozen=True)
class Asked:
    id: str
    answerable: bool
    abstained: bool  # the service gave the no-match answer
    hit5: bool  # a relevant page among the sources (answerable questions)
    chunks: tuple[RetrievedChunk, ...]  # what the gate judged, retrieved outside the service


@dataclass(frozen=True)
class AbstentionResult:
    gate: RelevanceGate
    asked: tuple[Asked, ...]

    def rates(self, gate: RelevanceGate | None = None) -> dict[str, float]:
        """The three rates; with ``gate``: as that gate would have decided on the same passages."""
        answerable = [a for a in self.asked if a.answerable]
        unanswerable = [a for a in self.asked if not a.answerable]

        def abstained(a: Asked) -> bool:
            return a.abstained if gate is None else not gate.admits(a.chunks)

        return {
            "unanswerable abstained": _share(abstained(a) for a in unanswerable),
            "answerable wrongly abstained": _share(abstained(a) for a in answerable),
            "answerable hit@5": _share(a.hit5 and not abstained(a) for a in answerable),
        }


def _share(flags: Any) -> float:
    values = list(flags)
    return sum(values) / max(1, len(values))


def load_unanswerable(name: str = "sqlite") -> list[tuple[str, str]]:
    path = EVAL_DIR / name / "unanswerable.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(str(row["id"]), str(row["question"])) for row in rows]


async def _chunks(resources: Resources, tenant_id: uuid.UUID, question: str) -> tuple[RetrievedChunk, ...]:
    """The passages the chat pipeline's gate judges for ``question`` (hybrid, top_k 5)."""
    settings = resources.settings
    vector = await resources.embedder.embed_query(question)
    query = RetrievalQuery(
        tenant_id=tenant_id,
        text=question,
        vector=vector,
        top_k=5,
        mode=RetrievalMode.hybrid,
        ef_search=settings.hnsw_ef_search,
        min_similarity=settings.retrieval_min_similarity,
    )
    async with resources.session_factory() as db:
        return tuple(await retrieve(db, query))


async def measure(
    settings: Settings,
    golden: GoldenSet,
    unanswerable: Sequence[tuple[str, str]],
    *,
    embedder: Embedder | None = None,
    progress: Progress = lambda _: None,
) -> AbstentionResult:
    """``settings`` names an empty, migrated database of its own."""
    settings = settings.model_copy(update=UNLIMITED)
    questions = [(q.id, q.text, q.relevant) for q in golden.questions]
    questions += [(qid, text, frozenset[str]()) for qid, text in unanswerable]
    async with running_app(settings, embedder=embedder) as (app, client, make_caller):
        resources: Resources = app.state.resources
        caller = await make_caller(tenant=f"abstention-{golden.name}", role=Role.editor)
        page_of = await ingest(client, resources, caller, golden, progress=progress, label="abstention")
        progress(f"abstention: {len(questions)} questions ({len(unanswerable)} unanswerable)")
        asked = [
            await _ask(client, resources, caller.headers, caller.tenant_id, page_of, question)
            for question in questions
        ]
    return AbstentionResult(relevance_gate(settings), tuple(asked))


async def _ask(
    client: httpx.AsyncClient,
    resources: Resources,
    headers: dict[str, str],
    tenant_id: uuid.UUID,
    page_of: dict[str, str],
    question: tuple[str, str, frozenset[str]],
) -> Asked:
    qid, text, relevant = question
    response = await client.post(
        "/api/v1/chat", json={"question": text, "top_k": 5, "mode": "hybrid"}, headers=headers
    )
    if response.status_code != 200:
        raise RuntimeError(f"chat refused {qid}: {response.status_code} {response.text}")
    body = response.json()
    ranked = distinct(page_of[s["document_id"]] for s in body["sources"])
    return Asked(
        id=qid,
        answerable=bool(relevant),
        abstained=body["answer"] == NO_CONTEXT_ANSWER,
        hit5=any(page in relevant for page in ranked[:5]),
        chunks=await _chunks(resources, tenant_id, text),
    )


def table(result: AbstentionResult) -> str:
    answerable = sum(a.answerable for a in result.asked)
    rates = result.rates()
    gate = result.gate
    return "\n".join(
        [
            "| relevance gate | unanswerable given the no-match answer | answerable wrongly given it "
            "| answerable hit@5 |",
            "|---|---:|---:|---:|",
            f"| similarity ≥ {gate.min_similarity} and text match ≥ {gate.min_text_match} "
            f"| {rates['unanswerable abstained']:.3f} ({len(result.asked) - answerable}) "
            f"| {rates['answerable wrongly abstained']:.3f} ({answerable}) "
            f"| {rates['answerable hit@5']:.3f} |",
        ]
    )


def sweep(result: AbstentionResult) -> str:
    """Unanswerable abstained / answerable wrongly abstained for other thresholds, same passages."""
    header = (
        "| similarity \\ text match | "
        + " | ".join(f"≥ {t:g}" if t else "off" for t in SWEEP_TEXT_MATCH)
        + " |"
    )
    lines = [header, "|---|" + "---:|" * len(SWEEP_TEXT_MATCH)]
    for similarity in SWEEP_SIMILARITY:
        cells = []
        for text_match in SWEEP_TEXT_MATCH:
            rates = result.rates(RelevanceGate(similarity, text_match))
            cells.append(
                f"{rates['unanswerable abstained']:.2f} / {rates['answerable wrongly abstained']:.2f}"
            )
        lines.append(
            f"| {'≥ ' + format(similarity, 'g') if similarity else 'off'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def below_floors(result: AbstentionResult) -> list[str]:
    rates = result.rates()
    below = [f"{name} {rates[name]:.3f} < {floor}" for name, floor in FLOORS.items() if rates[name] < floor]
    above = [
        f"{name} {rates[name]:.3f} > {ceiling}" for name, ceiling in CEILINGS.items() if rates[name] > ceiling
    ]
    return below + above


async def measure_on(
    postgres: Any, common: dict[str, Any], golden: GoldenSet, embedder: Embedder, args: argparse.Namespace
) -> AbstentionResult | None:
    """`make eval`'s run: the default settings on a new database of ``postgres`` (None with
    ``--no-abstention`` or a corpus without unanswerable questions)."""
    if not args.abstention or not (EVAL_DIR / golden.name / "unanswerable.jsonl").exists():
        return None
    _progress("abstention: unanswerable and answerable questions, the default relevance gate")
    database = postgres.create_database(f"ragchat_abstention_{secrets.token_hex(4)}")
    settings = Settings(**common, database_url=database, redis_key_prefix=f"abst:{secrets.token_hex(4)}:")
    return await measure(
        settings, golden, load_unanswerable(golden.name), embedder=embedder, progress=_progress
    )


def report(result: AbstentionResult | None) -> None:
    if result is not None:
        print("\nAbstention (hybrid, top_k 5; scripts/eval/abstention.py):\n")
        print(table(result))


def below(result: AbstentionResult | None) -> list[str]:
    return [] if result is None else [f"abstention: {line}" for line in below_floors(result)]


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def evidence_rows(result: AbstentionResult) -> list[dict[str, Any]]:
    rows = []
    for a in result.asked:
        best = evidence(a.chunks)
        rows.append(
            {
                "id": a.id,
                "answerable": a.answerable,
                "similarity": best.similarity,
                "text_match": best.text_match,
            }
        )
    return rows


async def _measure_alone(args: argparse.Namespace) -> AbstentionResult:
    from app.rag.embeddings import create_local_embedder
    from tests.support.services import start_postgres, start_redis

    golden = load(args.corpus)
    with tempfile.TemporaryDirectory(prefix="ragchat-abstention-") as work:
        postgres = start_postgres()
        redis = start_redis(Path(work) / "redis")
        try:
            settings = Settings(
                redis_url=redis.url,
                embedding_warm_up=False,
                log_level="ERROR",
                data_dir=Path(work) / "data",
                _env_file=None,  # type: ignore[call-arg]
                database_url=postgres.create_database(f"ragchat_abstention_{secrets.token_hex(4)}"),
                redis_key_prefix=f"abstention:{secrets.token_hex(4)}:",
            )
            embedder = create_local_embedder(settings)
            result = await measure(
                settings, golden, load_unanswerable(args.corpus), embedder=embedder, progress=_progress
            )
            await embedder.aclose()
        finally:
            postgres.drop_databases()
            postgres.stop()
            redis.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="sqlite")
    parser.add_argument("--dump", help="write each question's best similarity and text match here (JSON)")
    args = parser.parse_args(argv)
    result = asyncio.run(_measure_alone(args))
    if args.dump:
        Path(args.dump).write_text(json.dumps(evidence_rows(result), indent=1))
    print(table(result))
    print("\nSweep on the same passages (unanswerable abstained / answerable wrongly abstained):\n")
    print(sweep(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
