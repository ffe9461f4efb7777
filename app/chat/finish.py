"""The one finishing step of every chat turn, answered with or without the router, streamed or
not: mark the cited sources; then, side by side, cache the answer when the chain says it may be
cached, record the turn in memory with exactly the text and sources the client received together
with the tokens the operator paid for (one commit), and leave the answer's record in the answer
ledger (who received which answer, for feedback); then settle the token reservation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.cache.answers import CachedAnswer
from app.chat.ports import AnswerLedger, AnswerStore, Memory
from app.chat.turns import Outcome, PreparedTurn, RoutedTurn, TurnStatus, turn_record
from app.chat.types import ChatInput
from app.db.unit_of_work import UnitOfWork, autocommit
from app.feedback.ledger import AnsweredTurn
from app.limits import repository as budget_repository
from app.limits.budgets import ZERO_COST_PROVIDERS, TokenBudgets
from app.memory.service import RecordedTurn
from app.observability.telemetry import Telemetry
from app.rag.sources import Source, mark_cited


@dataclass(frozen=True)
class Finished:
    sources: list[Source]  # marked as cited in the answer
    cited: list[int]


@dataclass(frozen=True)
class Spent:
    """Tokens the operator's provider was paid for."""

    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


class NoLedger:
    async def record(self, turn: AnsweredTurn) -> None:
        return None


class TurnFinisher:
    def __init__(
        self,
        *,
        memory: Memory,
        cache: AnswerStore,
        unit_of_work: UnitOfWork,
        telemetry: Telemetry,
        ledger: AnswerLedger,
        budgets: TokenBudgets | None,
        count_tokens: Callable[[str], int],
    ) -> None:
        self._memory = memory
        self._cache = cache
        self._unit_of_work = unit_of_work
        self._telemetry = telemetry
        self._ledger = ledger
        self._budgets = budgets
        self._count_tokens = count_tokens

    async def finish(
        self,
        principal: Principal,
        chat: ChatInput,
        turn: PreparedTurn,
        outcome: Outcome,
        *,
        streamed: bool,
        db: AsyncSession | None = None,
    ) -> Finished:
        """Memory keeps the sources exactly as the client got them: marked as cited in a JSON
        answer, as first sent in a stream (whose ``sources`` event precedes the text; ``done``
        carries the cited numbers). The writes go in ``db`` when given (the preparation's unit of
        work, for a turn answered inside it), else in a unit of work of their own."""
        sources, cited = mark_cited(turn.sources, outcome.text)
        spent = self._spent(turn, outcome) if chat.operator_pays else Spent()
        kept = turn.sources if streamed else sources
        # Three stores, written side by side: the answer cache and the ledger (Redis; neither
        # raises) and the turn and usage (PostgreSQL). A failed database write still fails the
        # request, after the other two have been written, as when they went one after the other.
        recorded, _, _ = await asyncio.gather(
            self._write_records(principal, chat, turn.trace_id, outcome, kept, spent, db),
            self._cache_answer(turn, outcome, sources),
            self._record_answered(principal, chat, turn.trace_id, outcome, sources),
        )
        await self._settle(principal, chat, spent, outcome)
        if recorded is not None:
            await self._memory.publish(recorded)
        return Finished(sources, cited)

    async def _cache_answer(self, turn: PreparedTurn, outcome: Outcome, sources: list[Source]) -> None:
        if outcome.status is TurnStatus.ok and outcome.cacheable and turn.cache_key is not None:
            answer = CachedAnswer(
                outcome.text, tuple(sources), outcome.provider, outcome.model, outcome.usage
            )
            await self._cache.put(turn.cache_key, answer)

    async def _write_records(
        self,
        principal: Principal,
        chat: ChatInput,
        trace_id: str,
        outcome: Outcome,
        sources: list[Source],
        spent: Spent,
        db: AsyncSession | None,
    ) -> RecordedTurn | None:
        """The turn and the settled usage (the durable copy of the budget counters): one commit,
        in ``db`` when given (the preparation's unit of work, for a turn answered inside it),
        else in a unit of work of its own; none when there is nothing to keep."""
        if chat.session is None and (self._budgets is None or not spent.total):
            return None
        if db is None:
            async with self._unit_of_work() as own:
                if chat.session is None:
                    await autocommit(own)  # the usage upsert alone: one statement
                return await self._write_records(principal, chat, trace_id, outcome, sources, spent, own)
        recorded = None
        if chat.session is not None:
            record = turn_record(chat, outcome, sources, trace_id)
            recorded = await self._memory.record_turn(db, principal, chat.session, record)
        if self._budgets is not None and spent.total:
            await budget_repository.add_usage(
                db,
                tenant_id=principal.tenant_id,
                principal_id=principal.id,
                provider=outcome.provider,
                model=outcome.model,
                day=datetime.now(UTC).date(),
                prompt_tokens=spent.prompt,
                completion_tokens=spent.completion,
                cost_micro_usd=self._budgets.cost_micro_usd(
                    outcome.provider, outcome.model, spent.prompt, spent.completion
                ),
            )
        await db.commit()
        return recorded

    def _spent(self, turn: PreparedTurn, outcome: Outcome) -> Spent:
        """As the provider reported them, else as counted here (the prompt as fitted, the text as
        received); none for an answer no provider made now (a cached one, the "nothing matches"
        answer, the apology, the extractive answerer)."""
        if outcome.cached or outcome.provider in ZERO_COST_PROVIDERS:
            return Spent()
        if outcome.usage is not None:
            return Spent(outcome.usage.get("prompt_tokens", 0), outcome.usage.get("completion_tokens", 0))
        prompt = turn.prompt.tokens if isinstance(turn, RoutedTurn) else 0
        return Spent(prompt, self._count_tokens(outcome.text) if outcome.text else 0)

    async def _settle(self, principal: Principal, chat: ChatInput, spent: Spent, outcome: Outcome) -> None:
        if self._budgets is None:
            return
        cost = self._budgets.cost_micro_usd(outcome.provider, outcome.model, spent.prompt, spent.completion)
        await self._budgets.settle(chat.reservation, spent.total, cost)
        if spent.total:
            self._telemetry.metrics.budget_settled(
                str(principal.tenant_id),
                outcome.provider,
                outcome.model,
                spent.prompt,
                spent.completion,
                cost / 1e6,
            )

    async def release(self, chat: ChatInput) -> None:
        """Give back the request's reservation unless it was settled (a refused or failed request)."""
        if self._budgets is not None:
            await self._budgets.release(chat.reservation)

    async def _record_answered(
        self, principal: Principal, chat: ChatInput, trace_id: str, outcome: Outcome, sources: list[Source]
    ) -> None:
        """The answer's record in the ledger, before the client hears the end of the answer (so
        feedback sent right after it finds the record): one Redis write, never raising. The
        ledger holds answers: a broken stream (a failed attempt) is not one, and nobody is left
        to rate an answer the client left. The apology (provider "none") is the service's."""
        if not (outcome.status is TurnStatus.ok or (outcome.degraded and outcome.provider == "none")):
            return
        await self._ledger.record(
            AnsweredTurn.of(
                trace_id=trace_id,
                tenant_id=principal.tenant_id,
                principal_id=principal.id,
                question=chat.question,
                answer=outcome.text,
                sources=sources,
                provider=outcome.provider,
                model=outcome.model,
                answered_at=datetime.now(UTC),
            )
        )
