"""The profile table's attribution and the load benchmark's goal ratios: the numbers the README
quotes are only as right as these."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from scripts.benchmark_load import Build, Result, Target, in_turn, main, print_goals, variant_build
from scripts.profile_load import (
    EVENT_LOOP,
    RATE_HZ,
    WORKER_LOOP,
    collapsed_stacks,
    cpu_of,
    cpu_per_request,
    cpu_seconds,
    part_of,
    shares,
)

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


def _row(
    scenario: str, workers: str, connections: int, rps: float, p50: float, p99: float, rounds: int = 0
) -> Result:
    return Result(scenario, workers, rps, p50, p99, 0, connections, rounds=rounds)


def _sequential_rows() -> list[Result]:
    """A run's rows, each target measured after the other."""
    return [
        _row("fake provider direct", "-", 1, 3000, 0.5, 1.0),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 16, 50, 300, 400),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 1, 40, 20.5, 30),
        _row("ours (abc), cache hit", "2", 16, 600, 20, 45),
        _row("ours (abc), uncached RAG answer", "2", 16, 40, 300, 500),
        _row("ours (abc), cache hit", "1", 1, 500, 2.0, 4),
        _row("ours (abc), uncached RAG answer", "1", 1, 30, 30.5, 40),
    ]


def test_the_goals_are_ratios_to_the_proxy_of_the_same_run(capsys: pytest.CaptureFixture[str]) -> None:
    print_goals(_sequential_rows(), [Build("ours (abc)", Path("."))], connections=16)
    table = capsys.readouterr().out
    assert "| cache hit req/s / LiteLLM's, c=16, 2 workers | >= 10x | 12.00x |" in table
    assert "| cache hit p99 ms, c=16, 2 workers | <= 50 | 45.0 |" in table
    assert "| uncached req/s / LiteLLM's, c=16, 2 workers | >= 1.0x | 0.80x |" in table
    assert "| ms added over the provider at c=1 (p50), cache hit | <= 2 | 1.5 |" in table
    assert "| ms added over the provider at c=1 (p50), uncached | <= 20.0 (LiteLLM's) | 30.0 |" in table


def test_the_goals_come_from_the_rows_measured_in_turn_when_there_are_any(
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_turn_rows = [
        _row("fake provider direct", "-", 1, 3000, 0.4, 1.0, rounds=3),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 1, 40, 11.4, 30, rounds=3),
        _row("LiteLLM 1.108.7 proxy (pass-through, no RAG)", "1", 16, 100, 150, 300, rounds=3),
        _row("ours (abc), cache hit", "1", 1, 500, 2.4, 4, rounds=3),
        _row("ours (abc), uncached RAG answer", "1", 1, 30, 13.4, 40, rounds=3),
        _row("ours (abc), cache hit", "2", 16, 1100, 12, 30, rounds=3),
        _row("ours (abc), uncached RAG answer", "2", 16, 120, 130, 200, rounds=3),
    ]
    print_goals(_sequential_rows() + in_turn_rows, [Build("ours (abc)", Path("."))], connections=16)
    table = capsys.readouterr().out
    assert "| cache hit req/s / LiteLLM's, c=16, 2 workers, in turn | >= 10x | 11.00x |" in table
    assert "| cache hit p99 ms, c=16, 2 workers, in turn | <= 50 | 30.0 |" in table
    assert "| uncached req/s / LiteLLM's, c=16, 2 workers, in turn | >= 1.0x | 1.20x |" in table
    assert "| ms added over the provider at c=1 (p50), in turn, cache hit | <= 2 | 2.0 |" in table
    assert (
        "| ms added over the provider at c=1 (p50), in turn, uncached | <= 11.0 (LiteLLM's) | 13.0 |" in table
    )


def test_a_variant_is_this_checkout_with_its_settings_in_a_directory_of_its_own() -> None:
    variant = variant_build(["two-threads", "EMBEDDING_QUERY_THREADS=2", "LLM_PROVIDERS=openai,groq"], "abc")
    assert variant.label == "ours (abc) with two-threads"
    assert variant.env == {"EMBEDDING_QUERY_THREADS": "2", "LLM_PROVIDERS": "openai,groq"}
    # Both builds run this checkout: their data directories and logs are told apart by label.
    assert variant.root == Build("ours (abc)", variant.root).root
    assert variant.slug != Build("ours (abc)", variant.root).slug


