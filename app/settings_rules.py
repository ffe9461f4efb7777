"""The checks ``app.settings.Settings`` runs on values it reads: each raises ``ValueError`` with one
sentence naming the variable and what it accepts (startup prints it and exits with status 2)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network

from pydantic import SecretStr

PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "placeholder", "your-key-here", "xxx", "secret", "todo"}
)

# Signature algorithms a JWKS public key can verify; never "none" and never HS* (a shared secret
# would let anyone holding the public key forge tokens).
ASYMMETRIC_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def check_networks(value: list[str]) -> list[str]:
    for network in value:
        ip_network(network, strict=False)  # ValueError names the bad entry
    return value


def check_jwt_algorithms(value: list[str]) -> list[str]:
    refused = [alg for alg in value if alg not in ASYMMETRIC_JWT_ALGORITHMS]
    if refused or not value:
        raise ValueError(
            f"AUTH_JWT_ALGORITHMS allows only {', '.join(sorted(ASYMMETRIC_JWT_ALGORITHMS))}; "
            f"refused: {', '.join(refused) or 'empty list'}"
        )
    return value


def check_price_table(value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    for model, prices in value.items():
        if model.count("/") < 1 or not all(model.split("/", 1)):
            raise ValueError(f"BUDGET_PRICE_TABLE key {model!r} is not '<provider>/<model>'")
        if set(prices) != {"input", "output"}:
            raise ValueError(f"BUDGET_PRICE_TABLE[{model!r}] needs exactly 'input' and 'output'")
        for side, price in prices.items():
            if not (0 <= price <= 10_000):  # USD per 1M tokens; NaN fails too
                raise ValueError(f"BUDGET_PRICE_TABLE[{model!r}].{side} = {price} is not 0-10000")
    return value


def check_rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit such as '60/minute'") from exc
    return value


def log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
    return level


def refuse_placeholders(secrets: Mapping[str, SecretStr | None]) -> None:
    for name, secret in secrets.items():
        if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{name} is a placeholder value; set a real secret or unset it")
