"""The profile table's attribution and the load benchmark's goal ratios: the numbers the README
quotes are only as right as these."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.benchmark_load import Build, Result, print_goals
from scripts.profile_load import RATE_HZ, part_of, shares

MIDDLEWARE = "__call__ (api/auth.py:97);__call__ (security/headers.py:40)"
PIPELINE = "ChatService._answer (chat/service.py:189);Preparation.prepare (chat/pipeline.py:185)"
SQL = (
    "AsyncSession.execute (sqlalchemy/ext/asyncio/session.py:652);"
    "BaseCursor._execute_send (psycopg/_cursor_base.py:459)"
)


def test_a_stack_belongs_to_its_deepest_job_not_to_the_middleware_that_wraps_it() -> None:
    stack = f"{MIDDLEWARE};{PIPELINE};corpus_version (cache/repository.py:25);{SQL}"
    assert part_of(stack) == "corpus version"


def test_library_time_with_no_job_above_it_is_the_library_s() -> None:
    assert part_of(f"{MIDDLEWARE};{PIPELINE};{SQL}") == "other SQL (SQLAlchemy, psycopg)"


def test_the_middleware_s_own_time_is_the_middleware_s() -> None:
    assert part_of(MIDDLEWARE) == "middleware"


def test_the_authenticate_dependency_is_authentication_but_the_auth_middleware_is_not() -> None:
    assert part_of(f"{MIDDLEWARE};authenticate (api/auth.py:39);{SQL}") == "authentication"
    assert part_of("__call__ (api/auth.py:97)") == "middleware"


def test_shares_count_the_loop_apart_from_worker_threads(tmp_path: Path) -> None:
    raw = tmp_path / "hit.txt"
    raw.write_text(
        f"thread (1): MainThread;{MIDDLEWARE};{PIPELINE};corpus_version (cache/repository.py:25) 30\n"
        f"thread (1): MainThread;{MIDDLEWARE} 10\n"
        "thread (2);_bootstrap (threading.py:1002);run (rag/embeddings/onnx.py:80) 20\n"
    )
    busy, parts = shares(raw, seconds=1)
    assert busy == pytest.approx(40 / RATE_HZ)  # the thread pool's samples are not the loop's
    assert dict(parts) == {
        "corpus version": pytest.approx(0.75),
        "middleware": pytest.approx(0.25),
        "in a thread: query embedding": pytest.approx(0.5),
    }


def _row(scenario: str, workers: str, connections: int, rps: float, p50: float, p99: float) -> Result:
    return Result(scenario, workers, rps, p50, p99, 0, connections)


def test_the_goals_are_ratios_to_the_proxy_of_the_same_run(capsys: pytest.CaptureFixture[str]) -> None:
    results = [
        _row("fake provider direct", "-", 1, 3000, 0.5, 1.0),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 16, 50, 300, 400),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 1, 40, 20.5, 30),
        _row("ours (abc), cache hit", "2", 16, 600, 20, 45),
        _row("ours (abc), uncached RAG answer", "2", 16, 40, 300, 500),
        _row("ours (abc), cache hit", "1", 1, 500, 2.0, 4),
        _row("ours (abc), uncached RAG answer", "1", 1, 30, 30.5, 40),
    ]
    print_goals(results, [Build("ours (abc)", Path("."))], connections=16)
    table = capsys.readouterr().out
    assert "| cache hit req/s / LiteLLM's, c=16, 2 workers | >= 10x | 12.00x |" in table
    assert "| cache hit p99 ms, c=16, 2 workers | <= 50 | 45.0 |" in table
    assert "| uncached req/s / LiteLLM's, c=16, 2 workers | >= 1.0x | 0.80x |" in table
    assert "| ms added over the provider at c=1 (p50), cache hit | <= 2 | 1.5 |" in table
    assert "| ms added over the provider at c=1 (p50), uncached | <= 20.0 (LiteLLM's) | 30.0 |" in table
