"""`make benchmark-load BUDGETS=1` (`python -m scripts.benchmark_load --budgets`): what checking and
reserving token and money budgets costs, budgets off against on, this service only (no LiteLLM).

Two measurements:
- the Redis scripts alone, sequential round trips on an embedded Redis over its Unix socket: the
  rate-limit script a chat request runs with budgets off, the same request's script with its
  worst case reserved on 2 and on 8 budgets (tenant and key, day and month, tokens and money),
  and the settle script that ends a reservation (a separate round trip after the answer);
- the service under wrk (1 worker, the fake provider at zero latency): the cache hit and the
  uncached answer with budgets off, then on (every BUDGET_* set, high enough never to refuse),
  twice over. Off and on take turns, so load from other processes falls on each alike.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.embedded.redis import EmbeddedRedis
from app.limits.scripts import (
    FIXED_WINDOW_HIT,
    FIXED_WINDOW_HIT_AND_RESERVE,
    SETTLE,
    BudgetSlot,
    hit_and_reserve_layout,
)
from scripts.benchmark_load import MODEL, Result, fake_llm, run_wrk, seed, service_env
from tests.support.server import start_server

BIG = 10**15
BUDGET_ENV = {
    "BUDGET_TOKENS_PER_DAY_TENANT": str(10**12),
    "BUDGET_TOKENS_PER_MONTH_TENANT": str(10**12),
    "BUDGET_TOKENS_PER_DAY_KEY": str(10**12),
    "BUDGET_TOKENS_PER_MONTH_KEY": str(10**12),
    "BUDGET_USD_PER_DAY_TENANT": "1000000",
    "BUDGET_USD_PER_MONTH_TENANT": "1000000",
    "BUDGET_USD_PER_DAY_KEY": "1000000",
    "BUDGET_USD_PER_MONTH_KEY": "1000000",
    "BUDGET_PRICE_TABLE": json.dumps({f"openai/{MODEL}": {"input": 0.15, "output": 0.6}}),
}


async def _timed(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


async def script_costs(redis_url: str, rounds: int = 10, calls: int = 500) -> dict[str, list[float]]:
    """Microseconds per round trip of each script, ``rounds`` alternating blocks of ``calls``."""
    redis = Redis.from_url(redis_url)
    hit, reserve, settle = (
        redis.register_script(s) for s in (FIXED_WINDOW_HIT, FIXED_WINDOW_HIT_AND_RESERVE, SETTLE)
    )
    counters = [(f"bench:c:{n}", BIG, 60) for n in range(2)]
    slots = [BudgetSlot(f"bench:b:{n}", f"bench:b:{n}:r", BIG, 86400, 3500) for n in range(8)]
    for slot in slots:
        await redis.hset(slot.hash_key, "spent", 0)
    now = time.time()
    plain_keys = [key for key, _, _ in counters]
    plain_args = [v for _, limit, window in counters for v in (limit, window)]

    def reserving(budgets: int) -> Callable[[], Awaitable[object]]:
        keys, _ = hit_and_reserve_layout(counters, slots[:budgets], "", now, now)

        def call() -> Awaitable[object]:
            _, args = hit_and_reserve_layout(counters, slots[:budgets], uuid.uuid4().hex[:16], now, now + 900)
            return reserve(keys=keys, args=args)

        return call

    settle_keys = [k for s in slots[:2] for k in (s.hash_key, s.reservations_key)]
    rows: dict[str, Callable[[], Awaitable[object]]] = {
        "rate-limit script (budgets off)": lambda: hit(keys=plain_keys, args=plain_args),
        "rate limits + reserve on 2 budgets": reserving(2),
        "rate limits + reserve on 8 budgets": reserving(8),
        "settle on 2 budgets (after the answer)": lambda: settle(keys=settle_keys, args=["none", 1000, 1000]),
    }
    timings: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for _ in range(rounds):
            for name, call in rows.items():
                timings[name] += await _timed(call, calls)
            for slot in slots:  # keep the reservation sets small, as settling does in the service
                await redis.delete(slot.reservations_key)
                await redis.hset(slot.hash_key, mapping={"reserved": 0})
    finally:
        await redis.aclose()
    return timings


def measure(
    wrk: str, base_url: str, headers: dict[str, str], label: str, load: dict[str, int]
) -> list[Result]:
    """A warmed-up cache hit, then uncached answers (every request a new question)."""

    def chat(body: str, scenario: str, *, unique: bool = False, connections: int, seconds: int) -> Result:
        return run_wrk(
            wrk,
            base_url,
            "/api/v1/chat",
            body,
            headers=headers,
            unique=unique,
            scenario=scenario,
            workers="1",
            connections=connections,
            seconds=seconds,
        )

    hit = json.dumps({"question": "How are streaming answers sent?"})
    json_headers = {**headers, "Content-Type": "application/json"}
    httpx.post(base_url + "/api/v1/chat", content=hit, headers=json_headers, timeout=60)
    chat(hit, "warm-up", connections=4, seconds=3)
    connections, seconds = load["connections"], load["seconds"]
    cached = chat(hit, f"cache hit, budgets {label}", connections=connections, seconds=seconds)
    unique = json.dumps({"question": f"How are streaming answers sent, {label.replace(' ', '-')} case %s?"})
    uncached = chat(
        unique, f"uncached answer, budgets {label}", unique=True, connections=connections, seconds=seconds
    )
    return [cached, uncached]


def http_rows(wrk: str, seconds: int, connections: int, workdir: Path, rounds: int = 2) -> list[Result]:
    """Cache hit and uncached answer, budgets off then on, ``rounds`` times (one worker each): the
    machine's load moves between rows, so off and on take turns."""
    results: list[Result] = []
    load = {"connections": connections, "seconds": seconds}
    with fake_llm(workdir) as fake_url:
        data_dir = workdir / "service"
        data_dir.mkdir()
        env = service_env(data_dir, fake_url)
        print("seeding the demo documents …", file=sys.stderr)
        key = seed(env)
        for round_ in range(1, rounds + 1):
            for label, extra in (("off", {}), ("on", BUDGET_ENV)):
                log = workdir / f"server-{label}-{round_}.log"
                server = start_server({**env, **extra}, log, workers=1, ready_path="/readyz", timeout=240)
                try:
                    results += measure(wrk, server.base_url, {"X-API-Key": key}, f"{label} ({round_})", load)
                finally:
                    server.stop()
    return results


