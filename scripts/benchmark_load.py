"""`make benchmark-load`: this service beside the LiteLLM proxy under the same load, in one run.

Everything is local and started here:
- the fake LLM server (OpenAI wire protocol, zero latency) in its own process;
- the LiteLLM proxy (`litellm --num_workers 1`), installed into a throwaway venv under
  ``~/.cache/ragchat-bench`` (never into the project's locks), passing requests to the fake;
- this service (`python -m app serve --workers N`, embedded PostgreSQL + Redis in a temporary
  DATA_DIR, the demo documents seeded, high rate limits, only `openai` configured, pointed at the
  fake), for N = 1 and 2.

Load comes from `wrk` (Debian's package; installed with apt when missing and running as root),
with `--latency` for percentiles. Scenarios: the fake directly; LiteLLM pass-through; our cache
hit (one question repeated); our uncached answer (every request a new question: query embedding,
hybrid retrieval, prompt, provider call); and SSE time to first ``delta`` added by the service
(measured sequentially, against the provider's own time to first token). Prints one markdown
table. Numbers on a shared 2-core machine are noisy: compare rows of one run, not runs.

The rows run one target after another ("before" first), so a load that rises during the run
counts against the later rows. ``--rounds N`` then measures the rows the goals read again (c=1 on
one worker, c=16 on the most workers), with the fake, LiteLLM and each build's services all up at
once, in turn, N times, and the goals take the median of those rounds.

``--variant NAME ENV=VALUE…`` (repeatable) adds this checkout run with other settings as a build of
its own, measured like the others (in turn too, with ``--rounds``): a setting's effect, measured
beside the defaults, e.g. ``--variant two-threads EMBEDDING_QUERY_THREADS=2``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import httpx

from tests.support.server import ROOT, ServerProcess, start_server

# The newest LiteLLM whose `proxy` extra installs from the package index this machine reaches
# (checked 2026-12-07): 1.108.8 and later pin `litellm-proxy-extras`/`litellm-proxy` releases that
# the index does not carry. LITELLM_VERSION=... measures another one.
LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "1.108.7")
BENCH_HOME = Path(os.environ.get("RAGCHAT_BENCH_HOME", Path.home() / ".cache" / "ragchat-bench"))
MODEL = "gpt-4o-mini"
LITELLM_MASTER_KEY = "sk-bench-" + "0" * 48
ANSWER = "Here is what the documents say [1]."


@dataclass(frozen=True)
class Result:
    scenario: str
    workers: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    connections: int = 0
    requests: int = 0
    provider_calls: int | None = None  # the fake's chat completions during the row, when counted
    rounds: int = 0  # >0: the median of this many runs taken in turn with the others (--rounds)


# --- tools ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit("wrk is not installed; install Debian's package: apt-get install -y wrk")
    print("installing wrk …", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk still missing after apt-get install")


def ensure_litellm() -> Path:
    """The LiteLLM proxy in a venv of its own (it resolves its dependencies at install time: a
    benchmark tool, never part of what the service installs)."""
    venv = BENCH_HOME / f"litellm-{LITELLM_VERSION}"
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not up within {timeout}s")


@contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# --- wrk ------------------------------------------------------------------------------------------

_LUA = """
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = id
end
request = function()
  counter = counter + 1
  local body = BODY
  if UNIQUE then
    body = string.format(BODY, RUN .. "-t" .. thread_id .. "-" .. counter)
  end
  return wrk.format("POST", PATH, HEADERS, body)
