"""Token and money budgets in PostgreSQL: admins' overrides (``token_budgets``) and settled usage per tenant,
key, provider, model and UTC day (``token_usage``), the durable copy of the Redis counters."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import TokenBudgetOverride, TokenUsage

# Built once: an ``insert(...).on_conflict_do_update(...)`` construct made per answer cost more
# client time to build and key for SQLAlchemy's compiled cache than its round trip.
_ADD_USAGE_SQL = text(
    """
    INSERT INTO token_usage AS u (tenant_id, principal_id, provider, model, day,
                                  prompt_tokens, completion_tokens, tokens, cost_micro_usd)
    VALUES (:tenant_id, :principal_id, :provider, :model, :day,
            :prompt_tokens, :completion_tokens, :prompt_tokens + :completion_tokens, :cost_micro_usd)
    ON CONFLICT (tenant_id, principal_id, provider, model, day) DO UPDATE SET
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        tokens = u.tokens + EXCLUDED.tokens,
        cost_micro_usd = u.cost_micro_usd + EXCLUDED.cost_micro_usd
    """
)


async def add_usage(
    db: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    principal_id: str,
    provider: str,
    model: str,
    day: date,
    prompt_tokens: int,
    completion_tokens: int,
    cost_micro_usd: int,
) -> None:
    """One upsert: the day's row for this tenant, key, provider and model grows by this answer."""
    await db.execute(
        _ADD_USAGE_SQL,
        {
            "tenant_id": tenant_id,
            "principal_id": principal_id,
            "provider": provider,
            "model": model,
            "day": day,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_micro_usd": cost_micro_usd,
        },
    )


async def spent(
    db: AsyncSession, tenant_id: uuid.UUID, principal_id: str | None, since: date, *, money: bool = False
) -> int:
    """Settled tokens (``money``: their cost in micro-USD) since ``since`` (inclusive) of the
    tenant, or of one key when given."""
    column = TokenUsage.cost_micro_usd if money else TokenUsage.tokens
    query = select(func.coalesce(func.sum(column), 0)).where(
        TokenUsage.tenant_id == tenant_id, TokenUsage.day >= since
    )
    if principal_id is not None:
        query = query.where(TokenUsage.principal_id == principal_id)
    return int((await db.execute(query)).scalar_one())


async def overrides(db: AsyncSession, tenant_id: uuid.UUID) -> list[TokenBudgetOverride]:
    rows = await db.execute(select(TokenBudgetOverride).where(TokenBudgetOverride.tenant_id == tenant_id))
    return list(rows.scalars())


async def set_override(
    db: AsyncSession, tenant_id: uuid.UUID, principal_id: str, period: str, amount: int, unit: str = "tokens"
) -> None:
    """``amount`` in the unit: tokens, or micro-USD for ``usd``."""
    statement = insert(TokenBudgetOverride).values(
        tenant_id=tenant_id, principal_id=principal_id, period=period, unit=unit, tokens=amount
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "principal_id", "period", "unit"],
            set_={"tokens": statement.excluded.tokens, "updated_at": func.now()},
        )
    )


async def delete_override(
    db: AsyncSession, tenant_id: uuid.UUID, principal_id: str, period: str, unit: str = "tokens"
) -> bool:
    result = await db.execute(
        delete(TokenBudgetOverride).where(
            TokenBudgetOverride.tenant_id == tenant_id,
            TokenBudgetOverride.principal_id == principal_id,
            TokenBudgetOverride.period == period,
            TokenBudgetOverride.unit == unit,
        )
    )
    return bool(getattr(result, "rowcount", 0))
