"""Tokens per second of the local link's model, through the service's own ``LocalProvider``
(gpt4all in its single-thread executor, tokens crossing to the event loop), per CPU thread count.

    python -m scripts.benchmark_local_model --prompts 5     (or: make benchmark-local-model)

Each prompt is a RAG-shaped chat (the service's system instructions, a passage, a question) in
ChatML, answered at temperature 0 with ``--max-tokens``. Per thread count: the load time (the
throw-away preflight subprocess included, as at service start), time to the first token (the
prompt's evaluation), generation speed after the first token, and the whole answer's tokens/s.
The thread counts are run in turn for each prompt, so load on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.llm.local import LocalProvider
from app.llm.types import ChatRequest, Message, Usage
from app.rag.prompt import SYSTEM_INSTRUCTIONS
from scripts.local_model import MODEL_PATH, prepare

QUESTIONS = (
    ("The project kickoff is on the fourth floor, in room 4.12, at 9 am on Monday.", "Where is the kickoff?"),
    (
        "API keys are rotated every 90 days; the old key keeps working for 24 hours.",
        "How often are keys rotated?",
    ),
    ("Refunds are paid within 14 days to the card used for the purchase.", "How are refunds paid?"),
    ("The office is closed on public holidays and on the last Friday of December.", "When is it closed?"),
    (
        "Backups run nightly at 2 am and are kept for 30 days in a second region.",
        "How long are backups kept?",
    ),
)


@dataclass
class Runs:
    load_s: float = 0.0
    first_token_s: list[float] = field(default_factory=list)
    generation_tps: list[float] = field(default_factory=list)
    overall_tps: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def request_for(passage: str, question: str, max_tokens: int) -> ChatRequest:
    context = f"<context>\n[1] {passage}\n</context>\n\n{question}"
    messages = (Message("system", SYSTEM_INSTRUCTIONS), Message("user", context))
    return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=0.0)


async def answer(provider: LocalProvider, request: ChatRequest, runs: Runs) -> None:
    started = time.perf_counter()
    first: float | None = None
    produced = 0
    async for chunk in provider.stream(request, provider.default_model):
        if isinstance(chunk, Usage):
            produced = chunk.completion_tokens
        elif first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None, "the model produced no text"
    runs.first_token_s.append(first - started)
    runs.tokens.append(produced)
    runs.overall_tps.append(produced / (ended - started))
    if produced > 1 and ended > first:
        runs.generation_tps.append((produced - 1) / (ended - first))


async def run(model: Path, threads: list[int], prompts: int, max_tokens: int) -> dict[int, Runs]:
    results = {n: Runs() for n in threads}
    providers: dict[int, LocalProvider] = {}
    try:
        for n in threads:
            providers[n] = LocalProvider(model_path=model, n_threads=n, prompt_format="chatml")
            started = time.perf_counter()
            availability = await providers[n].load()
            results[n].load_s = time.perf_counter() - started
            if not availability.configured:
                raise SystemExit(f"the model does not load: {availability.reason}")
        for i in range(prompts):
            request = request_for(*QUESTIONS[i % len(QUESTIONS)], max_tokens=max_tokens)
            for n in threads:
                await answer(providers[n], request, results[n])
    finally:
        for provider in providers.values():
            await provider.aclose()
    return results


def table(results: dict[int, Runs], model: Path, prompts: int, max_tokens: int) -> str:
    lines = [
        f"Local model {model.name} under gpt4all: {prompts} prompts per thread count, "
        f"max_tokens {max_tokens}, temperature 0",
        "",
        "| threads | load s | first token p50 s | generation tok/s p50 | answer tok/s p50 | tokens p50 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, runs in results.items():
        generation = statistics.median(runs.generation_tps) if runs.generation_tps else float("nan")
        lines.append(
            f"| {n} | {runs.load_s:.1f} | {statistics.median(runs.first_token_s):.2f} | {generation:.1f} | "
            f"{statistics.median(runs.overall_tps):.1f} | {statistics.median(runs.tokens):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: make local-model's)")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model = args.model or prepare(MODEL_PATH)
    threads = [int(n) for n in args.threads.split(",")]
    results = asyncio.run(run(model, threads, args.prompts, args.max_tokens))
    print(table(results, model, args.prompts, args.max_tokens))


if __name__ == "__main__":
    main()