end
"""


def lua_script(path: str, body: str, headers: dict[str, str], unique: bool) -> str:
    lua_headers = "{" + ", ".join(f'["{k}"] = {json.dumps(v)}' for k, v in headers.items()) + "}"
    return (
        f"PATH = {json.dumps(path)}\nBODY = {json.dumps(body)}\nHEADERS = {lua_headers}\n"
        f"UNIQUE = {'true' if unique else 'false'}\n"
        # Each run its own questions: a later row (or a restarted server on the same data) must
        # not find the answers of an earlier one in the cache.
        f'RUN = "{uuid.uuid4().hex[:8]}"\n' + _LUA
    )


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    wrk: str,
    base_url: str,
    path: str,
    body: str,
    *,
    headers: dict[str, str],
    unique: bool = False,
    connections: int,
    seconds: int,
    scenario: str,
    workers: str,
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(path, body, {"Content-Type": "application/json", **headers}, unique))
    try:
        out = subprocess.run(
            [
                wrk,
                "-t",
                str(min(2, connections)),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--latency",
                "-s",
                script.name,
                base_url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Result(scenario, workers, rps, p50, p99, errors, connections, requests)


# --- SSE time to first delta -------------------------------------------------------------------------


def first_token_ms(client: httpx.Client, url: str, body: dict[str, object], marker: bytes) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if marker in chunk:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError(f"no {marker!r} in the stream of {url}")


def ttft_added(server: ServerProcess, key: str, fake_url: str, samples: int) -> tuple[float, float]:
    """p50 time to the first delta through the service minus the provider's own, and the p50 of the
    service's retrieval phase (time to the ``sources`` event), both on new questions."""
    direct, through, to_sources = [], [], []
    with httpx.Client(timeout=30) as fake, httpx.Client(timeout=30, headers={"X-API-Key": key}) as ours:
        for n in range(samples):
            request = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"q{n}"}]}
            direct.append(first_token_ms(fake, fake_url + "/v1/chat/completions", request, b'"content"'))
            question = {"question": f"How are streaming answers sent, case {n}?", "stream": True}
            to_sources.append(
                first_token_ms(ours, server.base_url + "/api/v1/chat", question, b"event: sources")
            )
            question = {"question": f"How are streaming answers sent, variant {n}?", "stream": True}
            through.append(first_token_ms(ours, server.base_url + "/api/v1/chat", question, b"event: delta"))
    return statistics.median(through) - statistics.median(direct), statistics.median(to_sources)


# --- memory under a long mixed load ----------------------------------------------------------------


def worker_rss_mb(server: ServerProcess) -> dict[int, float]:
    """RSS of each gunicorn worker (the launcher's grandchildren), in MB."""
    import psutil

    launcher = psutil.Process(server.process.pid)
    workers = [grandchild for child in launcher.children() for grandchild in child.children()]
    return {w.pid: w.memory_info().rss / 1e6 for w in workers}


