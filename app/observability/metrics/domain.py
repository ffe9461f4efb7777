"""The service's metrics, by what happened rather than by metric name.

Other capabilities call these methods (``resources.telemetry.metrics.cache_lookup(hit=True)``);
the names, labels and buckets live here only, so every backend and the Grafana dashboard agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.observability.metrics.base import MetricsBackend

LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SEARCH_MODES = ("hybrid", "vector", "text")
INGESTION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FEEDBACK_SCORES = ("-1", "1", "2", "3", "4", "5")
# Many buckets and no labels, for quantiles over every request (the dashboard's latency panel);
# the buckets prometheus-fastapi-instrumentator used, so its recording rules keep working.
HTTP_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
UNCOUNTED_ROUTES = frozenset({"/metrics"})  # scrapes are not requests to the service


def status_class(status: int) -> str:
    """``2xx``, ``4xx`` …: grouped, so that a label never holds every status code."""
    return f"{status // 100}xx"


class DomainMetrics:
    def __init__(self, backend: MetricsBackend) -> None:
        self.backend = backend
        b = backend
        self._http_requests = b.counter(
            "http_requests_total", "HTTP requests", ("method", "handler", "status")
        )
        self._http_duration = b.histogram(
            "http_request_duration_seconds", "HTTP request latency", ("method", "handler")
        )
        self._http_duration_highr = b.histogram(
            "http_request_duration_highr_seconds",
            "HTTP request latency, finely bucketed across all routes",
            (),
            HTTP_HIGHR_BUCKETS,
        )
        self._db_queries = b.counter(
            "db_queries_total", "SQL statements run, by target (primary or a read replica)", ("target",)
        )
        self._replica_lag = b.gauge(
            "db_replica_lag_seconds", "A read replica's replay lag (-1: unknown)", ("target",)
        )
        self._replica_healthy = b.gauge(
            "db_replica_healthy", "1 while a read replica serves reads, 0 while skipped", ("target",)
        )
        self._search_requests = b.counter(
            "vector_search_requests_total",
            "Retrieval queries",
            ("mode", "outcome"),
            known=[{"mode": mode, "outcome": "ok"} for mode in SEARCH_MODES],
        )
        self._search_duration = b.histogram(
            "vector_search_duration_seconds",
            "Retrieval query latency",
            ("mode",),
            SEARCH_BUCKETS,
            known=[{"mode": mode} for mode in SEARCH_MODES],
        )
        self._embedding_duration = b.histogram(
            "embedding_duration_seconds", "Embedding call latency", ("provider",), (*SEARCH_BUCKETS, 10.0)
        )
        self._rerank_duration = b.histogram(
            "rerank_duration_seconds", "Rerank stage latency", ("reranker",), (*SEARCH_BUCKETS, 10.0)
        )
        self._rerank_skipped = b.counter(
            "rerank_skipped_total",
            "Questions answered in retrieval order: the reranker was busy",
            ("reranker",),
        )
        self._query_rewrites = b.histogram(
            "query_rewrite_duration_seconds",
            "Follow-up rewrites into a standalone retrieval query (CONVERSATION_REWRITE=llm), by outcome",
            ("outcome",),
            LLM_BUCKETS,
        )
        self._llm_requests = b.counter(
            "llm_requests_total", "LLM provider attempts", ("provider", "model", "outcome")
        )
        self._llm_latency = b.histogram(
            "llm_latency_seconds", "LLM provider attempt latency", ("provider", "outcome"), LLM_BUCKETS
        )
        self._llm_tokens = b.counter("llm_tokens_total", "LLM tokens used", ("provider", "kind"))
        self._cooldown_until = b.gauge(
            "llm_provider_cooldown_until_seconds",
            "Epoch time a provider's cooldown ends (in cooldown while greater than now)",
            ("provider",),
            aggregation="max",
        )
        self._cooldowns = b.counter(
            "llm_provider_cooldowns_total", "Provider cooldowns", ("provider", "reason")
        )
        self._skips = b.counter("llm_provider_skips_total", "Providers passed over", ("provider", "reason"))
        self._cache_hits = b.counter(
            "cache_hits_total", "Cache hits", ("layer",), known=[{"layer": "answer"}]
        )
        self._cache_misses = b.counter(
            "cache_misses_total", "Cache misses", ("layer",), known=[{"layer": "answer"}]
        )
        self._rate_limited = b.counter("rate_limited_total", "Requests refused by a rate limit", ("scope",))
        self._budget_tokens = b.counter(
            "budget_tokens_total",
            "Provider tokens settled on the token budgets (README: Token budgets)",
            ("tenant", "provider", "model", "kind"),
        )
        self._budget_cost = b.counter(
            "budget_cost_usd_total",
            "Cost of the settled tokens by BUDGET_PRICE_TABLE, in US dollars",
            ("tenant", "provider", "model"),
        )
        self._injection_flags = b.counter(
            "prompt_injection_flags_total",
            "Suspected prompt injection seen (kept as quoted data, never obeyed)",
            ("source", "flag"),
        )
        self._ingestion_jobs = b.counter("ingestion_jobs_total", "Finished ingestion jobs", ("outcome",))
        self._ingestion_duration = b.histogram(
            "ingestion_job_duration_seconds", "Ingestion job duration", ("outcome",), INGESTION_BUCKETS
        )
        self._answer_feedback = b.counter(
            "answer_feedback_total",
            "Feedback given on answers (thumbs -1/1 or stars 1-5; a re-rating counts again)",
            ("score",),
            known=[{"score": score} for score in FEEDBACK_SCORES],
        )
        self._answer_records = b.counter(
            "answer_records_total",
            "Answered chat turns recorded so that they can be rated",
            ("outcome",),
            known=[{"outcome": "stored"}, {"outcome": "failed"}],
        )
        self._queue_depth = b.gauge(
            "ingestion_queue_depth", "Ingestion jobs waiting", ("state",), aggregation="max"
        )
        self._db_pool = b.gauge(
            "db_pool_connections", "Database pool connections", ("state",), aggregation="sum"
        )
        self._redis_pool = b.gauge(
            "redis_pool_connections", "Redis pool connections", ("pool", "state"), aggregation="sum"
        )

    # HTTP: every request, by the edge layer (``app.api.middleware``)
    def http_request(self, method: str, route: str | None, status: int, duration_s: float) -> None:
        """``route`` is the route template (never the raw path: a label per URL would be
        unbounded), None when no route served the request (404, or refused at the edge)."""
        if route in UNCOUNTED_ROUTES:
            return
        handler = route or "none"
        self._http_requests.inc(method=method, handler=handler, status=status_class(status))
        self._http_duration.observe(duration_s, method=method, handler=handler)
        self._http_duration_highr.observe(duration_s)

    # Retrieval
    def vector_search(self, duration_s: float, mode: str = "hybrid", outcome: str = "ok") -> None:
        self._search_requests.inc(mode=mode, outcome=outcome)
        self._search_duration.observe(duration_s, mode=mode)

    @contextmanager
    def vector_search_timer(self, mode: str = "hybrid") -> Iterator[None]:
        """``with metrics.vector_search_timer("hybrid"): chunks = await retrieve(...)``."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.vector_search(time.perf_counter() - started, mode=mode, outcome=outcome)

    def embedding(self, duration_s: float, provider: str) -> None:
        self._embedding_duration.observe(duration_s, provider=provider)

    def rerank(self, duration_s: float, reranker: str = "cross-encoder") -> None:
        """The rerank stage scored the retrieved candidates of one question (RERANKER)."""
        self._rerank_duration.observe(duration_s, reranker=reranker)

    def rerank_skipped(self, reranker: str = "cross-encoder") -> None:
        """The reranker stayed busy for RERANKER_WAIT_S: this question kept the retrieval order."""
        self._rerank_skipped.inc(reranker=reranker)

    # LLM router
    def query_rewrite(self, outcome: str, duration_s: float) -> None:
        """``outcome``: rewritten, cached, timeout, failed or unusable (the last three searched the
        offline query)."""
        self._query_rewrites.observe(duration_s, outcome=outcome)

    def llm_request(
        self,
        provider: str,
        model: str,
        outcome: str,
        latency_s: float,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        """One provider attempt. ``outcome``: ``ok``, ``timeout``, ``rate_limited``, ``error``,
        ``skipped_cooldown`` … (whatever the router reports; keep the set small)."""
        self._llm_requests.inc(provider=provider, model=model, outcome=outcome)
        self._llm_latency.observe(latency_s, provider=provider, outcome=outcome)
        if prompt_tokens:
            self._llm_tokens.inc(prompt_tokens, provider=provider, kind="prompt")
        if completion_tokens:
            self._llm_tokens.inc(completion_tokens, provider=provider, kind="completion")

    def provider_cooldown(self, provider: str, until_epoch_s: float, error_code: str = "error") -> None:
        """A provider was benched until ``until_epoch_s``. The gauge holds the end time rather
        than a 0/1 flag so it stays right across workers without anyone resetting it:
        ``llm_provider_cooldown_until_seconds - time() > 0`` while the cooldown lasts."""
        self._cooldown_until.set(until_epoch_s, provider=provider)
        self._cooldowns.inc(provider=provider, reason=error_code)

    def provider_skipped(self, provider: str, reason: str) -> None:
        """``reason``: ``unconfigured``, ``cooling_down``, ``probe_in_flight``."""
        self._skips.inc(provider=provider, reason=reason)

    # Cache and limits
    def cache_lookup(self, hit: bool, layer: str = "answer") -> None:
        (self._cache_hits if hit else self._cache_misses).inc(layer=layer)

    def prompt_injection(self, source: str, flags: list[str]) -> None:
        """``source`` is ``question`` or ``retrieved_chunk``; one increment per flag raised."""
        for flag in flags:
            self._injection_flags.inc(source=source, flag=flag)

    def budget_settled(
        self,
        tenant: str,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        """One answer's settled tokens (and cost, when its model is priced)."""
        if prompt_tokens:
            self._budget_tokens.inc(
                prompt_tokens, tenant=tenant, provider=provider, model=model, kind="prompt"
            )
        if completion_tokens:
            self._budget_tokens.inc(
                completion_tokens, tenant=tenant, provider=provider, model=model, kind="completion"
            )
        if cost_usd:
            self._budget_cost.inc(cost_usd, tenant=tenant, provider=provider, model=model)

    def rate_limited(self, scope: str) -> None:
        """``scope``: ``principal``, ``ip``, ``upload`` …"""
        self._rate_limited.inc(scope=scope)

    # Answer feedback
    def answer_feedback(self, score: int) -> None:
        """A principal rated an answer: ``score`` is -1 or 1 (thumbs) or 1-5 (stars)."""
        self._answer_feedback.inc(score=str(score))

    def answer_record(self, stored: bool) -> None:
        """An answered turn was recorded for feedback (``stored``), or Redis refused it."""
        self._answer_records.inc(outcome="stored" if stored else "failed")

    # Ingestion
    def ingestion_job(self, outcome: str, duration_s: float) -> None:
        """A job finished: ``outcome`` ``succeeded``, ``failed``, ``retried`` …"""
        self._ingestion_jobs.inc(outcome=outcome)
        self._ingestion_duration.observe(duration_s, outcome=outcome)

    def ingestion_queue_depth(self, queued: int, running: int | None = None) -> None:
        self._queue_depth.set(queued, state="queued")
        if running is not None:
            self._queue_depth.set(running, state="running")

    # Pools (sampled periodically by telemetry.PoolSampler)
    def db_pool(self, in_use: int, idle: int) -> None:
        self._db_pool.set(in_use, state="in_use")
        self._db_pool.set(idle, state="idle")

    # Read replicas (app.db.replicas)
    def db_query(self, target: str) -> None:
        self._db_queries.inc(target=target)

    def replica_state(self, target: str, healthy: bool, lag_s: float | None) -> None:
        known = lag_s is not None and lag_s != float("inf")
        self._replica_lag.set(lag_s if known and lag_s is not None else -1.0, target=target)
        self._replica_healthy.set(1.0 if healthy else 0.0, target=target)

    def redis_pool(self, pool: str, in_use: int, idle: int) -> None:
        self._redis_pool.set(in_use, pool=pool, state="in_use")
        self._redis_pool.set(idle, pool=pool, state="idle")
