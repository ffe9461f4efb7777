"""The API the Streamlit demo talks to in tests: the real server process (``python -m app serve``)
on this worker's PostgreSQL and Redis, chat answered by the wire-level fake through the real SDKs,
ingestion in process, and an admin key of its own tenant that mints one key per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis as sync_redis

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, fake_openai_env, start_server
from tests.support.services import truncate_app_tables

DEMO_TENANT = "demo"
MAX_UPLOAD_MB = 1  # small, so a test can offer a file over the limit cheaply
CHAT_PER_MINUTE = 20  # per principal: small, so a test can use it up
KEY_TOKENS_PER_DAY = 1_000_000  # a token budget per key, for the sidebar to show


@dataclass
class DemoApi:
    server: ServerProcess
    admin_key: str
    redis_url: str
    key_prefix: str

    @property
    def url(self) -> str:
        return self.server.base_url

    def new_key(self, role: str = "editor") -> str:
        """A fresh principal of the demo tenant: its own rate-limit budgets and conversations."""
        created = httpx.post(
            self.url + "/api/v1/keys",
            json={"role": role, "name": f"demo-test-{role}"},
            headers={"X-API-Key": self.admin_key},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])

    def clear_cooldowns(self) -> None:
        """Un-bench every provider: one test's broken stream must not cost the next its model."""
        _delete_keys(self.redis_url, self.key_prefix + "llm:*")


def _delete_keys(redis_url: str, pattern: str) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def running_demo_api(
    database_url: str, redis_url: str, fake: FakeLLMServer, workdir: Path, **env: str
) -> Iterator[DemoApi]:
    """OpenAI answers with the operator's key; Groq is in the chain without one (usable only with
    the caller's own key); Gemini is not offered. Budgets are small except the per-IP one, which
    every test's requests from 127.0.0.1 share."""
    prefix = f"test:demo:{secrets.token_hex(4)}:"
    server_env = {
        **fake_openai_env(fake.openai_base_url),
        "LLM_PROVIDERS": "openai,groq",
        "GROQ_BASE_URL": fake.groq_base_url,
        "GROQ_TIMEOUT_S": "30",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "DATA_DIR": str(workdir / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        "RUN_WORKER_IN_PROCESS": "true",
        "EMBEDDING_WARM_UP": "true",
        "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "RATE_LIMIT_PER_PRINCIPAL": f"{CHAT_PER_MINUTE}/minute",
        "RATE_LIMIT_PER_IP": "100000/minute",
        "BUDGET_TOKENS_PER_DAY_KEY": str(KEY_TOKENS_PER_DAY),
        **env,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_server(server_env, workdir / "server.log", workers=1, ready_path="/readyz")
    try:
        admin = create_api_key(server_env, tenant=DEMO_TENANT, role="admin")
        yield DemoApi(server, admin, redis_url, prefix)
    finally:
        server.stop()
        truncate_app_tables(database_url)
        _delete_keys(redis_url, prefix + "*")
