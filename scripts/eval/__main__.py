"""`make eval`: retrieval quality of the real service on the shipped golden set, as a table.

    python -m scripts.eval                                  # default settings, all modes, baselines
    python -m scripts.eval --config default \\
        --config "chunk300:chunk_max_tokens=300,chunk_overlap_tokens=60"   # settings side by side

Each configuration gets its own empty database on one embedded PostgreSQL (and an embedded
Redis), its own app in process with those settings, and ingests the whole corpus through the API.
A configuration that changes ``embedding_*`` settings (another model, EMBEDDING_MODEL_PATH) loads
that model; the others share one loaded default model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.rag.embeddings import create_local_embedder
from app.rag.query import RetrievalMode
from app.settings import Settings
from scripts.eval import abstention as abstention_table
from scripts.eval import conversations
from scripts.eval.baselines import naive_baselines
from scripts.eval.floors import below_floors
from scripts.eval.golden import load
from scripts.eval.harness import Configuration, Result, costs, evaluate, table
from tests.support.services import start_postgres, start_redis


def _configuration(spec: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = spec.partition(":")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, separator, value = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--config {spec!r}: expected name:key=value,key=value")
        overrides[key.strip().lower()] = value.strip()
    return name, overrides


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    golden = load(args.corpus)
    if args.questions:
        golden = type(golden)(golden.name, golden.pages, golden.questions[: args.questions])
    modes = [RetrievalMode(mode) for mode in args.modes.split(",")]
    _progress(f"golden set {golden.name!r}: {len(golden.pages)} pages, {len(golden.questions)} questions")
    with tempfile.TemporaryDirectory(prefix="ragchat-eval-") as work:
        postgres = start_postgres()
        redis = start_redis(Path(work) / "redis")
        try:
            common: dict[str, Any] = {
                "redis_url": redis.url,
                "embedding_warm_up": False,
                "log_level": "ERROR",
                "data_dir": Path(work) / "data",
                "_env_file": None,
            }
            default_embedder = create_local_embedder(Settings(**common, database_url=postgres.base_url))
            results: list[Result] = []
            for spec in args.config or ["default"]:
                name, raw = _configuration(spec)
                database = postgres.create_database(f"ragchat_eval_{secrets.token_hex(4)}_{os.getpid()}")
                settings = Settings(
                    **common, **raw, database_url=database, redis_key_prefix=f"eval:{secrets.token_hex(4)}:"
                )
                configuration = Configuration(name, {key: getattr(settings, key) for key in raw})
                results.append(
                    await evaluate(
                        settings,
                        golden,
                        configuration,
                        modes=modes,
                        embedder=default_embedder,
                        progress=_progress,
                        probes=_probes(args),
                    )
                )
            # issue 28: the abstention table (unanswerable questions) on a database of its own
            abstention = await abstention_table.measure_on(postgres, common, golden, default_embedder, args)
            baselines = []
            if args.baselines:
                _progress("naive baselines (exact dense, BM25, their fusion)")
                baselines = await naive_baselines(golden, default_embedder)
            await default_embedder.aclose()
        finally:
            postgres.drop_databases()
            postgres.stop()
            redis.stop()
    print(f"\nGolden set {golden.name!r}: {len(golden.pages)} pages, {len(golden.questions)} questions\n")
    print(table(results, baselines))
    print()
    print(costs(results))
    abstention_table.report(abstention)
    for r in results:
        if "conversations" in r.probes:
            print(f"\nConversational retrieval ({r.configuration.name}, hybrid, top_k 10):\n")
            print(conversations.table(r.probes["conversations"]))
    if args.check:
        below = [f"{r.configuration.name}: {line}" for r in results for line in below_floors(r)]
        below += [
            f"{r.configuration.name}: {line}"
            for r in results
            if "conversations" in r.probes
            for line in conversations.below_floors(r.probes["conversations"])
        ]
        below += abstention_table.below(abstention)
        print()
        if below:
            print("Retrieval quality is below the floor (scripts/eval/floors.py):\n  " + "\n  ".join(below))
            return 1
        print("Retrieval quality is at or above every floor (scripts/eval/floors.py).")
    return 0


def _probes(args: argparse.Namespace) -> dict[str, Any]:
    if not args.conversations:
        return {}
    dialogues = conversations.load(args.corpus)
    # `make eval` also asks every single question after another one in a session; the check
    # (CI) leaves that out to stay quick.
    singles = () if args.check else load(args.corpus).questions

    async def conversational(client: Any, caller: Any, page_of: dict[str, str]) -> Any:
        return await conversations.evaluate(client, caller, page_of, dialogues, singles)

    return {"conversations": conversational}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", default="sqlite", help="folder under eval/ (pages.jsonl, questions.jsonl)"
    )
    parser.add_argument(
        "--config", action="append", help="name:setting=value,... (repeatable; default: the default settings)"
    )
    parser.add_argument("--modes", default="vector,text,hybrid")
    parser.add_argument("--questions", type=int, default=0, help="only the first N questions (quick runs)")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false")
    parser.add_argument("--no-abstention", dest="abstention", action="store_false")
    parser.add_argument(
        "--no-conversations",
        dest="conversations",
        action="store_false",
        help="skip the conversational set (eval/<corpus>/conversations.jsonl)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="fail (exit 1) below the floors of scripts/eval/floors.py; `make test` runs it",
    )
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
