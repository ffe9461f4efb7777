"""Service configuration: one ``Settings`` class read from the environment and ``.env``.

Every variable is documented in ``.env.example`` and the README's configuration table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "placeholder", "your-key-here", "xxx", "secret", "todo"}
)

ProviderName = Literal["gemini", "groq", "openai", "local"]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


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

    # Embeddings
    embedding_provider: Literal["local", "openai", "gemini"] = "local"
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_dim: int = Field(default=384, ge=1, le=16000)

    # LLM router
    llm_providers: Annotated[list[ProviderName], NoDecode] = ["gemini", "groq", "openai", "local"]
    router_cooldown_s: float = Field(default=300.0, ge=0)
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

    # Limits, cache, memory, uploads
    rate_limit_per_principal: str = "60/minute"
    rate_limit_per_ip: str = "120/minute"
    rate_limit_uploads: str = "30/hour"
    rate_limit_fail_open: bool = True
    cache_ttl_s: int = Field(default=3600, ge=0)
    memory_max_turns: int = Field(default=20, ge=1, le=100)
    memory_retention_days: int = Field(default=30, ge=1)
    max_upload_mb: int = Field(default=10, ge=1)

    # HTTP
    allow_origins: Annotated[list[str] | None, NoDecode] = None

    # Observability
    log_level: str = "INFO"
    log_json: bool | None = None
    log_to_file: Path | None = None
    langfuse_public_key: str | None = None
    langfuse_secret_key: SecretStr | None = None
    langfuse_host: str | None = None
    langfuse_sample_rate: float = Field(default=1.0, ge=0, le=1)
    metrics_backend: Literal["auto", "prometheus", "datadog", "opentelemetry", "noop"] = "auto"

    # Auth (OIDC resource server)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: str | None = None
    auth_tenant_claim: str = "tenant"
    auth_roles_claim: str = "roles"

    @field_validator("llm_providers", "allow_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(
        "database_url",
        "redis_url",
        "cache_redis_url",
        "gemini_base_url",
        "groq_base_url",
        "openai_base_url",
        "langfuse_host",
        "auth_jwks_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
        return level

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
        for name, secret in secrets.items():
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name} is a placeholder value; set a real secret or unset it")
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for the CLI entry points; the app receives its own instance from the factory."""
    return Settings()
