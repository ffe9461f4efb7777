"""The one entry to the chat pipeline, for every surface that answers questions.

A surface parses its wire format into an ``AskRequest`` and calls ``admit``: the settings'
defaults are filled in (``AskRequest.resolve``), the caller's own provider keys take over when
they brought some, and the chat rate limits are charged with the answer's worst case reserved on
the token budgets, once. ``/api/v1/chat`` and ``/v1/chat/completions`` take ``ChatEntryDep``
(which adds the answer and the event stream); the MCP ``ask`` tool calls ``admit`` itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse

from app.api.auth import require_role
from app.api.deps import resources_of
from app.api.limits import charge_answer
from app.api.provider_keys import GeminiKey, GroqKey, OpenAIKey, opened_caller_chain
from app.api.streaming import Render, stream_answer
from app.auth.principal import Principal, Role
from app.chat.request import AskRequest
from app.chat.service import ChatService
from app.chat.types import ChatAnswer, ChatInput
from app.limits.limiter import RequestLimiter
from app.limits.streams import StreamSlots
from app.llm.caller_keys import CallerChain
from app.settings import Settings

read_access = require_role(Role.reader)


@dataclass(frozen=True)
class Admitted:
    """A charged request: the service that answers it and the input it answers."""

    service: ChatService
    chat: ChatInput


async def admit(
    request: Request,
    limiter: RequestLimiter,
    principal: Principal,
    service: ChatService,
    settings: Settings,
    ask: AskRequest,
    caller: CallerChain | None = None,
) -> Admitted:
    """``ask`` made ready to answer: with the caller's keys their chain answers and the shared
    answer cache is left alone; charged (429 ``rate_limited`` / ``budget_exhausted``) once the
    body is valid, so a refused body holds no tokens."""
    chat = ask.resolve(settings)
    if caller is not None:
        service = service.with_chain(caller.chain)
        chat = replace(chat, shared_cache=False, operator_pays=False)
    return Admitted(service, await charge_answer(request, limiter, principal, chat))


@dataclass(frozen=True)
class ChatEntry:
    """What an HTTP chat surface needs to answer: the caller and the app's chat capabilities."""

    request: Request
    principal: Principal
    limiter: RequestLimiter
    settings: Settings
    slots: StreamSlots
    service: ChatService
    caller: CallerChain | None

    async def admit(self, ask: AskRequest) -> Admitted:
        return await admit(
            self.request, self.limiter, self.principal, self.service, self.settings, ask, self.caller
        )

    async def answer(self, admitted: Admitted) -> ChatAnswer:
        return await admitted.service.answer(self.principal, admitted.chat)  # settles or releases

    async def stream(self, admitted: Admitted, render: Render) -> StreamingResponse:
        return await stream_answer(
            admitted.service, self.principal, admitted.chat, self.slots, render, self.settings.sse_heartbeat_s
        )


async def chat_entry(
    request: Request, gemini: GeminiKey = None, groq: GroqKey = None, openai: OpenAIKey = None
) -> AsyncIterator[ChatEntry]:
    """One dependency for what used to be eight (the reader, each capability, the caller's
    chain): FastAPI solves each dependency on every request, and a chat request is the hot path."""
    principal = await read_access(request)
    services = resources_of(request.app)
    async with opened_caller_chain(services.caller_chains, gemini, groq, openai) as caller:
        yield ChatEntry(
            request,
            principal,
            services.limiter,
            services.settings,
            services.stream_slots,
            services.chat,
            caller,
        )


ChatEntryDep = Annotated[ChatEntry, Depends(chat_entry)]
