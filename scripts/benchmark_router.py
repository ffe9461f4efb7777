"""Router overhead: our provider chain and LiteLLM's Router versus a direct SDK call, all against
the same fake OpenAI-compatible server (run in its own process), in the same run.

    python -m scripts.benchmark_router --requests 300     (or: make benchmark-router)

Each round calls the three clients in turn (direct ``openai`` SDK, ``ProviderChain`` with the
OpenAI adapter, ``litellm.Router`` with one OpenAI deployment), so drift on a shared machine
hits all three alike. Overhead = a client's latency percentile minus the direct call's. Our chain
includes its Redis cooldown read (one MGET per request) on a real Redis: embedded, or REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
from pydantic import SecretStr
from redis.asyncio import Redis

from app.llm.factory import build_provider_chain
from app.llm.types import ChatRequest, Message, StreamEnd
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is the refund window?"}]
REQUEST = ChatRequest(messages=(Message("user", "What is the refund window?"),))

Call = Callable[[], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_fake(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_llm_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_control/stats", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the fake LLM server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(calls: dict[str, Call], requests: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for call in calls.values():
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(requests):
        for name, call in calls.items():
            started = time.perf_counter()
            await call()
            samples[name].append((time.perf_counter() - started) * 1e6)
    return samples


def litellm_router(base_url: str) -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": base_url, "api_key": "bench-key"},
            }
        ],
        num_retries=0,
    )


async def run(requests: int, warmup: int, redis_url: str, fake_url: str) -> dict[str, dict[str, list[float]]]:
    settings = Settings(
        redis_url=redis_url,
        redis_key_prefix="bench:router:",
        llm_providers=["openai"],
        openai_api_key=SecretStr("bench-key"),
        openai_base_url=fake_url + "/v1",
        openai_model=MODEL,
        _env_file=None,  # type: ignore[call-arg]
    )
    async with AsyncExitStack() as stack:
        redis = Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        chain = build_provider_chain(settings, redis)
        stack.push_async_callback(chain.aclose)
        direct = openai.AsyncOpenAI(api_key="bench-key", base_url=fake_url + "/v1", max_retries=0)
        stack.push_async_callback(direct.close)
        router = litellm_router(fake_url + "/v1")

        async def direct_complete() -> None:
            response = await direct.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            assert response.choices[0].message.content

        async def chain_complete() -> None:
            completion = await chain.complete(REQUEST)
            assert completion.provider == "openai", completion

        async def litellm_complete() -> None:
            response = await router.acompletion(model="bench", messages=MESSAGES)
            assert response.choices[0].message.content

        async def direct_stream() -> None:
            stream = await direct.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            async for _ in stream:
                pass

        async def chain_stream() -> None:
            events = [event async for event in chain.stream(REQUEST)]
            assert isinstance(events[-1], StreamEnd), events[-1]

        async def litellm_stream() -> None:
            stream = await router.acompletion(model="bench", messages=MESSAGES, stream=True)
            async for _ in stream:
                pass

        complete = await measure(
            {"direct": direct_complete, "ours": chain_complete, "litellm": litellm_complete}, requests, warmup
        )
        stream = await measure(
            {"direct": direct_stream, "ours": chain_stream, "litellm": litellm_stream}, requests, warmup
        )
    return {"complete": complete, "stream": stream}


def report(results: dict[str, dict[str, list[float]]], requests: int) -> str:
    """Latency percentiles per client, and the overhead as paired per-round differences
    (client minus the direct call made right before it), which cancels most machine drift."""
    lines = [
        f"Router overhead vs a direct openai SDK call: {requests} rounds, same fake server, same run",
        "",
        "| call | client | p50 µs | p99 µs | overhead p50 µs | overhead p99 µs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for kind, samples in results.items():
        overhead: dict[str, float] = {}
        for client in ("direct", "ours", "litellm"):
            p50, p99 = percentile(samples[client], 0.5), percentile(samples[client], 0.99)
            if client == "direct":
                lines.append(f"| {kind} | {client} | {p50:,.0f} | {p99:,.0f} | — | — |")
                continue
            paired = [c - d for c, d in zip(samples[client], samples["direct"], strict=True)]
            overhead[client] = percentile(paired, 0.5)
            lines.append(
                f"| {kind} | {client} | {p50:,.0f} | {p99:,.0f} | {overhead[client]:,.0f} | "
                f"{percentile(paired, 0.99):,.0f} |"
            )
        if overhead["ours"] > 0:
            ratios.append(
                f"{kind}: LiteLLM overhead / ours (p50) = {overhead['litellm'] / overhead['ours']:.1f}x"
            )
        else:
            ratios.append(f"{kind}: our p50 overhead ({overhead['ours']:,.0f} µs) is below the noise floor")
    lines += ["", *ratios]
    mean_direct = statistics.mean(results["complete"]["direct"])
    lines.append(
        f"(direct call mean {mean_direct:,.0f} µs: the fake answers instantly, so this is client cost)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()

    port = free_port()
    fake = start_fake(port)
    embedded = None
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            from app.embedded.redis import EmbeddedRedis

            embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")), "redis")
            redis_url = embedded.start()
        results = asyncio.run(run(args.requests, args.warmup, redis_url, f"http://127.0.0.1:{port}"))
        print(report(results, args.requests))
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
