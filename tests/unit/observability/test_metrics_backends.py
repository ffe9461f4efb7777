from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.observability.metrics import DomainMetrics, create_metrics_backend, resolve_backend_name
from app.observability.metrics.datadog import DogStatsdBackend, format_datagram
from app.observability.metrics.noop import NoopBackend
from app.observability.metrics.otel import OpenTelemetryBackend
from app.observability.metrics.prometheus import PrometheusBackend
from app.settings import Settings

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

ROOT = Path(__file__).resolve().parents[3]


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, debug=True, **overrides)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "prometheus"),
        ({"dd_agent_host": "127.0.0.1"}, "datadog"),
        ({"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, "opentelemetry"),
        ({"metrics_backend": "noop", "dd_agent_host": "127.0.0.1"}, "noop"),
        ({"metrics_backend": "datadog"}, "datadog"),
    ],
)
def test_backend_is_chosen_by_configuration_only(overrides: dict[str, object], expected: str) -> None:
    settings = make_settings(**overrides)
    assert resolve_backend_name(settings) == expected
    assert create_metrics_backend(settings).name == expected


def test_backends_satisfy_the_interface() -> None:
    for backend in (
        PrometheusBackend(),
        DogStatsdBackend("127.0.0.1"),
        OpenTelemetryBackend(None),
        NoopBackend(),
    ):
        metrics = DomainMetrics(backend)  # declares every instrument
        metrics.vector_search(0.01)  # unstarted push backends drop values silently
        metrics.cache_lookup(hit=True)


def prometheus_text(metrics: DomainMetrics) -> str:
    payload = metrics.backend.exposition()
    assert payload is not None
    body, content_type = payload
    assert content_type.startswith("text/plain")
    return body.decode()


def test_domain_metrics_use_the_spec_names_and_labels() -> None:
    metrics = DomainMetrics(PrometheusBackend())
    metrics.vector_search(0.02, mode="hybrid")
    metrics.llm_request("groq", "llama-3.3-70b", "ok", 1.5, prompt_tokens=100, completion_tokens=20)
    metrics.llm_request("gemini", "gemini-2.5-flash", "timeout", 30.0)
    metrics.cache_lookup(hit=True)
    metrics.cache_lookup(hit=False, layer="semantic")
    metrics.rate_limited("principal")
    metrics.ingestion_job("succeeded", 4.2)
    metrics.ingestion_queue_depth(7, running=2)
    metrics.provider_cooldown("gemini", until_epoch_s=1_900_000_000.0, error_code="rate_limited")
    metrics.provider_skipped("gemini", "cooling_down")
    metrics.db_pool(in_use=3, idle=7)
    metrics.redis_pool("main", in_use=1, idle=2)
    text = prometheus_text(metrics)
    expected = [
        'vector_search_requests_total{mode="hybrid",outcome="ok"} 1.0',
        'vector_search_duration_seconds_bucket{le="0.025",mode="hybrid"} 1.0',
        'llm_requests_total{model="llama-3.3-70b",outcome="ok",provider="groq"} 1.0',
        'llm_requests_total{model="gemini-2.5-flash",outcome="timeout",provider="gemini"} 1.0',
        'llm_latency_seconds_count{outcome="ok",provider="groq"} 1.0',
        'llm_tokens_total{kind="prompt",provider="groq"} 100.0',
        'cache_hits_total{layer="answer"} 1.0',
        'cache_misses_total{layer="semantic"} 1.0',
        'rate_limited_total{scope="principal"} 1.0',
        'ingestion_jobs_total{outcome="succeeded"} 1.0',
        'ingestion_job_duration_seconds_sum{outcome="succeeded"} 4.2',
        'ingestion_queue_depth{state="queued"} 7.0',
        'llm_provider_cooldown_until_seconds{provider="gemini"} 1.9e+09',
        'llm_provider_cooldowns_total{provider="gemini",reason="rate_limited"} 1.0',
        'llm_provider_skips_total{provider="gemini",reason="cooling_down"} 1.0',
        'db_pool_connections{state="in_use"} 3.0',
        'redis_pool_connections{pool="main",state="idle"} 2.0',
    ]
    for line in expected:
        assert line in text, line


def test_each_app_has_its_own_registry() -> None:
    first, second = DomainMetrics(PrometheusBackend()), DomainMetrics(PrometheusBackend())
    first.rate_limited("ip")
    assert 'rate_limited_total{scope="ip"} 1.0' in prometheus_text(first)
    assert 'rate_limited_total{scope="ip"}' not in prometheus_text(second)


def test_wrong_labels_are_a_programming_error() -> None:
    backend = PrometheusBackend()
    counter = backend.counter("things_total", "things", ("kind",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(flavour="x")


def test_http_requests_are_counted_by_route_template_with_prometheus_and_scrapes_are_not() -> None:
    metrics = DomainMetrics(PrometheusBackend())
    metrics.http_request("GET", "/healthz", 200, 0.01)
    metrics.http_request("GET", "/metrics", 200, 0.01)
    text = prometheus_text(metrics)
    assert 'http_requests_total{handler="/healthz",method="GET",status="2xx"} 1.0' in text
    assert 'http_request_duration_seconds_count{handler="/healthz",method="GET"} 1.0' in text
    assert "http_request_duration_highr_seconds_count 1.0" in text
    assert 'handler="/metrics"' not in text


@pytest.mark.parametrize(
    ("args", "datagram"),
    [
        (
            ("llm_requests_total", 1, "c", ["provider:groq", "outcome:ok"]),
            b"llm_requests_total:1|c|#provider:groq,outcome:ok",
        ),
        (("vector_search_duration_seconds", 0.0123, "h", []), b"vector_search_duration_seconds:0.0123|h"),
        (("ingestion_queue_depth", 4.0, "g", ["state:queued"]), b"ingestion_queue_depth:4|g|#state:queued"),
    ],
)
def test_dogstatsd_datagram_format(args: tuple[str, float, str, list[str]], datagram: bytes) -> None:
    assert format_datagram(*args) == datagram


WORKER = textwrap.dedent(
    """
    import sys
    from app.observability.metrics import DomainMetrics
    from app.observability.metrics.prometheus import PrometheusBackend
    metrics = DomainMetrics(PrometheusBackend())
    for _ in range(int(sys.argv[1])):
        metrics.vector_search(0.01)
    metrics.db_pool(in_use=int(sys.argv[1]), idle=0)
    """
)
SCRAPER = textwrap.dedent(
    """
    import sys
    from app.observability.metrics.prometheus import PrometheusBackend, mark_worker_dead
    for pid in sys.argv[1:]:
        mark_worker_dead(int(pid))
    body, _ = PrometheusBackend().exposition()
    print(body.decode())
    """
)


def run_python(code: str, *args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(env_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_multiprocess_mode_aggregates_every_worker_and_forgets_dead_workers_gauges(tmp_path: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", WORKER, "2"], cwd=ROOT, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    second = subprocess.Popen(
        [sys.executable, "-c", WORKER, "3"], cwd=ROOT, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0

    text = run_python(SCRAPER, env_dir=tmp_path).stdout
    assert 'vector_search_requests_total{mode="hybrid",outcome="ok"} 5.0' in text
    # livesum gauges of exited processes are only dropped once gunicorn reports them dead
    text = run_python(SCRAPER, str(first.pid), str(second.pid), env_dir=tmp_path).stdout
    assert 'vector_search_requests_total{mode="hybrid",outcome="ok"} 5.0' in text  # counters survive
    assert 'db_pool_connections{state="in_use"}' not in text
