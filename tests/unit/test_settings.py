from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings

pytestmark = pytest.mark.unit


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_placeholder_provider_key_is_refused_outside_debug() -> None:
    with pytest.raises(ValidationError, match="OPENAI_API_KEY is a placeholder"):
        make(debug=False, openai_api_key="changeme")


def test_placeholder_key_is_tolerated_in_debug() -> None:
    assert make(debug=True, openai_api_key="changeme").openai_api_key is not None


def test_real_looking_key_is_accepted_outside_debug() -> None:
    settings = make(debug=False, groq_api_key="gsk_live_abcdef123456")
    assert settings.groq_api_key is not None
    assert "gsk_live" not in repr(settings)  # secrets never show up in reprs or logs


def test_provider_order_is_read_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDERS", "groq, local")
    assert make().llm_providers == ["groq", "local"]


def test_unknown_provider_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDERS", "groq,skynet")
    with pytest.raises(ValidationError):
        make()


def test_cors_allows_every_origin_only_in_debug() -> None:
    assert make(debug=True).cors_origins == ["*"]
    assert make(debug=False).cors_origins == []
    assert make(debug=False, allow_origins=["https://app.example"]).cors_origins == ["https://app.example"]


def test_embedded_services_are_used_when_no_urls_are_set() -> None:
    settings = make()
    assert settings.uses_embedded_postgres and settings.uses_embedded_redis
    assert settings.should_auto_migrate
    external = make(database_url="postgresql+psycopg://db/x", redis_url="redis://r:6379/0")
    assert not external.uses_embedded_postgres and not external.should_auto_migrate


def test_log_level_is_validated() -> None:
    with pytest.raises(ValidationError, match="LOG_LEVEL"):
        make(log_level="loud")
