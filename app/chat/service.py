"""``ChatService.answer`` returns one ``ChatAnswer``; ``ChatService.stream`` yields the events the
HTTP layer renders as SSE. Both prepare the turn the same way (``app.chat.pipeline``) and end it in
one finishing step: mark the cited sources, cache the answer when the chain says it may be cached,
record the turn in memory with exactly the text and sources the client received, and leave the
answer's record in the answer ledger (who received which answer, for feedback). Answers known
without the router (a cache hit, "nothing matches") leave that record too."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from app.auth.principal import Principal
from app.cache.answers import CachedAnswer
from app.chat.pipeline import FixedAnswer, Preparation, Prepared, turn_record
from app.chat.ports import AnswerLedger, AnswerStore, Memory
from app.chat.types import ChatAnswer, ChatEvent, ChatInput, DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent
from app.db.unit_of_work import UnitOfWork
from app.feedback.ledger import AnsweredTurn
from app.limits import repository as budget_repository
from app.limits.budgets import ZERO_COST_PROVIDERS, TokenBudgets
from app.llm.chain import ProviderChain
from app.llm.types import (
    ChatRequest,
    Message,
    Passage,
    StreamContinued,
    StreamEnd,
    StreamFailed,
    StreamStart,
    TextDelta,
    Usage,
)
from app.observability.telemetry import Telemetry
from app.rag.prompt import Prompt
from app.rag.sources import Source, mark_cited
from app.settings import Settings


def _usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


@dataclass(frozen=True)
class Outcome:
    """How a routed answer ended: "ok", "failed" (degraded, or the stream broke) or "cancelled"
    (the client went away)."""

    text: str
    provider: str
    model: str
    usage: dict[str, int] | None
    status: str
    cacheable: bool = False


class _NoLedger:
    async def record(self, turn: AnsweredTurn) -> None:
        return None


class ChatService:
    def __init__(
        self,
        *,
        settings: Settings,
        preparation: Preparation,
        chain: ProviderChain,
        memory: Memory,
        cache: AnswerStore,
        unit_of_work: UnitOfWork,
        telemetry: Telemetry | None = None,
        ledger: AnswerLedger | None = None,
        budgets: TokenBudgets | None = None,
    ) -> None:
        self._settings = settings
        self._budgets = budgets
        self._preparation = preparation
        self._chain = chain
        self._memory = memory
        self._cache = cache
        self._unit_of_work = unit_of_work
        self._telemetry = telemetry or Telemetry.disabled()
        self._ledger: AnswerLedger = ledger or _NoLedger()

    def with_chain(self, chain: ProviderChain) -> ChatService:
        """This service answering with ``chain`` instead: a request's own, such as the one with
        the caller's provider keys (``app.llm.caller_keys``)."""
        twin = copy.copy(self)
        twin._chain = chain
        return twin

    def validate(self, chat: ChatInput) -> None:
        """Checks that must fail as a 4xx before any streaming starts (and before retrieval)."""
        self._chain.routes(chat.model)  # raises UnknownModelError (422) for an unknown pin
        self._preparation.validate(chat)

    def _router_request(self, chat: ChatInput, prompt: Prompt) -> ChatRequest:
        return ChatRequest(
            messages=tuple(Message(m.role, m.content) for m in prompt.messages),
            passages=tuple(
                Passage(number=n, text=c.text, title=c.title, page=c.page)
                for n, c in enumerate(prompt.passages, start=1)
            ),
            temperature=chat.temperature,
            max_tokens=chat.max_tokens or self._settings.answer_max_tokens,
            model=chat.model,
        )

    def _trace(self, principal: Principal, chat: ChatInput, *, stream: bool) -> Any:
        return self._telemetry.tracer.trace(
            "chat",
            input={"question": chat.question},
            metadata={"stream": stream, "top_k": chat.top_k, "mode": chat.mode.value, "model": chat.model},
            user_id=principal.id,
            session_id=chat.session,
        )

    async def _record_answered(
        self,
        principal: Principal,
        chat: ChatInput,
        prepared: Prepared,
        text: str,
        sources: list[Source],
        provider: str,
        model: str,
    ) -> None:
        """The answer's record in the ledger, before the client hears the end of the answer (so
        feedback sent right after it finds the record): one Redis write, never raising."""
        await self._ledger.record(
            AnsweredTurn.of(
                trace_id=prepared.trace_id,
                tenant_id=principal.tenant_id,
                principal_id=principal.id,
                question=chat.question,
                answer=text,
                sources=sources,
                provider=provider,
                model=model,
                answered_at=datetime.now(UTC),
            )
        )

    async def _record_fixed(
        self, principal: Principal, chat: ChatInput, prepared: Prepared, fixed: FixedAnswer
    ) -> None:
        await self._record_answered(
            principal, chat, prepared, fixed.text, prepared.sources, fixed.provider, fixed.model
        )

    def _spent(self, prepared: Prepared, outcome: Outcome) -> tuple[int, int]:
        """(prompt, completion) tokens the operator's provider was paid for: as it reported them,
        else as counted here (the prompt as fitted, the text as received); none for an answer no
        provider made (the apology, the extractive answerer)."""
        if outcome.provider in ZERO_COST_PROVIDERS:
            return 0, 0
        if outcome.usage is not None:
            return outcome.usage.get("prompt_tokens", 0), outcome.usage.get("completion_tokens", 0)
        prompt = prepared.prompt.tokens if prepared.prompt is not None else 0
        return prompt, self._preparation.count_tokens(outcome.text) if outcome.text else 0

    async def _settle(
        self, principal: Principal, chat: ChatInput, prompt: int, completion: int, outcome: Outcome
    ) -> None:
        if self._budgets is None:
            return
        await self._budgets.settle(chat.reservation, prompt + completion)
        if prompt + completion:
            cost = self._budgets.cost_micro_usd(outcome.provider, outcome.model, prompt, completion)
            self._telemetry.metrics.budget_settled(
                str(principal.tenant_id), outcome.provider, outcome.model, prompt, completion, cost / 1e6
            )

    async def release(self, chat: ChatInput) -> None:
        """Give back the request's reservation unless it was settled (a refused or failed request)."""
        if self._budgets is not None:
            await self._budgets.release(chat.reservation)

    async def _finish(
        self, principal: Principal, chat: ChatInput, prepared: Prepared, outcome: Outcome, *, streamed: bool
    ) -> tuple[list[Source], list[int]]:
        """The one ending of a routed answer, streamed or not. Memory keeps the sources exactly as
        the client got them: marked as cited in a JSON answer, as first sent in a stream (whose
        ``sources`` event precedes the text; ``done`` carries the cited numbers)."""
        sources, cited = mark_cited(prepared.sources, outcome.text)
        if outcome.status == "ok" and outcome.cacheable and prepared.cache_key is not None:
            answer = CachedAnswer(
                outcome.text, tuple(sources), outcome.provider, outcome.model, outcome.usage
            )
            await self._cache.put(prepared.cache_key, answer)
        prompt, completion = self._spent(prepared, outcome) if chat.operator_pays else (0, 0)
        accounted = self._budgets is not None and prompt + completion > 0
        recorded = None
        if chat.session is not None or accounted:
            # The turn and the settled usage (the durable copy of the budget counters): one commit.
            async with self._unit_of_work() as db:
                if chat.session is not None:
                    record = turn_record(
                        chat,
                        outcome.text,
                        prepared.sources if streamed else sources,
                        status=outcome.status,
                        provider=outcome.provider,
                        model=outcome.model,
                        trace_id=prepared.trace_id,
                    )
                    recorded = await self._memory.record_turn(db, principal, chat.session, record)
                if accounted and self._budgets is not None:
                    await budget_repository.add_usage(
                        db,
                        tenant_id=principal.tenant_id,
                        principal_id=principal.id,
                        provider=outcome.provider,
                        model=outcome.model,
                        day=datetime.now(UTC).date(),
                        prompt_tokens=prompt,
                        completion_tokens=completion,
                        cost_micro_usd=self._budgets.cost_micro_usd(
                            outcome.provider, outcome.model, prompt, completion
                        ),
                    )
                await db.commit()
        await self._settle(principal, chat, prompt, completion, outcome)
        if recorded is not None:
            await self._memory.publish(recorded)
        # The ledger holds answers: a broken stream (a failed attempt) is not one, and nobody is
        # left to rate an answer the client left. The apology (provider "none") is the service's.
        if outcome.status == "ok" or (outcome.status == "failed" and outcome.provider == "none"):
            await self._record_answered(
                principal, chat, prepared, outcome.text, sources, outcome.provider, outcome.model
            )
        return sources, cited

    # --- one-shot answers ------------------------------------------------------------------------

    async def answer(self, principal: Principal, chat: ChatInput) -> ChatAnswer:
        try:
            self.validate(chat)
            async with self._trace(principal, chat, stream=False) as trace:
                result = await self._answer(principal, chat)
                trace.update(output=result.answer)
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await self.release(chat)  # settled already unless it failed or cost nothing

    async def _answer(self, principal: Principal, chat: ChatInput) -> ChatAnswer:
        prepared = await self._preparation.prepare(principal, chat, self._chain)
        if prepared.fixed is not None or prepared.prompt is None:
            fixed = prepared.fixed
            assert fixed is not None  # a prompt is only missing when the turn is answered
            await self._record_fixed(principal, chat, prepared, fixed)
            return ChatAnswer(
                answer=fixed.text,
                sources=prepared.sources,
                provider=fixed.provider,
                model=fixed.model,
                cached=fixed.cached,
                degraded=False,
                trace_id=prepared.trace_id,
                usage=fixed.usage,
                latency_ms=prepared.elapsed_ms(),
                session_id=chat.session,
                retrieval_query=prepared.retrieval_query,
            )
        request = self._router_request(chat, prepared.prompt)
        async with self._telemetry.tracer.generation(
            "generation", model=chat.model, input=[m.__dict__ for m in request.messages]
        ) as generation:
            completion = await self._chain.complete(request)
            generation.update(output=completion.text, usage=_usage_dict(completion.usage))
        outcome = Outcome(
            text=completion.text,
            provider=completion.provider,
            model=completion.model,
            usage=_usage_dict(completion.usage),
            status="failed" if completion.degraded else "ok",
            cacheable=completion.cacheable,
        )
        sources, _ = await self._finish(principal, chat, prepared, outcome, streamed=False)
        return ChatAnswer(
            answer=completion.text,
            sources=sources,
            provider=completion.provider,
            model=completion.model,
            cached=False,
            degraded=completion.degraded,
            trace_id=prepared.trace_id,
            usage=outcome.usage,
            latency_ms=prepared.elapsed_ms(),
            session_id=chat.session,
            retrieval_query=prepared.retrieval_query,
        )

    # --- streaming -------------------------------------------------------------------------------

    async def stream(self, principal: Principal, chat: ChatInput) -> AsyncIterator[ChatEvent]:
        """Events: ``SourcesEvent`` first, ``DeltaEvent``s, then ``DoneEvent`` or ``ErrorEvent``.

        Call ``validate`` before starting the HTTP response so bad input is still a 4xx.
        """
        # Spans cannot stay open across yields (each chunk is produced in its own task), so the
        # trace covers the preparation and the generation is recorded once the stream ends.
        async with self._trace(principal, chat, stream=True):
            prepared = await self._preparation.prepare(principal, chat, self._chain)
        yield SourcesEvent(prepared.sources, prepared.retrieval_query)
        if prepared.fixed is not None or prepared.prompt is None:
            fixed = prepared.fixed
            assert fixed is not None
            await self._record_fixed(principal, chat, prepared, fixed)
            yield DeltaEvent(fixed.text, fixed.provider, fixed.model)
            yield DoneEvent(
                provider=fixed.provider,
                model=fixed.model,
                usage=fixed.usage,
                trace_id=prepared.trace_id,
                cached=fixed.cached,
                degraded=False,
                cited=[s.number for s in prepared.sources if s.cited],
                latency_ms=prepared.elapsed_ms(),
                session_id=chat.session,
            )
            return
        streamed: list[str] = []
        provider, model, status = "none", "none", "cancelled"
        speaking = ("none", "none")  # who produces the deltas: the starter, or a continuer
        try:
            async for event in self._chain.stream(self._router_request(chat, prepared.prompt)):
                if isinstance(event, StreamStart):
                    provider, model = event.provider, event.model
                    speaking = (provider, model)
                elif isinstance(event, StreamContinued):
                    speaking = (event.provider, event.model)
                elif isinstance(event, TextDelta):
                    streamed.append(event.text)
                    yield DeltaEvent(event.text, *speaking)
                elif isinstance(event, StreamEnd):
                    outcome = Outcome(
                        text="".join(streamed),
                        provider=event.provider,
                        model=event.model,
                        usage=_usage_dict(event.usage),
                        status="failed" if event.degraded else "ok",
                        cacheable=event.cacheable,
                    )
                    with anyio.CancelScope(shield=True):
                        _, cited = await self._finish(principal, chat, prepared, outcome, streamed=True)
                    status = outcome.status
                    yield DoneEvent(
                        provider=event.provider,
                        model=event.model,
                        usage=outcome.usage,
                        trace_id=prepared.trace_id,
                        cached=False,
                        degraded=event.degraded,
                        cited=cited,
                        latency_ms=prepared.elapsed_ms(),
                        session_id=chat.session,
                        continued_by=asdict(event.continued_by) if event.continued_by else None,
                    )
                elif isinstance(event, StreamFailed):
                    failed = Outcome("".join(streamed), provider, model, None, status="failed")
                    with anyio.CancelScope(shield=True):
                        await self._finish(principal, chat, prepared, failed, streamed=True)
                    status = failed.status
                    yield ErrorEvent(code=event.code, message=event.message, trace_id=prepared.trace_id)
        finally:
            self._telemetry.tracer.record_generation(
                "generation",
                model=model,
                output="".join(streamed),
                metadata={"provider": provider, "status": status, "stream": True},
            )
            if status == "cancelled":
                # The client went away (cancellation): shield the write so history holds exactly
                # what the client was sent, and how it ended.
                cancelled = Outcome("".join(streamed), provider, model, None, status="cancelled")
                with anyio.CancelScope(shield=True):
                    await self._finish(principal, chat, prepared, cancelled, streamed=True)
            with anyio.CancelScope(shield=True):
                await self.release(chat)
