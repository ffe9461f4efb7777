"""``BUDGET_PRICE_TABLE``: what a provider's model costs, input and output priced separately.

Costs are integers in millionths of a US dollar (micro-USD), the unit of money budgets in Redis
and of ``token_usage.cost_micro_usd``. A model missing from the table costs tokens only (zero
money); the configured ones are named in one sentence at start."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from app.settings import Settings

logger = structlog.get_logger(__name__)

ZERO_COST_PROVIDERS = frozenset({"none", "extractive"})  # answers no provider was paid for


@dataclass(frozen=True)
class Price:
    input: float  # USD per 1M tokens
    output: float

    def micro_usd(self, prompt_tokens: int, completion_tokens: int) -> int:
        return round(prompt_tokens * self.input + completion_tokens * self.output)

    def worst_micro_usd(self, total_tokens: int, answer_tokens: int) -> int:
        """The most ``total_tokens`` can cost when at most ``answer_tokens`` of them are output and
        the rest is prompt, rounded up."""
        answer = min(answer_tokens, total_tokens)
        return math.ceil((total_tokens - answer) * self.input + answer * self.output)


def price_table(settings: Settings) -> dict[str, Price]:
    return {name: Price(p["input"], p["output"]) for name, p in settings.budget_price_table.items()}


def configured_models(settings: Settings) -> set[str]:
    """``<provider>/<model>`` of every model the router may call: each provider's default and the
    models callers may pin (``*_ALLOWED_MODELS``)."""
    configured = {f"{name}/{getattr(settings, f'{name}_model', '')}" for name in settings.llm_providers}
    configured |= {
        f"{name}/{model}"
        for name in ("gemini", "groq", "openai")
        for model in getattr(settings, f"{name}_allowed_models")
    }
    return configured


def worst_price(prices: Mapping[str, Price], models: set[str]) -> Price | None:
    """The dearest input and the dearest output price among ``models`` that are priced (a request
    may end on any of them): what a money reservation assumes. None when none is priced."""
    priced = [prices[m] for m in models if m in prices]
    if not priced:
        return None
    return Price(max(p.input for p in priced), max(p.output for p in priced))


def unpriced_models_sentence(settings: Settings) -> str | None:
    """With a price table, the one sentence naming the configured models it does not price (they
    cost tokens only); None when all are priced or there is no table."""
    if not settings.budget_price_table:
        return None
    unpriced = sorted(
        m
        for m in configured_models(settings)
        if m not in settings.budget_price_table and not m.startswith("local/")
    )
    if not unpriced:
        return None
    return f"BUDGET_PRICE_TABLE prices none of {', '.join(unpriced)}: they cost tokens only"


def log_unpriced_models(settings: Settings) -> None:
    sentence = unpriced_models_sentence(settings)
    if sentence is not None:
        logger.warning("unpriced_models", message=sentence)
