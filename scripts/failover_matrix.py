"""`make failover-matrix`: the gateway failover suite's 16 fault scenarios against the real service.

Starts, in one temporary directory: an embedded PostgreSQL and Redis, the wire fake of the LLM
providers (tests/fakes/fake_llm_server.py), a switchable TCP proxy in front of the fake's OpenAI
wire (to refuse connections or accept them and stay silent), and the service itself
(`python -m app serve`, one worker) with product defaults and the chain primary = the ``openai``
link (through the proxy), fallback = the ``groq`` link. One document is ingested, so every
question reaches the router.

Each scenario resets the fake and the router's state in Redis (``<prefix>llm:*``), scripts the
fault, sends streamed ``POST /v1/chat/completions`` (model ``rag``) and prints one line: outcome,
attempts per provider (as the service's ``llm_requests_total`` counts them), wall time. Outcomes:

- ``pass``: the whole answer (the scripted text, word for word), ended by ``finish_reason: stop``
  and ``data: [DONE]``, every chunk's ``model`` naming a provider that really answered
  (``rag/openai/…`` or ``rag/groq/…``), within the scenario's time bound, and the scenario's own
  check (e.g. the recovered primary serves again; a content-policy refusal is not routed around);
- ``partial``: the whole answer, but later than the bound or with the scenario's own check failed;
- ``safe``: no whole answer, but an honest ending: an HTTP error, an in-band error after which no
  ``[DONE]`` follows, or a stop-gap answer that says so (``rag/extractive/…``, or the apology);
- ``fail``: anything else: a truncated or wrong answer presented as complete, a ``model`` that
  hides who answered, or no answer within the client's timeout.

``--short`` shortens the long scenarios (recovery: the primary fails for 12 s, not 60); ``--only``
runs some by name; ``--env KEY=VALUE`` changes a server setting (e.g. ``ROUTER_COOLDOWN_S=30``).
Exit status 1 if any scenario fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from app.db.migrations import upgrade_to_head
from app.embedded.postgres import EmbeddedPostgres
from app.embedded.redis import EmbeddedRedis
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, free_port, start_server, upload_and_wait

PREFIX = "fm:"
SENTENCE = "Backups run every night at two and each copy is kept for thirty days [1]."
ANSWER = " ".join([SENTENCE] * 5)  # 70 words; the fake streams one word per chunk
WORDS = len(ANSWER.split(" "))
DOCUMENT = "# Backups\n\nBackups run every night at two. Each backup copy is kept for thirty days.\n"
CLIENT_TIMEOUT_S = 120.0
ANSWER_BOUND_S = 15.0  # the suite's bound for an answer despite a slow or silent primary
RECOVERY_BOUND_S = 30.0  # a recovered primary must serve again within this


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- a TCP proxy that can refuse or swallow connections --------------------------------------------


class SwitchableProxy:
    """Forwards a local port to ``target``; ``mode`` "refuse" closes the listening socket (the
    connection is refused), "silent" accepts and never answers, "forward" relays bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.mode = "forward"
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []  # accepted connections, closed at every switch

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SwitchableProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def switch(self, mode: str) -> None:
        with self._lock:
            if mode == "refuse" and self._listener is not None:
                # shutdown first: close alone leaves a thread blocked in accept() listening
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            elif mode != "refuse" and self._listener is None:
                self._listen()
            self.mode = mode
            # Pooled keep-alive connections must not carry the old mode over.
            for accepted in self._open:
                with contextlib.suppress(OSError):
                    accepted.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    accepted.close()
            self._open.clear()

    def stop(self) -> None:
        self.switch("refuse")

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(client)
            if self.mode == "silent":
                continue  # read nothing, answer nothing
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


# --- one streamed request ----------------------------------------------------------------------


@dataclass
class Reply:
    """What a client saw of one streamed completion."""

    started: float
    elapsed_s: float
    status: int = 0  # 0: no HTTP response
    text: str = ""
    models: list[str] = field(default_factory=list)
    finish: str | None = None
    done: bool = False  # data: [DONE] arrived
    error: dict[str, Any] | None = None  # in-band or HTTP error body
    rag: dict[str, Any] | None = None
    timed_out: bool = False

    @property
    def answered_by(self) -> str | None:
        """The provider the chunks name (the last one, for a continued answer)."""
        if not self.models:
            return None
        parts = self.models[-1].split("/")
        return parts[1] if len(parts) >= 3 else "none"

    @property
    def complete(self) -> bool:
        return self.done and self.finish == "stop" and self.error is None

    @property
    def whole_answer(self) -> bool:
        return self.complete and self.text == ANSWER and self.answered_by in ("openai", "groq")

    @property
    def stop_gap(self) -> bool:
        """A complete answer that says it is a stop-gap: quotes, or the apology."""
        return self.complete and (
            self.answered_by == "extractive" or bool(self.rag and self.rag.get("degraded"))
        )


