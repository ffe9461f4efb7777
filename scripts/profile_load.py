"""`make profile-load`: where one worker's event loop spends its time under load, as a table.

Starts the fake LLM server and this service (1 worker, production defaults, the demo documents),
drives `/api/v1/chat` with wrk (c=16) for each scenario (a cache hit repeated; a new question each
time) and samples the worker with py-spy meanwhile. Each sampled stack is put in the first part
whose marker it contains (the list below, most specific first); the table gives each part's share
of the samples and the share of the time the thread was busy at all (py-spy leaves out idle
samples). Samples whose stack ends at the event loop's runner are their own part ("unplaced").
A second table gives the CPU milliseconds per request of each process meanwhile (the worker's
event loop thread, its other threads, PostgreSQL, Redis, the fake provider), read from the
kernel's counters. Shares of one run are comparable; absolute times on a shared machine are not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import psutil

from scripts.benchmark_load import (
    BENCH_HOME,
    HIT,
    UNIQUE,
    Build,
    answered_by_the_provider,
    baseline_checkout,
    ensure_wrk,
    fake_llm,
    run_wrk,
    seed,
    served_from_the_cache,
    service_env,
)
from tests.support.server import ROOT, start_server

RATE_HZ = 200
# A sampled stack belongs to the deepest frame of a part that does one job (the corpus version,
# authentication, ...), else to the frame nearest the leaf of a general part (a library, the
# middleware), else to "other". Markers match py-spy's "function (path:line)" frames.
JOBS: list[tuple[str, tuple[str, ...]]] = [
    ("corpus version", ("corpus_version", "CorpusVersion")),
    ("answer cache lookup", ("cache/answers.py",)),
    ("answer ledger", ("feedback/ledger.py",)),
    (
        "rate limits and budgets",
        ("limits/limiter.py", "limits/scripts.py", "limits/budgets.py", "rate_limit.py"),
    ),
    (
        "authentication",
        ("authenticator.py", "api_keys.py", "auth/jwt.py", "key_service.py", "authenticate ("),
    ),
    ("document visibility", ("auth/access.py", "memory/access.py")),
    ("query embedding", ("rag/embeddings", "onnxruntime", "local_models.py")),
    ("token counting", ("tokenizers", "count_tokens", "TokenCounter", "rag/tokens")),
    ("prompt injection heuristics", ("injection",)),
    (
        "retrieval (SQL)",
        ("rag/retrieval.py", "rag/repository.py", "rag/search", "replica_retrieval", "chat/retrieval.py"),
    ),
    ("provider call (SDK)", ("openai/", "groq/", "google/genai", "llm/")),
    ("memory and finishing", ("memory/", "chat/finish.py")),
    (
        "tracing and metrics",
        ("observability/tracing", "observability/metrics", "observability/telemetry", "prometheus_client"),
    ),
]
GENERAL: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("structlog", "observability/logging", "logging/__init__")),
    ("JSON", ("json/", "orjson")),
    ("FastAPI dependencies and validation", ("fastapi/", "pydantic")),
    (
        "middleware",
        ("security/", "api/middleware.py", "limits/middleware.py", "api/auth.py", "starlette/"),
    ),
    ("other SQL (SQLAlchemy, psycopg)", ("sqlalchemy", "asyncpg", "psycopg")),
    ("other Redis", ("redis/",)),
    ("HTTP server (uvicorn)", ("uvicorn", "h11", "httptools")),
]


def _match(frame: str, parts: list[tuple[str, tuple[str, ...]]]) -> str | None:
    return next((name for name, markers in parts if any(m in frame for m in markers)), None)


# A stack whose innermost Python frame is the loop's runner: py-spy found no frame to place it in.
# It is not uvloop's own time: `perf record` on the same thread puts 2.5 % of it in uvloop's
# library and 77 % in the interpreter, so these are mostly callbacks py-spy could not unwind.
EVENT_LOOP = "unplaced (py-spy saw only the event loop's runner)"


def part_of(stack: str) -> str:
    frames = stack.split(";")[::-1]  # the leaf first
    if frames[0].startswith("Runner.run (asyncio/runners.py"):
        return EVENT_LOOP
    for frame in frames:
        job = _match(frame, JOBS)
        if job:
            return job
    return next((g for g in (_match(f, GENERAL) for f in frames) if g), "other")


WORKER_LOOP = "worker: event loop thread"
WORKER_THREADS = "worker: other threads (query embedding)"


def cpu_of(process: psutil.Process, *, reaped: bool = False) -> float:
    """The process's CPU seconds; with ``reaped``, its children's that exited too (PostgreSQL's
    postmaster reaps the backends the pool closes mid-run, and their time goes into its counters)."""
    try:
        times = process.cpu_times()
    except psutil.Error:  # exited since it was listed
        return 0.0
    return float(times.user + times.system + (times.children_user + times.children_system if reaped else 0))


def cpu_seconds(worker_pid: int, data_dir: Path) -> Counter[str]:
    """CPU seconds used so far by the worker's event loop thread and its other threads, by the
    embedded PostgreSQL and Redis under ``data_dir`` (their children included) and by the fake
    provider: py-spy sees only the worker's Python, and the busy share of one thread."""
    used: Counter[str] = Counter()
    for thread in psutil.Process(worker_pid).threads():
        used[WORKER_LOOP if thread.id == worker_pid else WORKER_THREADS] += (
            thread.user_time + thread.system_time
        )
    for process in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = process.info["name"] or "", " ".join(process.info["cmdline"] or ())
        if "fake_llm_server" in cmdline:
            used["fake provider (wire protocol only)"] += cpu_of(process)
        elif str(data_dir) in cmdline and ("postgres" in name or "redis" in name):
            part = "PostgreSQL" if "postgres" in name else "Redis"
            with suppress(psutil.Error):
                children = process.children(recursive=True)
                used[part] += cpu_of(process, reaped=True) + sum(cpu_of(p) for p in children)
    return used