def print_tables(
    timings: dict[str, list[float]], results: list[Result], seconds: int, connections: int
) -> None:
    print("\n| Redis script, sequential round trips | calls | p50 µs | mean µs | p99 µs |")
    print("|---|---:|---:|---:|---:|")
    for name, values in timings.items():
        ordered = sorted(values)
        p99 = ordered[int(len(ordered) * 0.99)]
        p50, mean = statistics.median(values), statistics.fmean(values)
        print(f"| {name} | {len(values)} | {p50:.0f} | {mean:.0f} | {p99:.0f} |")
    if results:
        print(f"\n{connections} connections, {seconds} s per row, wrk -t2, 1 worker; provider latency zero\n")
        print("| scenario | req/s | p50 ms | p99 ms | errors |")
        print("|---|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {r.scenario} | {r.requests_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |"
            )


def run(wrk: str | None, seconds: int, connections: int) -> int:
    """The budgets comparison; ``wrk`` None: the script costs only."""
    with tempfile.TemporaryDirectory(prefix="bench-budgets-") as tmp:
        workdir = Path(tmp)
        redis = EmbeddedRedis(workdir, "lua")
        redis.start()
        try:
            timings = asyncio.run(script_costs(redis.url))
        finally:
            redis.stop()
        results = http_rows(wrk, seconds, connections, workdir) if wrk is not None else []
    print_tables(timings, results, seconds, connections)
    return 0