def ask(client: httpx.Client, question: str) -> Reply:
    started = time.monotonic()
    reply = Reply(started=started, elapsed_s=0.0)
    body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": question}]}
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            reply.status = response.status_code
            if response.status_code != 200:
                response.read()
                with contextlib.suppress(ValueError):
                    reply.error = response.json().get("error") or {"message": response.text}
                reply.error = reply.error or {"message": response.text}
            else:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        reply.done = True
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        reply.error = chunk["error"]
                        continue
                    reply.models.append(chunk.get("model", ""))
                    for choice in chunk.get("choices") or []:
                        reply.text += choice.get("delta", {}).get("content") or ""
                        reply.finish = choice.get("finish_reason") or reply.finish
                    reply.rag = chunk.get("rag") or reply.rag
    except httpx.TimeoutException:
        reply.timed_out = True
    except httpx.HTTPError as exc:
        reply.error = {"message": f"{type(exc).__name__}: {exc}"}
    reply.elapsed_s = time.monotonic() - started
    return reply


# --- scenarios ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    outcome: str
    attempts: dict[str, int]
    wall_s: float
    note: str


@dataclass(frozen=True)
class Scenario:
    name: str
    openai: dict[str, Any] = field(default_factory=dict)  # fake behaviour of the primary
    groq: dict[str, Any] = field(default_factory=dict)  # fake behaviour of the fallback
    proxy: str = "forward"  # the primary's connection: forward, refuse, silent
    bound_s: float = CLIENT_TIMEOUT_S  # a whole answer later than this is partial
    # The scenario's own check on a whole answer: None when it holds, else why it does not.
    check: Callable[[Reply, dict[str, int]], str | None] | None = None
    # The best outcome a correct gateway can reach (a prefill refusal can only end safely).
    best: str = "pass"


def grade(scenario: Scenario, reply: Reply, attempts: dict[str, int]) -> tuple[str, str]:
    if reply.timed_out:
        return "fail", f"no answer within {CLIENT_TIMEOUT_S:.0f} s"
    continued = (reply.rag or {}).get("continued_by")
    started_by = (reply.rag or {}).get("provider") or reply.answered_by
    who = f"{started_by}" + (f", continued by {continued['provider']}" if continued else "")
    if reply.whole_answer:
        if reply.elapsed_s > scenario.bound_s:
            return (
                "partial",
                f"whole answer from {who}, but after {reply.elapsed_s:.1f} s > {scenario.bound_s:.0f} s",
            )
        problem = scenario.check(reply, attempts) if scenario.check else None
        if problem:
            return "partial", problem
        return "pass", f"whole answer from {who}"
    if reply.stop_gap:
        return "safe", f"stop-gap answer from {reply.models[-1]}"
    if reply.error is not None and not reply.done:
        code = reply.error.get("code") or reply.error.get("type") or "error"
        problem = scenario.check(reply, attempts) if scenario.check else None
        if problem:
            return "partial", f"{problem} (status {reply.status}, {code})"
        kind = "in-band error" if reply.status == 200 else f"HTTP {reply.status}"
        return (
            "pass" if scenario.best == "error" else "safe"
        ), f"{kind} {code} after {len(reply.text.split())} words"
    if reply.complete:
        return "fail", f"{len(reply.text.split())} of {WORDS} words presented as complete ({who})"
    return "fail", "the stream ended without [DONE] or an error"


def not_routed_around(reply: Reply, attempts: dict[str, int]) -> str | None:
    if attempts.get("groq", 0):
        return "the refusal was routed around to groq"
    message = json.dumps(reply.error or {}).lower()
    if "content" not in message and "policy" not in message and "filter" not in message:
        return "the provider's reason was not propagated"
    return None


def no_prefill_reason(reply: Reply, attempts: dict[str, int]) -> str | None:
    if reply.error is not None and "prefill" in json.dumps(reply.error).lower():
        return "the prefill refusal was given as the reason"
    return None