def test_a_variant_s_goals_are_a_column_of_their_own(capsys: pytest.CaptureFixture[str]) -> None:
    variant = variant_build(["fast", "X=1"], "abc")
    rows = [
        *_sequential_rows(),
        _row("ours (abc) with fast, cache hit", "2", 16, 750, 9, 20),
        _row("ours (abc) with fast, uncached RAG answer", "1", 1, 60, 8.5, 20),
    ]
    print_goals(rows, [Build("ours (abc)", Path(".")), variant], connections=16)
    table = capsys.readouterr().out
    assert "| cache hit req/s / LiteLLM's, c=16, 2 workers | >= 10x | 12.00x | 15.00x |" in table
    assert "| ms added over the provider at c=1 (p50), uncached | <= 20.0 (LiteLLM's) | 30.0 | 8.0 |" in table


@pytest.mark.parametrize(
    "words", [["two-threads"], ["two-threads", "EMBEDDING_QUERY_THREADS"], ["A=1"], ["x", "=2"], []]
)
def test_a_variant_without_a_name_and_settings_is_refused_before_anything_starts(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="expected a name, then ENV=VALUE settings"):
        variant_build(words, "abc")
    if words:  # (argparse itself refuses a bare --variant)
        with pytest.raises(SystemExit) as exited:
            main(["--variant", *words])
        assert exited.value.code == 2
        assert "expected a name, then ENV=VALUE settings" in capsys.readouterr().err


def test_rounds_measure_every_target_once_each_in_the_same_order() -> None:
    order: list[str] = []
    p50s = {"before": iter([10.0, 30.0, 20.0]), "ours": iter([12.0, 11.0, 40.0])}

    def measure(target: Target) -> Result:
        order.append(target.scenario)
        return _row(target.scenario, "1", 1, 100, next(p50s[target.scenario]), 50)

    targets = [Target(name, "http://127.0.0.1:1", "/", "{}", {}) for name in ("before", "ours")]
    rows = in_turn(measure, targets, rounds=3)
    assert order == ["before", "ours"] * 3
    # A row per target: the median of its rounds.
    assert [(r.scenario, r.p50_ms, r.rounds) for r in rows] == [("before", 20.0, 3), ("ours", 12.0, 3)]


def test_a_frame_broken_over_two_lines_is_joined_not_a_crash() -> None:
    raw = "thread (1): MainThread;\nrun (a.py:1) 7\nthread (1): MainThread;other (b.py:2) 3\n"
    assert list(collapsed_stacks(raw)) == [
        ("thread (1): MainThread;run (a.py:1)", 7),
        ("thread (1): MainThread;other (b.py:2)", 3),
    ]


def test_a_stack_ending_at_the_loop_s_runner_is_unplaced_not_uvicorn_s() -> None:
    runner = "asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118)"
    assert part_of(runner) == EVENT_LOOP
    assert part_of(f"{runner};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524)") == (
        "HTTP server (uvicorn)"
    )


def test_cpu_per_request_divides_what_each_part_spent_between_the_readings() -> None:
    before = Counter({WORKER_LOOP: 10.0, "PostgreSQL": 2.0})
    after = Counter({WORKER_LOOP: 12.0, "PostgreSQL": 2.5, "Redis": 0.1})
    per_request = [(part, round(ms, 9)) for part, ms in cpu_per_request(before, after, requests=1000)]
    assert per_request == [(WORKER_LOOP, 2.0), ("PostgreSQL", 0.5), ("Redis", 0.1)]


def test_cpu_seconds_reads_this_process_s_threads_as_a_worker_s() -> None:
    used = cpu_seconds(os.getpid(), Path("/nonexistent-data-dir"))
    assert used[WORKER_LOOP] > 0
    assert "PostgreSQL" not in used and "Redis" not in used


def test_a_reaped_child_s_cpu_stays_with_its_parent() -> None:
    """PostgreSQL's backends that the pool closes mid-run exit before the second reading."""
    me = psutil.Process()
    before = cpu_of(me, reaped=True) - cpu_of(me)
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert cpu_of(me, reaped=True) - cpu_of(me) > before
