"""Rate-limit dependencies for endpoints.

``ChatRateLimit`` resolves the calling principal (any role) and charges its tenant's chat budget
(``RATE_LIMIT_PER_TENANT``, shared by all of the tenant's principals) and its own
(``RATE_LIMIT_PER_PRINCIPAL``); ``UploadRateLimit`` resolves an editor and charges its upload
budget (``RATE_LIMIT_UPLOADS``). The per-IP budget (``RATE_LIMIT_PER_IP``) is already charged by
the authentication middleware, once per request. Use them in place of the principal parameter::

    async def ask(body: ChatRequest, principal: ChatRateLimit) -> ChatResponse: ...
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import EditorPrincipal, ReaderPrincipal
from app.api.deps import LimiterDep
from app.auth.principal import Principal
from app.chat.types import ChatInput
from app.limits.enforcement import charge, charge_chat, principal_identity
from app.limits.limiter import Budget, RequestLimiter


async def chat_rate_limit(request: Request, principal: ReaderPrincipal, limiter: LimiterDep) -> Principal:
    await charge_chat(request, limiter, principal)
    return principal


async def upload_rate_limit(request: Request, principal: EditorPrincipal, limiter: LimiterDep) -> Principal:
    await charge(request, limiter, Budget.uploads, principal_identity(principal))
    return principal


ChatRateLimit = Annotated[Principal, Depends(chat_rate_limit)]
UploadRateLimit = Annotated[Principal, Depends(upload_rate_limit)]


async def charge_answer(
    request: Request, limiter: RequestLimiter, principal: Principal, chat: ChatInput
) -> ChatInput:
    """``chat`` with its reservation, once the chat rate limits are charged and its worst case is
    reserved on the token budgets, in one round trip (429 ``rate_limited`` / ``budget_exhausted``).
    Endpoints that answer call it once the body is valid, so a refused body holds no tokens; an
    answer with the caller's own keys reserves none."""
    budgets = limiter.token_budgets if chat.operator_pays else None
    reservation = await charge_chat(
        request, limiter, principal, token_budgets=budgets, max_tokens=chat.max_tokens
    )
    return replace(chat, reservation=reservation)
