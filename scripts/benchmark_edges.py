"""The fixed cost of a request's edges, in process: the middleware, authenticate-first, routing,
dependency solving, body parsing, response serialization and the access-log line, with nothing
behind them.

    python -m scripts.benchmark_edges --requests 2000

The app is ``create_app``'s, with JSON logs at INFO (production's default) written to /dev/null.
Its lifespan is not run: the resources the endpoints read are stand-ins that answer at once (a
principal for any key, every budget allowed, a fixed answer), so what is measured is what every
request pays before and after the chat pipeline. Prints the CPU time (``time.process_time``: less
sensitive than wall time to a shared machine) per request, and per access-log line alone. Compare
two checkouts by running this in each, in turns, and taking medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import structlog

from app.auth.principal import Principal, Role
from app.chat.types import ChatAnswer
from app.limits.states import LimitState
from app.main import create_app
from app.observability.telemetry import build_metrics
from app.security.proxies import TrustedProxies
from app.settings import Settings

KEY = "rk_0123456789ab_" + "s" * 32
PRINCIPAL = Principal(id=f"key:{uuid.uuid4()}", tenant_id=uuid.uuid4(), role=Role.reader, kind="api_key")
ANSWER = ChatAnswer(
    answer="Here is what the documents say [1].",
    sources=[],
    provider="openai",
    model="gpt-4o-mini",
    cached=True,
    degraded=False,
    trace_id="0" * 32,
    usage=None,
    latency_ms=1.0,
    session_id=None,
    retrieval_query="How does the answer cache work?",
)
QUESTION = b'{"question":"How does the answer cache work?"}'


class InstantLimiter:
    proxies = TrustedProxies()
    token_budgets = None

    def ip_bucket(self, scope: Any) -> str:
        return "127.0.0.1"

    async def hit_many(self, charges: Any, *, reserve: Any = None) -> list[LimitState]:
        return [LimitState(budget, 1000, 999, time.time() + 60, "1000 per 1 minute") for budget, _ in charges]


class InstantAuthenticator:
    def trusted(self, credential: str) -> Principal | None:
        return PRINCIPAL  # as a key is once verified, for all but one request a second

    async def principal_for(self, credential: str) -> Principal:
        return PRINCIPAL


class InstantChat:
    async def answer(self, principal: Principal, chat: Any) -> ChatAnswer:
        return ANSWER


def stand_in_resources(settings: Settings) -> SimpleNamespace:
    return SimpleNamespace(
        settings=settings,
        limiter=InstantLimiter(),
        authenticator=InstantAuthenticator(),
        chat=InstantChat(),
        stream_slots=None,
        caller_chains=None,
        telemetry=SimpleNamespace(metrics=build_metrics(settings)),
    )


def http_scope(method: str, path: str, body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"wrk"),
        (b"x-api-key", KEY.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def cpu_per_request(app: Any, method: str, path: str, body: bytes, requests: int) -> float:
    """CPU microseconds per request, after 200 requests of warm-up; every answer must be a 200."""
    statuses: set[int] = set()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def one() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        await app(http_scope(method, path, body), receive, send)

    for _ in range(200):
        await one()
    started = time.process_time()
    for _ in range(requests):
        await one()
    elapsed = time.process_time() - started
    if statuses != {200}:
        raise RuntimeError(f"{method} {path} answered {sorted(statuses)}")
    return elapsed / requests * 1e6


def cpu_per_call(call: Callable[[], None], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    settings = Settings(
        database_url="postgresql+psycopg://unused@127.0.0.1/unused",
        redis_url="redis://127.0.0.1:1/0",
        log_level="INFO",
        log_json=True,
        debug=False,
    )
    app = create_app(settings)
    app.state.resources = stand_in_resources(settings)
    access = structlog.get_logger("app.access")
    rows: list[tuple[str, float]] = []
    stderr = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull  # the log handler writes to whatever sys.stderr is
        try:
            for method, path, body in (("POST", "/api/v1/chat", QUESTION), ("GET", "/healthz", b"")):
                us = asyncio.run(cpu_per_request(app, method, path, body, args.requests))
                rows.append((f"{method} {path}", us))
            line = lambda: access.info(  # noqa: E731
                "request",
                method="POST",
                path="/api/v1/chat",
                route="/api/v1/chat",
                status=200,
                duration_ms=1.23,
                principal_id=PRINCIPAL.id,
            )
            rows.append(("access-log line alone", cpu_per_call(line, args.requests)))
        finally:
            sys.stderr = stderr
    print(f"\n{args.requests} requests each; load average {os.getloadavg()[0]:.2f}\n")
    print("| what | CPU µs per request |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