def soak(wrk: str, server: ServerProcess, key: str, seconds: int, every_s: int) -> list[tuple[int, float]]:
    """Mixed load (a third cache hits, two thirds new questions) for ``seconds``; the mean worker
    RSS every ``every_s`` seconds."""
    headers = {"X-API-Key": key}
    unique = UNIQUE
    curve = [(0, statistics.fmean(worker_rss_mb(server).values()))]
    elapsed = 0
    while elapsed < seconds:
        step = min(every_s, seconds - elapsed)
        hit = json.dumps({"question": f"How are streaming answers sent, part {elapsed % 7}?"})
        run_wrk(
            wrk,
            server.base_url,
            "/api/v1/chat",
            hit,
            headers=headers,
            scenario="soak",
            workers="",
            connections=4,
            seconds=max(1, step // 3),
        )
        run_wrk(
            wrk,
            server.base_url,
            "/api/v1/chat",
            unique,
            headers=headers,
            unique=True,
            scenario="soak",
            workers="",
            connections=4,
            seconds=max(1, step - step // 3),
        )
        elapsed += step
        curve.append((elapsed, statistics.fmean(worker_rss_mb(server).values())))
    return curve


# --- the systems ------------------------------------------------------------------------------------


@contextmanager
def fake_llm(workdir: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "tests.fakes.fake_llm_server", "--host", "127.0.0.1", "--port", str(port)]
    with process(args, workdir / "fake.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url + "/_control/stats", 30, proc, "fake LLM server")
        httpx.post(url + "/_control/openai", json={"text": ANSWER}, timeout=5).raise_for_status()
        yield url


@contextmanager
def litellm_proxy(binary: Path, fake_url: str, workdir: Path) -> Iterator[str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            model_list:
              - model_name: {MODEL}
                litellm_params:
                  model: openai/{MODEL}
                  api_base: {fake_url}/v1
                  api_key: bench-key
            """
        )
    )
    port = free_port()
    args = [
        str(binary),
        "--config",
        str(config),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--num_workers",
        "1",
    ]
    # Default logging, as ours; it authenticates callers as we do (1.108 refuses to start
    # without a master key).
    env = {
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
    }
    with process(args, workdir / "litellm.log", env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url + "/health/liveliness", 180, proc, "LiteLLM proxy")
        yield url


def seed(env: dict[str, str], root: Path = ROOT) -> str:
    """The demo documents in the dev tenant, and a reader key for it (the printed key), by the code
    of the checkout at ``root``."""
    run = {"cwd": root, "env": {**os.environ, **env}, "check": True}
    subprocess.run(
        [sys.executable, "-m", "app", "seed"], **run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "keys",
            "create",
            "--tenant",
            "dev",
            "--role",
            "reader",
            "--name",
            "bench",
        ],
        **run,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip()


def service_env(data_dir: Path, fake_url: str) -> dict[str, str]:
    """Production defaults (JSON logs at INFO, answer cache on), but limits no benchmark reaches,
    only `openai` configured and pointed at the fake."""
    return {
        "DATA_DIR": str(data_dir),
        "LLM_PROVIDERS": "openai",
        "OPENAI_API_KEY": "bench-key",
        "OPENAI_BASE_URL": fake_url + "/v1",
        "RATE_LIMIT_PER_PRINCIPAL": "100000000/minute",
        "RATE_LIMIT_PER_TENANT": "100000000/minute",
        "RATE_LIMIT_PER_IP": "100000000/minute",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CACHE_REDIS_URL": "",
        "EMBEDDING_WARM_UP": "true",
    }


@dataclass(frozen=True)
class Build:
    """A version of this service: the checkout's own code, or an earlier commit's (``--baseline``)."""

    label: str
    root: Path
    # The packages its locks pin that this venv lacks or has at another version (``PYTHONPATH``),
    # and a ``--variant``'s settings.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """Its data directory's and logs' name: builds of one checkout (variants) differ by label."""
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


def variant_build(words: list[str], commit: str) -> Build:
    """``--variant NAME ENV=VALUE…``: this checkout's code, run with those settings."""
    name, assignments = (words[0], words[1:]) if words else ("", [])
    env = dict(word.split("=", 1) for word in assignments if "=" in word and not word.startswith("="))
    if not name or "=" in name or not assignments or len(env) != len(assignments):
        raise ValueError(f"--variant {' '.join(words)!r}: expected a name, then ENV=VALUE settings")
    return Build(f"ours ({commit}) with {name}", ROOT, env)


@dataclass
class Measured:
    results: list[Result]
    ttft: dict[str, tuple[float, float]]
    curve: list[tuple[int, float]]
    env: dict[str, str] = field(default_factory=dict)  # the seeded service's, for --rounds
    key: str = ""


# One question repeated, answered from the cache after its first answer. It must be one the demo
# documents answer well clear of the relevance gate: a refused question is never cached, and its
# rows would measure the refusal (see ``served_from_the_cache``).
HIT = json.dumps({"question": "How are streaming answers sent?"})
# A new question each time that the demo documents answer (one they don't is answered "nothing
# matches" by the relevance gate, with no provider call: see `answered_by_the_provider`).
UNIQUE = json.dumps({"question": "How are streaming answers sent, case %s?"})
# The chat completion sent to the fake directly and through the LiteLLM proxy.
COMPLETION = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "How long are backups kept?"}]}
)


def provider_calls(fake_url: str) -> int:
    stats = httpx.get(fake_url + "/_control/stats", timeout=5).json()
    return int(stats["openai"]["chat_requests"])


