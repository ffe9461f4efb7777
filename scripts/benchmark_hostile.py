"""`make benchmark-hostile`: what one reader's largest chat request costs everyone else.

Starts the real service (`python -m app serve`, 1 worker, embedded PostgreSQL + Redis in a temporary
DATA_DIR, the demo documents, the fake provider answering at once) and, per scenario:

- **worst block**: `/healthz` is polled every 5 ms from another thread while one hostile request
  runs; the slowest `/healthz` answer is the longest time the worker's event loop could not serve
  anyone (a health check is answered by the same loop);
- **retained/request**: the worker's RSS growth over `--requests` hostile requests (each with its
  own text, so no cache answers them), divided by their number;
- **/healthz under 4**: p50 and max `/healthz` latency while 4 hostile requests run at once.

Scenarios (a reader key, no session unless said; the question matches the demo documents):

- `baseline`: `/v1/chat/completions` with that question alone, for comparison (on a busy machine
  `/healthz` is slow without any hostile request);
- `v1-words`: `/v1/chat/completions` at the 1 MiB body limit, 20 user/assistant pairs of ~25 KB of
  plain words before the question;
- `v1-caps`: `/v1/chat/completions`, 20 pairs of the largest messages the fixed validation accepts
  (4,000 `&` per user message, 16,000 `&` per assistant message: `&` is 5 characters and 3 tokens
  once escaped);
- `chat-session`: `/api/v1/chat` on a stored session whose 20-turn window holds the largest
  question accepted (945 `&`).

A refused request (400/422) is reported as such: its cost is that of refusing it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from scripts.benchmark_load import seed
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, start_server

QUESTION = "How do I rotate an API key?"
TURNS = 20
BODY_LIMIT = 1024 * 1024
STORED_AMPS = 945  # the largest all-`&` question the prompt budget accepts
USER_CAP, ASSISTANT_CAP = 4000, 16000  # app.api.openai_compat's caps after the fix


@dataclass
class Result:
    scenario: str
    status: str
    failed: int
    block_ms: float
    retained_kib: float
    healthz_p50_ms: float
    healthz_max_ms: float


def _words(n_chars: int, salt: str) -> str:
    unit = f"{salt} lorem ipsum dolor sit amet consectetur "
    return (unit * (n_chars // len(unit) + 1))[:n_chars]


def plain_body(salt: str) -> dict[str, Any]:
    return {"model": "rag", "messages": [{"role": "user", "content": f"{QUESTION} ({salt})"}]}


def v1_words_body(salt: str) -> dict[str, Any]:
    pair = (BODY_LIMIT - 4096) // (2 * TURNS)
    messages: list[dict[str, str]] = []
    for i in range(TURNS):
        messages.append({"role": "user", "content": _words(pair, f"{salt}q{i}")})
        messages.append({"role": "assistant", "content": _words(pair, f"{salt}a{i}")})
    return {"model": "rag", "messages": [*messages, {"role": "user", "content": QUESTION}]}


def v1_caps_body(salt: str) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    for i in range(TURNS):
        messages.append({"role": "user", "content": f"{salt}{i} " + "&" * (USER_CAP - 12)})
        messages.append({"role": "assistant", "content": f"{salt}{i} " + "&" * (ASSISTANT_CAP - 12)})
    return {"model": "rag", "messages": [*messages, {"role": "user", "content": QUESTION}]}


def _healthz_poller(base_url: str, stop: threading.Event, samples: list[float]) -> None:
    """A failed probe (the worker was killed under it) counts with the time it took."""
    with httpx.Client(base_url=base_url, timeout=120) as probe:
        while not stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                probe.get("/healthz")
            samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)


def _while_polling(base_url: str, work: Callable[[], Any]) -> tuple[Any, list[float]]:
    samples: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_healthz_poller, args=(base_url, stop, samples))
    poller.start()
    try:
        time.sleep(0.05)
        outcome = work()
        time.sleep(0.05)
    finally:
        stop.set()
        poller.join()
    return outcome, samples


def _worker_rss(server: ServerProcess) -> int:
    """RSS of the server's processes below the master (a worker being replaced may be gone)."""
    total = 0
    for child in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def measure(
    name: str,
    server: ServerProcess,
    post: Callable[[str], httpx.Response],
    requests: int,
) -> Result:
    failed = 0

    def send(salt: str) -> httpx.Response | None:
        """None when the connection broke: the server killed the worker (its timeout)."""
        nonlocal failed
        try:
            return post(salt)
        except httpx.HTTPError:
            failed += 1
            return None

    # warm-up (and the status a client gets)
    first = send(f"w{uuid.uuid4().hex[:6]}")
    status = str(first.status_code) if first is not None else "reset"
    response, samples = _while_polling(server.base_url, lambda: send(f"b{uuid.uuid4().hex[:6]}"))
    block = max(samples) if samples else 0.0
    before = _worker_rss(server)
    for n in range(requests):
        send(f"m{n}{uuid.uuid4().hex[:6]}")
    retained = (_worker_rss(server) - before) / requests / 1024

    def four_at_once() -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: send(f"c{i}{uuid.uuid4().hex[:6]}"), range(4)))

    _, under_four = _while_polling(server.base_url, four_at_once)
    result = Result(
        name,
        f"{status} / {response.status_code if response is not None else 'reset'}",
        failed,
        block,
        retained,
        statistics.median(under_four) if under_four else 0.0,
        max(under_four) if under_four else 0.0,
    )
    print(result, file=sys.stderr)  # a row survives a later scenario's failure
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3, help="hostile requests for the RSS growth")
    parser.add_argument(
        "--scenarios", default="baseline,v1-words,v1-caps,chat-session", help="comma-separated, see above"
    )
    args = parser.parse_args(argv)
    wanted = args.scenarios.split(",")

    fake = FakeLLMServer().start()
    fake.configure("openai", text="Rotate keys from the admin API [1].")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as data_dir:
        env = {
            "DATA_DIR": data_dir,
            "LLM_PROVIDERS": "openai",
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": fake.openai_base_url,
            "RATE_LIMIT_PER_PRINCIPAL": "100000/minute",
            "RATE_LIMIT_PER_TENANT": "100000/minute",
            "RATE_LIMIT_PER_IP": "100000/minute",
            "LOG_LEVEL": "WARNING",
            "CACHE_TTL_S": "0",
        }
        for unset in ("DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL"):
            env[unset] = ""
        print("seeding the demo documents …", file=sys.stderr)
        key = seed(env)
        server = start_server(
            env, Path(data_dir) / "server.log", workers=1, ready_path="/readyz", timeout=180
        )
        try:
            headers = {"X-API-Key": key}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=600) as client:
                client.post("/api/v1/chat", json={"question": QUESTION})

                def v1(make: Callable[[str], dict[str, Any]]) -> Callable[[str], httpx.Response]:
                    return lambda salt: client.post("/v1/chat/completions", json=make(salt))

                if "baseline" in wanted:
                    print("baseline …", file=sys.stderr)
                    results.append(measure("baseline", server, v1(plain_body), args.requests))
                if "v1-words" in wanted:
                    print("v1-words …", file=sys.stderr)
                    results.append(measure("v1-words", server, v1(v1_words_body), args.requests))
                if "v1-caps" in wanted:
                    print("v1-caps …", file=sys.stderr)
                    results.append(measure("v1-caps", server, v1(v1_caps_body), args.requests))
                if "chat-session" in wanted:
                    print("chat-session: filling the stored windows …", file=sys.stderr)

                    # the fill is not what is measured: fill one session, then time later turns on it
                    filled = f"hostile-{uuid.uuid4().hex[:6]}"
                    for _ in range(TURNS):
                        client.post(
                            "/api/v1/chat", json={"question": "&" * STORED_AMPS, "session_id": filled}
                        )
                    results.append(
                        measure(
                            "chat-session",
                            server,
                            lambda salt: client.post(
                                "/api/v1/chat", json={"question": f"{QUESTION} {salt}", "session_id": filled}
                            ),
                            args.requests,
                        )
                    )
        finally:
            server.stop()
            fake.stop()
    print(
        "\n1 worker, fake provider; status: warm-up / measured request; broken connections: "
        "requests whose worker was killed under them (gunicorn's timeout)\n"
    )
    print(
        "| scenario | status | broken connections | worst block ms | retained/request KiB "
        "| /healthz under 4: p50 ms | max ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.scenario} | {r.status} | {r.failed} | {r.block_ms:.0f} | {r.retained_kib:.0f} "
            f"| {r.healthz_p50_ms:.1f} | {r.healthz_max_ms:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
