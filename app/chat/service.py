"""``ChatService.answer`` returns one ``ChatAnswer``; ``ChatService.stream`` yields the events the
HTTP layer renders as SSE. Both prepare the turn the same way (``app.chat.pipeline``), which gives
a ``FixedTurn`` (answered without the router, and finished already) or a ``RoutedTurn``, whose
answer from the provider chain ends in the same finishing step (``app.chat.finish``)."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import asdict
from typing import Any

import anyio

from app.auth.principal import Principal
from app.chat.finish import NoLedger, TurnFinisher
from app.chat.pipeline import Preparation
from app.chat.ports import AnswerLedger, AnswerStore, Memory
from app.chat.retrieval import RetrievalStage
from app.chat.turns import FixedTurn, Outcome, PreparedTurn, RoutedTurn, TurnStatus
from app.chat.types import ChatAnswer, ChatEvent, ChatInput, DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent
from app.db.unit_of_work import UnitOfWork
from app.limits.budgets import TokenBudgets
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
from app.rag.sources import Source
from app.settings import Settings


def _usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _status(degraded: bool) -> TurnStatus:
    return TurnStatus.failed if degraded else TurnStatus.ok


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
        self._preparation = preparation
        self._chain = chain
        self._telemetry = telemetry or Telemetry.disabled()
        self._finisher = TurnFinisher(
            memory=memory,
            cache=cache,
            unit_of_work=unit_of_work,
            telemetry=self._telemetry,
            ledger=ledger or NoLedger(),
            budgets=budgets,
            count_tokens=preparation.count_tokens,
        )

    @property
    def retrieval(self) -> RetrievalStage:
        """The retrieval stage of this pipeline, for a search without an answer (MCP)."""
        return self._preparation.retrieval

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

    async def _prepare(self, principal: Principal, chat: ChatInput) -> PreparedTurn:
        return await self._preparation.prepare(principal, chat, self._finisher, self._chain)

    async def _finish(
        self, principal: Principal, chat: ChatInput, turn: RoutedTurn, outcome: Outcome, *, streamed: bool
    ) -> list[int]:
        with anyio.CancelScope(shield=True):  # the client going away must not cut the record short
            finished = await self._finisher.finish(principal, chat, turn, outcome, streamed=streamed)
        return finished.cited

    async def release(self, chat: ChatInput) -> None:
        """Give back the request's reservation unless it was settled (a refused or failed request)."""
        await self._finisher.release(chat)

    def _answer_of(
        self, chat: ChatInput, turn: PreparedTurn, outcome: Outcome, sources: list[Source]
    ) -> ChatAnswer:
        return ChatAnswer(
            answer=outcome.text,
            sources=sources,
            provider=outcome.provider,
            model=outcome.model,
            cached=outcome.cached,
            degraded=outcome.degraded,
            trace_id=turn.trace_id,
            usage=outcome.usage,
            latency_ms=turn.elapsed_ms(),
            session_id=chat.session,
            retrieval_query=turn.retrieval_query,
        )

    def _done(
        self,
        chat: ChatInput,
        turn: PreparedTurn,
        outcome: Outcome,
        cited: list[int],
        continued_by: dict[str, str] | None = None,
    ) -> DoneEvent:
        return DoneEvent(
            provider=outcome.provider,
            model=outcome.model,
            usage=outcome.usage,
            trace_id=turn.trace_id,
            cached=outcome.cached,
            degraded=outcome.degraded,
            cited=cited,
            latency_ms=turn.elapsed_ms(),
            session_id=chat.session,
            continued_by=continued_by,
        )

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
        turn = await self._prepare(principal, chat)
        if isinstance(turn, FixedTurn):
            return self._answer_of(chat, turn, turn.outcome, turn.sources)
        request = self._router_request(chat, turn.prompt)
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
            status=_status(completion.degraded),
            cacheable=completion.cacheable,
        )
        finished = await self._finisher.finish(principal, chat, turn, outcome, streamed=False)
        return self._answer_of(chat, turn, outcome, finished.sources)

    # --- streaming -------------------------------------------------------------------------------

    async def stream(self, principal: Principal, chat: ChatInput) -> AsyncIterator[ChatEvent]:
        """Events: ``SourcesEvent`` first, ``DeltaEvent``s, then ``DoneEvent`` or ``ErrorEvent``.

        Call ``validate`` before starting the HTTP response so bad input is still a 4xx.
        """
        try:
            # Spans cannot stay open across yields (each chunk is produced in its own task), so
            # the trace covers the preparation and the generation is recorded once the stream ends.
            async with self._trace(principal, chat, stream=True):
                turn = await self._prepare(principal, chat)
            yield SourcesEvent(turn.sources, turn.retrieval_query)
            if isinstance(turn, FixedTurn):
                yield DeltaEvent(turn.outcome.text, turn.outcome.provider, turn.outcome.model)
                yield self._done(chat, turn, turn.outcome, turn.cited)
                return
            async with aclosing(self._stream_routed(principal, chat, turn)) as events:
                async for event in events:  # closed with this stream: a cancelled turn is recorded
                    yield event
        finally:
            with anyio.CancelScope(shield=True):
                await self.release(chat)

    async def _stream_routed(
        self, principal: Principal, chat: ChatInput, turn: RoutedTurn
    ) -> AsyncGenerator[ChatEvent, None]:
        streamed: list[str] = []
        provider, model, status = "none", "none", TurnStatus.cancelled
        speaking = ("none", "none")  # who produces the deltas: the starter, or a continuer
        try:
            async for event in self._chain.stream(self._router_request(chat, turn.prompt)):
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
                        "".join(streamed),
                        event.provider,
                        event.model,
                        _usage_dict(event.usage),
                        _status(event.degraded),
                        cacheable=event.cacheable,
                    )
                    cited = await self._finish(principal, chat, turn, outcome, streamed=True)
                    status = outcome.status
                    continued = asdict(event.continued_by) if event.continued_by else None
                    yield self._done(chat, turn, outcome, cited, continued_by=continued)
                elif isinstance(event, StreamFailed):
                    status = TurnStatus.failed
                    failed = Outcome("".join(streamed), provider, model, None, status)
                    await self._finish(principal, chat, turn, failed, streamed=True)
                    yield ErrorEvent(code=event.code, message=event.message, trace_id=turn.trace_id)
        finally:
            self._telemetry.tracer.record_generation(
                "generation",
                model=model,
                output="".join(streamed),
                metadata={"provider": provider, "status": status.value, "stream": True},
            )
            if status is TurnStatus.cancelled:
                # The client went away (cancellation): the record holds exactly what the client
                # was sent, and how it ended.
                cancelled = Outcome("".join(streamed), provider, model, None, status)
                await self._finish(principal, chat, turn, cancelled, streamed=True)