def served_from_the_cache(base_url: str, headers: dict[str, str]) -> None:
    """The cache-hit rows must measure cache hits: the question answered once, then from the cache."""
    for attempt in ("first", "second"):
        answer = httpx.post(
            base_url + "/api/v1/chat",
            content=HIT,
            headers={**headers, "Content-Type": "application/json"},
            timeout=60,
        ).json()
        if attempt == "first" and answer.get("provider") in (None, "none"):
            sys.exit(f"the cache-hit question was not answered (so never cached): {answer}")
    if answer.get("cached") is not True:
        sys.exit(f"the cache-hit question was not served from the cache the second time: {answer}")


def answered_by_the_provider(base_url: str, headers: dict[str, str]) -> None:
    """The uncached rows must measure retrieval and the provider call, not the gate's refusal."""
    body = json.loads(UNIQUE.replace("%s", "5e1f2a9c-t1-999"))  # as wrk's script fills it in
    answer = httpx.post(base_url + "/api/v1/chat", json=body, headers=headers, timeout=60).json()
    if answer.get("provider") != "openai":
        sys.exit(f"the uncached question was not answered by the fake provider: {answer}")


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def _pins(root: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in sorted(root.glob("requirements*.txt")):
        pins.update(
            (name.lower().replace("_", "-"), version) for name, version in _PIN.findall(lock.read_text())
        )
    return pins


def baseline_packages(baseline: Path, target: Path) -> dict[str, str]:
    """The packages an earlier commit's locks pin that this checkout's do not (removed since, or at
    another version), installed without dependencies into ``target`` and put first on its
    ``PYTHONPATH``, so the earlier code runs in this venv with what it was written against."""
    ours = _pins(ROOT)
    wanted = sorted(
        f"{name}=={version}" for name, version in _pins(baseline).items() if ours.get(name) != version
    )
    if not wanted:
        return {}
    print(f"baseline: installing {', '.join(wanted)} beside this venv …", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            *wanted,
        ],
        check=True,
    )
    return {"PYTHONPATH": str(target)}


@contextmanager
def baseline_checkout(ref: str, workdir: Path) -> Iterator[Build]:
    """``ref`` checked out beside this one (a detached git worktree), removed afterwards."""
    target = workdir / "baseline"
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(target), commit], check=True
    )
    try:
        yield Build(f"before ({commit})", target, baseline_packages(target, workdir / "baseline-packages"))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(target)], check=False)


