"""Router overhead: our provider chain and LiteLLM's Router versus a direct SDK call, all against
the same fake OpenAI-compatible server (run in its own process), in the same run.

    python -m scripts.benchmark_router --requests 300     (or: make benchmark-router)

Each round calls the three clients in turn (direct ``openai`` SDK, ``ProviderChain`` with the
OpenAI adapter, ``litellm.Router`` with one OpenAI deployment), so drift on a shared machine
hits all three alike. Overhead = a client's latency percentile minus the direct call's. Our chain
includes its Redis cooldown read (one MGET per request) on a real Redis: embedded, or REDIS_URL.

Then the provider call alone (``--call-rounds``; 0 skips it): the OpenAI and Groq adapters
(``app.llm.openai_wire``, plain aiohttp) against the vendor SDK call they replaced, streamed (what
the router sends in both of its modes) and not, for a short and a long answer, and a caller's own
key (a new SDK client per request before, ``with_key`` on the shared pool now). CPU µs is this
process's CPU time per call (the fake runs in another process), the figure that matters on a busy
event loop; wall µs moves with the machine's load.
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
from app.llm.groq_provider import GroqProvider
from app.llm.openai_compat import OpenAICompatibleProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.types import ChatRequest, Message, StreamEnd
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is the refund window?"}]
REQUEST = ChatRequest(messages=(Message("user", "What is the refund window?"),))
SHORT_ANSWER = "Here is what the documents say [1]."  # benchmark_load's
LONG_ANSWER = " ".join(["The refund window is thirty days from delivery [1]."] * 15)  # 120 words

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
            ratios.append(
                f"{kind}: our p50 overhead is {overhead['ours']:,.0f} µs: no slower than the direct SDK call"
            )
    lines += ["", *ratios]
    mean_direct = statistics.mean(results["complete"]["direct"])
    lines.append(
        f"(direct call mean {mean_direct:,.0f} µs: the fake answers instantly, so this is client cost)"
    )
    return "\n".join(lines)


# --- the provider call alone --------------------------------------------------------------------


async def measure_cpu(calls: dict[str, Call], rounds: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Per call: wall p50 µs and mean CPU µs of this process, the calls interleaved per round."""
    for _ in range(warmup):
        for call in calls.values():
            await call()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            await call()
            cpu[name].append((time.process_time() - cpu_started) * 1e6)
            wall[name].append((time.perf_counter() - started) * 1e6)
    return {name: (percentile(wall[name], 0.5), statistics.mean(cpu[name])) for name in calls}


def sdk_calls(wire: str, fake_url: str) -> tuple[Any, Call, Call, Call]:
    """The vendor SDK's client and its JSON, streamed and per-caller-key calls, as the adapter made
    them before ``openai_wire``."""
    import groq

    usage = {"include_usage": True}
    if wire == "openai":
        make: Any = lambda key: openai.AsyncOpenAI(api_key=key, base_url=fake_url + "/v1", max_retries=0)  # noqa: E731
        streamed: dict[str, Any] = {"stream_options": usage}
    else:
        make = lambda key: groq.AsyncGroq(api_key=key, base_url=fake_url, max_retries=0)  # noqa: E731
        streamed = {"extra_body": {"stream_options": usage}}
    client = make("bench-key")

    async def plain() -> None:
        response = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert response.choices[0].message.content

    async def stream() -> None:
        chunks = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **streamed)
        async for _ in chunks:
            pass

    async def caller_key() -> None:
        own = make("caller-key")
        try:
            chunks = await own.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, **streamed
            )
            async for _ in chunks:
                pass
        finally:
            await own.close()

    return client, plain, stream, caller_key


def adapter_calls(provider: OpenAICompatibleProvider) -> tuple[Call, Call, Call]:
    async def plain() -> None:
        assert (await provider.complete(REQUEST, MODEL)).text

    async def stream() -> None:
        async for _ in provider.stream(REQUEST, MODEL):
            pass

    async def caller_key() -> None:
        own = provider.with_key("caller-key")
        try:
            async for _ in own.stream(REQUEST, MODEL):
                pass
        finally:
            await own.aclose()

    return plain, stream, caller_key


async def run_calls(rounds: int, fake_url: str) -> list[str]:
    """Table rows: SDK call (before) against the adapter (now), per wire, kind and answer length."""
    rows = []
    for wire, adapter_class in (("openai", OpenAIProvider), ("groq", GroqProvider)):
        base = fake_url + "/v1" if wire == "openai" else fake_url
        provider = adapter_class(
            api_key="bench-key", model=MODEL, base_url=base, connect_timeout_s=5, total_timeout_s=30
        )
        client, *before = sdk_calls(wire, fake_url)
        after = adapter_calls(provider)
        try:
            for words, answer in (("7", SHORT_ANSWER), ("120", LONG_ANSWER)):
                async with httpx.AsyncClient() as control:
                    await control.post(f"{fake_url}/_control/{wire}", json={"text": answer})
                for kind, sdk, ours in zip(("json", "stream", "caller key"), before, after, strict=True):
                    if kind == "caller key" and words != "7":
                        continue
                    n = rounds if kind != "caller key" else max(1, rounds // 10)
                    got = await measure_cpu({"sdk": sdk, "ours": ours}, n, warmup=min(20, n))
                    (sdk_wall, sdk_cpu), (our_wall, our_cpu) = got["sdk"], got["ours"]
                    rows.append(
                        f"| {wire} | {kind} | {words} | {sdk_cpu:,.0f} | {our_cpu:,.0f} | "
                        f"{1 - our_cpu / sdk_cpu:.0%} | {sdk_wall:,.0f} | {our_wall:,.0f} |"
                    )
        finally:
            await client.close()
            await provider.aclose()
    return rows


def calls_report(rows: list[str], rounds: int) -> str:
    return "\n".join(
        [
            f"Provider call: the vendor SDK call (before) vs the adapter on openai_wire (now), {rounds} "
            "rounds interleaved (caller key: rounds/10)",
            "",
            "| wire | call | answer words | SDK CPU µs | ours CPU µs | CPU saved | SDK wall p50 µs | "
            "ours wall p50 µs |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--call-rounds", type=int, default=300, help="provider-call rounds (0: skip)")
    parser.add_argument("--skip-router", action="store_true", help="only the provider-call table")
    args = parser.parse_args()

    port = free_port()
    fake = start_fake(port)
    embedded = None
    try:
        fake_url = f"http://127.0.0.1:{port}"
        if not args.skip_router:
            redis_url = os.environ.get("REDIS_URL")
            if not redis_url:
                from app.embedded.redis import EmbeddedRedis

                embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")), "redis")
                redis_url = embedded.start()
            results = asyncio.run(run(args.requests, args.warmup, redis_url, fake_url))
            print(report(results, args.requests), flush=True)
        if args.call_rounds:
            print(f"\nload average {os.getloadavg()[0]:.1f} (1 min)\n", flush=True)
            print(calls_report(asyncio.run(run_calls(args.call_rounds, fake_url)), args.call_rounds))
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
