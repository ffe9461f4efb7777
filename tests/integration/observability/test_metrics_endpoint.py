from __future__ import annotations

import re

import httpx
import pytest

from app.settings import Settings
from tests.support.apps import running_app

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

DOMAIN_FAMILIES = (
    "vector_search_duration_seconds",
    "vector_search_requests_total",
    "llm_requests_total",
    "llm_latency_seconds",
    "cache_hits_total",
    "cache_misses_total",
    "rate_limited_total",
    "ingestion_jobs_total",
    "ingestion_job_duration_seconds",
    "ingestion_queue_depth",
    "llm_provider_cooldown_until_seconds",
    "db_pool_connections",
    "redis_pool_connections",
)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels}")


async def test_metrics_counts_requests_by_route_template_and_needs_no_credentials(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        assert (await client.get("/healthz")).status_code == 200
    await client.get("/api/v1/me")  # 401 without a key
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "http_requests_total", handler="/healthz", method="GET", status="2xx") == 3
    assert sample(text, "http_requests_total", handler="/api/v1/me", status="4xx") == 1
    assert sample(text, "http_request_duration_seconds_count", handler="/healthz") == 3
    assert 'handler="/metrics"' not in text  # scrapes are not counted


async def test_metrics_exposes_every_domain_family(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    for family in DOMAIN_FAMILIES:
        assert f"# TYPE {family} " in text, family


async def test_pool_usage_is_sampled(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert sample(text, "redis_pool_connections", pool="main", state="in_use") >= 0
    assert sample(text, "db_pool_connections", state="idle") >= 0


async def test_metrics_is_404_when_nothing_is_scraped(settings: Settings) -> None:
    async with running_app(settings, metrics_backend="noop") as (_, client, _):
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