def cpu_per_request(before: Counter[str], after: Counter[str], requests: int) -> list[tuple[str, float]]:
    """Milliseconds of CPU per request in each part between two ``cpu_seconds`` readings."""
    spent = {part: after[part] - before[part] for part in after}
    return [
        (part, 1000 * seconds / max(1, requests))
        for part, seconds in sorted(spent.items(), key=lambda kv: -kv[1])
    ]


def ensure_py_spy() -> str:
    found = shutil.which("py-spy")
    if found:
        return found
    venv = BENCH_HOME / "py-spy"
    binary = venv / "bin" / "py-spy"
    if not binary.exists():
        print(f"installing py-spy into {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "py-spy"], check=True
        )
    return str(binary)


def worker_pid(launcher_pid: int) -> int:
    """The one gunicorn worker: the launcher's grandchild."""
    launcher = psutil.Process(launcher_pid)
    workers = [grandchild for child in launcher.children() for grandchild in child.children()]
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker, found {len(workers)}")
    return workers[0].pid


def collapsed_stacks(text: str) -> Iterator[tuple[str, int]]:
    """py-spy's raw lines (`frame;frame;... count`). A frame name can hold a line break (a thread
    named from bytes, say), so a line without a trailing count is joined to the next one."""
    pending = ""
    for line in text.splitlines():
        stack, _, count = (pending + line).rpartition(" ")
        if not count.isdigit():
            pending += line
            continue
        pending = ""
        if stack:
            yield stack, int(count)


def shares(raw: Path, seconds: float) -> tuple[float, list[tuple[str, float]]]:
    """The busy share of the event loop's thread, and each part's share of its busy samples;
    work in other threads (a thread pool's embedding, say) is listed apart, as a share of the
    same total."""
    parts: Counter[str] = Counter()
    loop_samples = 0
    for stack, samples in collapsed_stacks(raw.read_text(errors="replace")):
        in_thread = "_bootstrap (threading.py" in stack
        loop_samples += 0 if in_thread else samples
        part = part_of(stack)
        parts[f"in a thread: {part}" if in_thread else part] += samples
    busy = loop_samples / (seconds * RATE_HZ)
    total = loop_samples or 1
    return busy, [(name, n / total) for name, n in parts.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scenarios", default="hit,uncached")
    parser.add_argument(
        "--keep", type=Path, help="copy py-spy's raw stacks (<scenario>.txt) into this folder"
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="profile this git commit's code (checked out beside)"
    )
    args = parser.parse_args(argv)
    wrk, py_spy = ensure_wrk(), ensure_py_spy()
    tables: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    cpu: dict[str, list[tuple[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="profile-load-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        build = Build("ours", ROOT)
        if args.baseline:
            build = stack.enter_context(baseline_checkout(args.baseline, workdir))
        with fake_llm(workdir) as fake_url:
            data_dir = workdir / "service"
            data_dir.mkdir()
            env = {**service_env(data_dir, fake_url), **build.env}
            key = seed(env, build.root)
            headers = {"X-API-Key": key}
            server = start_server(
                env, workdir / "server.log", workers=1, ready_path="/readyz", timeout=240, cwd=build.root
            )
            try:
                pid = worker_pid(server.process.pid)
                served_from_the_cache(server.base_url, headers)
                answered_by_the_provider(server.base_url, headers)
                for scenario in args.scenarios.split(","):
                    body, unique = (HIT, False) if scenario == "hit" else (UNIQUE, True)
                    raw = workdir / f"{scenario}.txt"
                    spy = subprocess.Popen(
                        [
                            *(py_spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", str(RATE_HZ)),
                            *("--format", "raw", "-o", str(raw), "--nonblocking", "--threads"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    before = cpu_seconds(pid, data_dir)
                    load = run_wrk(
                        wrk,
                        server.base_url,
                        "/api/v1/chat",
                        body,
                        headers=headers,
                        unique=unique,
                        connections=args.connections,
                        seconds=args.seconds + 2,
                        scenario=scenario,
                        workers="1",
                    )
                    cpu[scenario] = cpu_per_request(before, cpu_seconds(pid, data_dir), load.requests)
                    spy.wait(timeout=60)
                    tables[f"{scenario} ({load.requests_per_s:.0f} req/s)"] = shares(raw, args.seconds)
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy(raw, args.keep / raw.name)
                    print(f"{scenario}: {load.requests_per_s:.0f} req/s", file=sys.stderr)
            finally:
                server.stop()
    load_average = " / ".join(f"{n:.1f}" for n in os.getloadavg())
    print(
        f"\n{build.label}: py-spy at {RATE_HZ} Hz on the one worker, wrk c={args.connections}, "
        f"{args.seconds} s; load {load_average}"
    )
    for scenario, (busy, parts) in tables.items():
        print(f"\n| {scenario}: part of the event loop's busy time ({busy:.0%} busy) | share |")
        print("|---|---:|")
        for name, share in parts:
            print(f"| {name} | {share:.1%} |")
    for scenario, parts in cpu.items():
        print(f"\n| {scenario}: CPU per request, by process | ms |")
        print("|---|---:|")
        for name, ms in parts:
            print(f"| {name} | {ms:.2f} |")
    print(json.dumps({s: dict(p) for s, (_, p) in tables.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