def measure_service(
    wrk: str, build: Build, workdir: Path, fake_url: str, args: argparse.Namespace
) -> Measured:
    """Cache hit and uncached answers at ``--connections`` for each worker count, then at one
    connection on one worker (the latency the service adds), and SSE time to first delta."""
    data_dir = workdir / f"service-{build.slug}"
    data_dir.mkdir()
    env = {**service_env(data_dir, fake_url), **build.env}
    print(f"{build.label}: seeding the demo documents …", file=sys.stderr)
    key = seed(env, build.root)
    headers = {"X-API-Key": key}
    measured = Measured([], {}, [], env, key)
    worker_counts = [int(w) for w in args.workers.split(",")]
    for workers in worker_counts:
        server = start_server(
            env,
            workdir / f"server-{build.slug}-{workers}.log",
            workers=workers,
            ready_path="/readyz",
            timeout=240,
            cwd=build.root,
        )
        try:
            row = partial(
                run_wrk, wrk, server.base_url, "/api/v1/chat", headers=headers, workers=str(workers)
            )

            served_from_the_cache(server.base_url, headers)
            run_wrk(
                wrk,
                server.base_url,
                "/api/v1/chat",
                HIT,
                headers=headers,
                scenario="warm-up",
                workers=str(workers),
                connections=4,
                seconds=3,
            )
            answered_by_the_provider(server.base_url, headers)
            shapes = [(args.connections, args.seconds)]
            if workers == worker_counts[0]:
                shapes.append((1, args.single_seconds))
            for connections, seconds in shapes:
                for scenario, body, unique in (
                    ("cache hit", HIT, False),
                    ("uncached RAG answer", UNIQUE, True),
                ):
                    calls_before = provider_calls(fake_url)
                    result = row(
                        body,
                        unique=unique,
                        scenario=f"{build.label}, {scenario}",
                        connections=connections,
                        seconds=seconds,
                    )
                    # What was measured: every uncached request reaches the provider, no
                    # cache hit does.
                    calls = provider_calls(fake_url) - calls_before
                    measured.results.append(replace(result, provider_calls=calls))
            if args.ttft_samples:
                measured.ttft[f"{build.label}, {workers}"] = ttft_added(
                    server, key, fake_url, args.ttft_samples
                )
            if args.soak and workers == max(worker_counts):
                measured.curve = soak(wrk, server, key, args.soak, max(10, args.soak // 10))
        finally:
            server.stop()
    return measured


def proxy_rows(
    wrk: str, litellm: Path, fake_url: str, workdir: Path, args: argparse.Namespace
) -> list[Result]:
    rows = []
    with litellm_proxy(litellm, fake_url, workdir) as proxy_url:
        for connections, seconds in ((4, 3), (args.connections, args.seconds), (1, args.single_seconds)):
            result = run_wrk(
                wrk,
                proxy_url,
                "/chat/completions",
                COMPLETION,
                headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
                scenario=f"LiteLLM {LITELLM_VERSION} proxy (pass-through, no RAG)",
                workers="1",
                connections=connections,
                seconds=seconds,
            )
            if connections != 4:  # the first run warms it up
                rows.append(result)
    return rows


def provider_rows(wrk: str, fake_url: str, args: argparse.Namespace) -> list[Result]:
    return [
        run_wrk(
            wrk,
            fake_url,
            "/v1/chat/completions",
            COMPLETION,
            headers={"Authorization": "Bearer x"},
            scenario="fake provider direct",
            workers="-",
            connections=connections,
            seconds=seconds,
        )
        for connections, seconds in ((args.connections, args.seconds), (1, args.single_seconds))
    ]


@dataclass(frozen=True, eq=False)
class Target:
    """One thing measured in ``--rounds``: a URL, the request, the load, and how its row is named."""

    scenario: str
    url: str
    path: str
    body: str
    headers: dict[str, str]
    unique: bool = False
    workers: str = "1"
    connections: int = 1


def median_row(runs: list[Result]) -> Result:
    """One row for a target's rounds: the median of their req/s, p50 and p99, all their requests."""
    first = runs[0]
    return replace(
        first,
        requests_per_s=statistics.median(r.requests_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        requests=sum(r.requests for r in runs),
        rounds=len(runs),
    )


def in_turn(measure: Callable[[Target], Result], targets: list[Target], rounds: int) -> list[Result]:
    """Each target measured ``rounds`` times, one after the other in every round, so a load that
    rises or falls during the run reaches them all alike (the rows above run one target after
    another, the "before" build first); a row per target, the median of its rounds."""
    runs: dict[Target, list[Result]] = {target: [] for target in targets}
    for _ in range(rounds):
        for target in targets:
            runs[target].append(measure(target))
    return [median_row(results) for results in runs.values()]


def rounds_in_turn(
    wrk: str,
    litellm: Path | None,
    builds: list[tuple[Build, Measured]],
    workdir: Path,
    fake_url: str,
    args: argparse.Namespace,
) -> list[Result]:
    """``--rounds``: the rows the goals read, again, with the fake, LiteLLM and every build's
    services (one worker for c=1, the most workers for c=``--connections``) all up at once and
    measured in turn, ``--round-seconds`` each."""
    wide = max(int(w) for w in args.workers.split(","))
    targets = [Target("fake provider direct", fake_url, "/v1/chat/completions", COMPLETION, {}, workers="-")]
    with ExitStack() as stack:
        if litellm is not None:
            rounds_dir = workdir / "rounds"
            rounds_dir.mkdir(exist_ok=True)
            proxy_url = stack.enter_context(litellm_proxy(litellm, fake_url, rounds_dir))
            headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
            proxy = f"LiteLLM {LITELLM_VERSION} proxy (pass-through, no RAG)"
            targets.append(Target(proxy, proxy_url, "/chat/completions", COMPLETION, headers))
            targets.append(
                Target(
                    proxy, proxy_url, "/chat/completions", COMPLETION, headers, connections=args.connections
                )
            )
        for build, measured in builds:
            headers = {"X-API-Key": measured.key}
            for workers, connections in ((1, 1), (wide, args.connections)):
                server = start_server(
                    measured.env,
                    workdir / f"server-{build.slug}-rounds-{workers}.log",
                    workers=workers,
                    ready_path="/readyz",
                    timeout=240,
                    cwd=build.root,
                )
                stack.callback(server.stop)
                served_from_the_cache(server.base_url, headers)
                answered_by_the_provider(server.base_url, headers)
                for scenario, body, unique in (
                    ("cache hit", HIT, False),
                    ("uncached RAG answer", UNIQUE, True),
                ):
                    targets.append(
                        Target(
                            f"{build.label}, {scenario}",
                            server.base_url,
                            "/api/v1/chat",
                            body,
                            headers,
                            unique=unique,
                            workers=str(workers),
                            connections=connections,
                        )
                    )

        def measure(target: Target) -> Result:
            return run_wrk(
                wrk,
                target.url,
                target.path,
                target.body,
                headers=target.headers,
                unique=target.unique,
                connections=target.connections,
                seconds=args.round_seconds,
                scenario=target.scenario,
                workers=target.workers,
            )

        for target in targets:  # a first run of each, not counted: connections and caches warm up
            measure(target)
        return in_turn(measure, targets, args.rounds)


def _load_average() -> str:
    return " / ".join(f"{n:.1f}" for n in os.getloadavg())


def _find(
    results: list[Result], prefix: str, workers: str, connections: int, *, rounds: bool = False
) -> Result | None:
    return next(
        (
            r
            for r in results
            if r.scenario.startswith(prefix)
            and r.workers == workers
            and r.connections == connections
            and (r.rounds > 0) == rounds
        ),
        None,
    )


def print_goals(results: list[Result], builds: list[Build], connections: int) -> None:
    """The issue's goals, as ratios within this run."""
    # From the rows measured in turn (--rounds) when there are any.
    in_turn = any(r.rounds for r in results)
    proxy = _find(results, "LiteLLM", "1", connections, rounds=in_turn)
    proxy_single = _find(results, "LiteLLM", "1", 1, rounds=in_turn)
    fake_single = _find(results, "fake provider", "-", 1, rounds=in_turn)
    if proxy is None or proxy_single is None or fake_single is None:
        return
    proxy_added = proxy_single.p50_ms - fake_single.p50_ms

    def ratio(r: Result | None) -> str:
        return f"{r.requests_per_s / proxy.requests_per_s:.2f}x" if r else "-"

    def added(r: Result | None) -> str:
        return f"{r.p50_ms - fake_single.p50_ms:.1f}" if r else "-"

    turn = ", in turn" if in_turn else ""
    rows: list[tuple[str, str, list[str]]] = [
        (f"cache hit req/s / LiteLLM's, c={connections}, 2 workers{turn}", ">= 10x", []),
        (f"cache hit p99 ms, c={connections}, 2 workers{turn}", "<= 50", []),
        (f"uncached req/s / LiteLLM's, c={connections}, 2 workers{turn}", ">= 1.0x", []),
        (f"ms added over the provider at c=1 (p50){turn}, cache hit", "<= 2", []),
        (
            f"ms added over the provider at c=1 (p50){turn}, uncached",
            f"<= {proxy_added:.1f} (LiteLLM's)",
            [],
        ),
    ]
    for build in builds:
        hit = _find(results, f"{build.label}, cache hit", "2", connections, rounds=in_turn)
        rows[0][2].append(ratio(hit))
        rows[1][2].append(f"{hit.p99_ms:.1f}" if hit else "-")
        rows[2][2].append(ratio(_find(results, f"{build.label}, uncached", "2", connections, rounds=in_turn)))
        rows[3][2].append(added(_find(results, f"{build.label}, cache hit", "1", 1, rounds=in_turn)))
        rows[4][2].append(added(_find(results, f"{build.label}, uncached", "1", 1, rounds=in_turn)))
    print(
        f"\n| goal, against LiteLLM {LITELLM_VERSION} in this run | target | "
        + " | ".join(b.label for b in builds)
        + " |"
    )
    print("|---|---|" + "---:|" * len(builds))
    for name, target, values in rows:
        print(f"| {name} | {target} | " + " | ".join(values) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per row")
    parser.add_argument("--single-seconds", type=int, default=10, help="wrk duration of the c=1 rows")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="service worker counts to measure")
    parser.add_argument("--ttft-samples", type=int, default=40)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure this git commit's code (the 'before' rows), e.g. a tag",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="then the goals' rows again, every target up at once and measured in turn this many times",
    )
    parser.add_argument("--round-seconds", type=int, default=5, help="wrk duration of each --rounds run")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME ENV=VALUE",
        help="also measure this checkout run with these settings, its rows named after NAME (repeatable)",
    )
    parser.add_argument("--soak", type=int, default=0, help="seconds of mixed load on 2 workers, RSS curve")
    parser.add_argument(
        "--budgets",
        action="store_true",
        help="only this service, token and money budgets off vs on, and the Redis scripts' cost",
    )
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    builds = [Build(f"ours ({commit or 'this checkout'})", ROOT)]
    try:
        builds += [variant_build(words, commit or "this checkout") for words in args.variant]
    except ValueError as exc:
        parser.error(str(exc))

    wrk = ensure_wrk()
    if args.budgets:
        from scripts.benchmark_budgets import run  # it imports this module

        return run(wrk, args.seconds, args.connections)
    litellm = None if args.skip_litellm else ensure_litellm()
    results: list[Result] = []
    rounds: list[Result] = []
    ttft: dict[str, tuple[float, float]] = {}
    curve: list[tuple[int, float]] = []
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        if args.baseline:
            builds.insert(0, stack.enter_context(baseline_checkout(args.baseline, workdir)))
        with fake_llm(workdir) as fake_url:
            results += provider_rows(wrk, fake_url, args)
            if litellm is not None:
                results += proxy_rows(wrk, litellm, fake_url, workdir, args)
            services: list[tuple[Build, Measured]] = []
            for build in builds:
                measured = measure_service(wrk, build, workdir, fake_url, args)
                results += measured.results
                ttft.update(measured.ttft)
                curve = measured.curve or curve
                services.append((build, measured))
            if args.rounds:
                rounds = rounds_in_turn(wrk, litellm, services, workdir, fake_url, args)
    print(
        f"\nwrk --latency, {args.seconds} s per row at c={args.connections} (wrk -t2), "
        f"{args.single_seconds} s at c=1; "
        f"provider latency zero; {os.cpu_count()} cores; load average (1/5/15 min) {load_before} before, "
        f"{_load_average()} after\n"
    )
    print(
        "| scenario | workers | connections | req/s | p50 ms | p99 ms | errors | provider calls / requests |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        shape = f"{r.workers} | {r.connections} | {r.requests_per_s:,.0f}"
        calls = "-" if r.provider_calls is None else f"{r.provider_calls:,} / {r.requests:,}"
        print(f"| {r.scenario} | {shape} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {calls} |")
    if args.rounds:
        print(
            f"\nEvery target up at once and measured in turn: {args.rounds} rounds of "
            f"{args.round_seconds} s; the median of the rounds\n"
        )
        print("| scenario | workers | connections | req/s | p50 ms | p99 ms | errors | requests |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rounds:
            print(
                f"| {r.scenario} | {r.workers} | {r.connections} | {r.requests_per_s:,.0f} | "
                f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.requests:,} |"
            )
        results += rounds
    print_goals(results, builds, args.connections)
    if ttft:
        print("\n| SSE, sequential | first delta added by the service, p50 ms | to `sources`, p50 ms |")
        print("|---|---:|---:|")
        for label, (added, retrieval) in ttft.items():
            print(f"| {label} workers | {added:.1f} | {retrieval:.1f} |")
    if args.soak:
        print("\n| mixed load, s | mean worker RSS, MB | growth since the first sample |")
        print("|---:|---:|---:|")
        for at, rss in curve:
            print(f"| {at} | {rss:.0f} | {100 * (rss / curve[1][1] - 1) if len(curve) > 1 else 0:+.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
