"""Each value check names the variable and what it accepts, in the error startup prints."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth_jwt_algorithms": "HS256"}, "AUTH_JWT_ALGORITHMS allows only"),
        ({"auth_jwt_algorithms": "none,RS256"}, "refused: none"),
        ({"rate_limit_per_ip": "sixty a minute"}, "is not a rate limit such as '60/minute'"),
        ({"trusted_proxies": "10.0.0.0/8,not-a-network"}, "not-a-network"),
        ({"log_level": "chatty"}, "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ({"groq_api_key": "changeme"}, "GROQ_API_KEY is a placeholder value"),
        ({"budget_price_table": {"gpt-4o": {"input": 1, "output": 2}}}, "is not '<provider>/<model>'"),
    ],
)
def test_a_bad_value_is_refused_with_a_sentence_naming_it(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_lists_are_read_from_comma_separated_text_and_levels_in_any_case() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, trusted_proxies=" 10.0.0.0/8 , ::1 ", log_level="warning", llm_providers="groq,local"
    )
    assert settings.trusted_proxies == ["10.0.0.0/8", "::1"]
    assert settings.log_level == "WARNING"
    assert settings.llm_providers == ["groq", "local"]