def scenarios() -> list[Scenario]:
    cut, stall = {"cut_after_tokens": 40}, {"stall_after_tokens": 20, "stall_for_s": 30}
    slow = {"first_token_delay_s": 20}
    return [
        Scenario("persistent_503", openai={"mode": "error", "status": 503}),
        # 503_then_recovery is its own function (many requests); listed here for --only and order
        Scenario("503_then_recovery"),
        Scenario(
            "429_retry_after",
            openai={"mode": "error", "status": 429, "retry_after": 2},
            bound_s=ANSWER_BOUND_S,
        ),
        Scenario("connection_refused", proxy="refuse", bound_s=ANSWER_BOUND_S),
        Scenario("silent_accept", proxy="silent", bound_s=ANSWER_BOUND_S),
        Scenario("slow_first_token", openai=slow, bound_s=ANSWER_BOUND_S),
        Scenario("cut_mid_stream", openai={"mode": "cut", **cut}),
        Scenario("stall_mid_stream", openai={"mode": "stall", **stall}),
        Scenario("invalid_chunk", openai={"invalid_chunk_after": 30}),
        Scenario("missing_done", openai={"omit_done": True}),
        Scenario(
            "prefill_refused_on_fallback",
            openai={"mode": "cut", **cut},
            groq={"prefill": "refuse"},
            check=no_prefill_reason,
            best="safe",
        ),
        # The fake's content-policy fault comes with the circuit-breaker work (h26a): a 400
        # ``content_policy_violation``; the gateway must neither retry nor fail over.
        Scenario(
            "content_policy_400",
            openai={"mode": "content_policy"},
            check=not_routed_around,
            best="error",
        ),
        Scenario("malformed_json_body", openai={"wrong_body": "broken_json"}),
        Scenario("wrong_content_type", openai={"wrong_body": "html"}),
        Scenario("empty_completion", openai={"mode": "empty"}),
        # The fallback is slow too, yet inside its first-token budget (*_FIRST_TOKEN_TIMEOUT_S 10).
        Scenario(
            "huge_latency_on_fallback_too",
            openai=slow,
            groq={"first_token_delay_s": 8},
            bound_s=2 * ANSWER_BOUND_S,
        ),
    ]


