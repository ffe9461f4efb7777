from __future__ import annotations

import re

import pytest

from app.observability.metrics import DomainMetrics
from app.observability.metrics.datadog import DogStatsdBackend
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.receivers import drain, udp_listener

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

DATAGRAM = re.compile(r"^[a-z_][a-z0-9_.]*:-?[0-9.e+-]+\|(c|g|h|d|ms)(\|@[0-9.]+)?(\|#[^|#\s]+)?$")


def test_domain_metrics_arrive_as_dogstatsd_datagrams() -> None:
    with udp_listener() as (sock, port):
        backend = DogStatsdBackend("127.0.0.1", port, constant_tags=["service:ragchat"])
        backend.start()
        try:
            metrics = DomainMetrics(backend)
            metrics.llm_request("groq", "llama-3.3-70b", "success", 0.25, prompt_tokens=12)
            metrics.vector_search(0.0042, mode="hybrid")
            metrics.cache_lookup(hit=False)
            metrics.ingestion_queue_depth(3)
            packets = drain(sock)
        finally:
            backend.close()
    assert packets == [
        "llm_requests_total:1|c|#service:ragchat,provider:groq,model:llama-3.3-70b,outcome:success",
        "llm_latency_seconds:0.25|h|#service:ragchat,provider:groq,outcome:success",
        "llm_tokens_total:12|c|#service:ragchat,provider:groq,kind:prompt",
        "vector_search_requests_total:1|c|#service:ragchat,mode:hybrid,outcome:ok",
        "vector_search_duration_seconds:0.0042|h|#service:ragchat,mode:hybrid",
        "cache_misses_total:1|c|#service:ragchat,layer:answer",
        "ingestion_queue_depth:3|g|#service:ragchat,state:queued",
    ]
    assert all(DATAGRAM.match(packet) for packet in packets)


def test_tag_values_cannot_break_the_datagram() -> None:
    with udp_listener() as (sock, port):
        backend = DogStatsdBackend("127.0.0.1", port)
        backend.start()
        try:
            DomainMetrics(backend).rate_limited("a|b,c#d e")
            (packet,) = drain(sock)
        finally:
            backend.close()
    assert packet == "rate_limited_total:1|c|#scope:a_b_c_d_e"


def test_a_missing_agent_costs_nothing() -> None:
    backend = DogStatsdBackend("127.0.0.1", 9)  # discard port: nobody listens
    backend.start()
    try:
        for _ in range(100):
            DomainMetrics(backend).cache_lookup(hit=True)
    finally:
        backend.close()


async def test_app_configured_for_datadog_sends_http_request_metrics(settings: Settings) -> None:
    with udp_listener() as (sock, port):
        async with running_app(
            settings, metrics_backend="auto", dd_agent_host="127.0.0.1", dd_dogstatsd_port=port
        ) as (_, client, _):
            drain(sock)  # startup gauges (pool sampling)
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 404  # pushed, not scraped
            packets = drain(sock)
    assert "http_requests_total:1|c|#service:ragchat,method:GET,handler:/healthz,status:2xx" in packets
    assert any(
        p.startswith("http_request_duration_seconds:")
        and p.endswith("|h|#service:ragchat,method:GET,handler:/healthz")
        for p in packets
    )