class Matrix:
    def __init__(self, root: Path, env_overrides: dict[str, str]) -> None:
        self.root = root
        self.env_overrides = env_overrides
        self.postgres: EmbeddedPostgres | None = None
        self.redis_server: EmbeddedRedis | None = None
        self.fake: FakeLLMServer | None = None
        self.proxy: SwitchableProxy | None = None
        self.server: ServerProcess | None = None
        self.redis: redis.Redis | None = None
        self.client: httpx.Client | None = None

    def start(self) -> None:
        say("starting embedded PostgreSQL and Redis, the fake providers and the service …")
        self.postgres = EmbeddedPostgres(self.root / "pg")
        database_url = self.postgres.start()
        upgrade_to_head(database_url)
        self.redis_server = EmbeddedRedis(self.root, "redis")
        redis_url = self.redis_server.start()
        self.redis = redis.Redis.from_url(redis_url)
        self.fake = FakeLLMServer().start()
        fake_port = int(self.fake.url.rsplit(":", 1)[1])
        self.proxy = SwitchableProxy(("127.0.0.1", fake_port)).start()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CACHE_REDIS_URL": "",
            "REDIS_KEY_PREFIX": PREFIX,
            "DATA_DIR": str(self.root / "data"),
            "LLM_PROVIDERS": "openai,groq",
            "OPENAI_API_KEY": "matrix-key-openai",
            "OPENAI_BASE_URL": self.proxy.url + "/v1",
            "GROQ_API_KEY": "matrix-key-groq",
            "GROQ_BASE_URL": self.fake.groq_base_url,
            "RATE_LIMIT_PER_PRINCIPAL": "100000/minute",
            "RATE_LIMIT_PER_IP": "100000/minute",
            "RATE_LIMIT_PER_TENANT": "100000/minute",
            "RUN_WORKER_IN_PROCESS": "true",
            "EMBEDDING_WARM_UP": "true",
            "LOG_LEVEL": "WARNING",
            **self.env_overrides,
        }
        key = create_api_key(env, tenant="matrix", role="editor")
        self.server = start_server(
            env, self.root / "server.log", workers=1, ready_path="/readyz", timeout=180
        )
        headers = {"X-API-Key": key}
        upload_and_wait(self.server.base_url, headers, DOCUMENT, filename="backups.md", timeout=180)
        self.client = httpx.Client(
            base_url=self.server.base_url, headers=headers, timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=5)
        )

    def stop(self) -> None:
        steps: list[Callable[[], object]] = []
        if self.client is not None:
            steps.append(self.client.close)
        if self.server is not None:
            steps.append(self.server.stop)
        for service in (self.proxy, self.fake, self.redis_server, self.postgres):
            if service is not None:
                steps.append(service.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:
                say(f"while stopping: {type(exc).__name__}: {exc}")

    # per scenario

    def reset(self, scenario: Scenario) -> None:
        assert self.fake is not None
        assert self.proxy is not None
        assert self.redis is not None
        self.fake.reset()
        for key in self.redis.scan_iter(match=f"{PREFIX}llm:*"):
            self.redis.delete(key)
        self.proxy.switch(scenario.proxy)
        self.fake.configure("openai", text=ANSWER, **scenario.openai)
        self.fake.configure("groq", text=ANSWER, **scenario.groq)

    def attempts(self) -> dict[str, int]:
        """Provider attempts so far as the service counts them (``llm_requests_total`` of its
        /metrics, every outcome): a refused or swallowed connection never reaches the fake."""
        assert self.client is not None
        totals = {"openai": 0, "groq": 0}
        for line in self.client.get("/metrics").text.splitlines():
            if not line.startswith("llm_requests_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            for name in totals:
                if f'provider="{name}"' in labels:
                    totals[name] += int(float(value))
        return totals

    def run(self, scenario: Scenario, question: str) -> Result:
        started = time.monotonic()
        try:
            self.reset(scenario)
        except httpx.HTTPStatusError as exc:
            return Result(
                scenario.name, "skipped", {}, 0.0, f"the fake cannot script it: {exc.response.text[:120]}"
            )
        assert self.client is not None
        before = self.attempts()
        reply = ask(self.client, question)
        attempts = {name: n - before[name] for name, n in self.attempts().items()}
        outcome, note = grade(scenario, reply, attempts)
        return Result(scenario.name, outcome, attempts, time.monotonic() - started, note)

    def run_recovery(self, scenario: Scenario, down_s: float, interval_s: float, requests: int) -> Result:
        """The primary answers 503 for ``down_s``, then is healthy; a streamed request every
        ``interval_s``. pass: every request gets the whole answer and the primary serves again
        within RECOVERY_BOUND_S of its recovery; fail: it does not."""
        assert self.fake is not None
        assert self.client is not None
        self.reset(Scenario(scenario.name, openai={"mode": "error", "status": 503}))
        before = self.attempts()
        started = time.monotonic()
        recovered_at = started + down_s
        recovered = False
        replies: list[Reply] = []
        for n in range(requests):
            send_at = started + n * interval_s
            time.sleep(max(0.0, send_at - time.monotonic()))
            if not recovered and time.monotonic() >= recovered_at:
                self.fake.configure("openai", text=ANSWER)
                recovered = True
            replies.append(ask(self.client, f"How long are backups kept? (recovery, request {n})"))
        attempts = {name: n - before[name] for name, n in self.attempts().items()}
        wall = time.monotonic() - started
        broken = [r for r in replies if not r.whole_answer]
        back = next((r for r in replies if r.started >= recovered_at and r.answered_by == "openai"), None)
        served = f"{len(replies) - len(broken)}/{len(replies)} whole answers"
        if back is None:
            return Result(
                scenario.name, "fail", attempts, wall, f"{served}; the recovered primary never served again"
            )
        delay = back.started - recovered_at
        if delay > RECOVERY_BOUND_S:
            return Result(
                scenario.name, "fail", attempts, wall, f"{served}; primary back {delay:.0f} s after recovery"
            )
        if broken:
            worst = grade(scenario, broken[0], attempts)[0]
            return Result(
                scenario.name, worst, attempts, wall, f"{served}; primary back {delay:.0f} s after recovery"
            )
        return Result(
            scenario.name, "pass", attempts, wall, f"{served}; primary back {delay:.0f} s after recovery"
        )


def table(results: list[Result], header: str) -> str:
    lines = [
        header,
        "",
        "| scenario | outcome | openai attempts | groq attempts | wall s | what the client saw |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.outcome} | {r.attempts.get('openai', '-')} | {r.attempts.get('groq', '-')} "
            f"| {r.wall_s:.1f} | {r.note} |"
        )
    counts = {
        kind: sum(r.outcome == kind for r in results)
        for kind in ("pass", "partial", "safe", "fail", "skipped")
    }
    lines += ["", " · ".join(f"{kind} {n}" for kind, n in counts.items() if n or kind != "skipped")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--short", action="store_true", help="shorten the recovery scenario (12 s down, not 60)"
    )
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a server setting")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.env)
    chosen = [s for s in scenarios() if not args.only or s.name in args.only.split(",")]
    down_s, interval_s, count = (12.0, 2.0, 22) if args.short else (60.0, 4.0, 20)

    root = Path(tempfile.mkdtemp(prefix="failover-matrix-"))
    matrix = Matrix(root, overrides)
    results: list[Result] = []
    try:
        matrix.start()
        for n, scenario in enumerate(chosen):
            say(f"scenario {scenario.name} …")
            if scenario.name == "503_then_recovery":
                result = matrix.run_recovery(scenario, down_s, interval_s, count)
            else:
                result = matrix.run(scenario, f"How long are backups kept? ({scenario.name}, {n})")
            say(f"  {result.outcome}: {result.note}")
            results.append(result)
    finally:
        matrix.stop()
        if args.keep:
            say(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    header = (
        f"Failover matrix: primary openai link, fallback groq link, wire fake; "
        f"{platform.node()} ({os.cpu_count()} cores, load average {load:.1f} at the end)"
        + (f"; settings {overrides}" if overrides else "; product defaults")
        + ("; --short" if args.short else "")
    )
    print(table(results, header))
    return 1 if any(r.outcome == "fail" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
