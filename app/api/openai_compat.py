"""OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client (the official SDKs, LangChain, curl) talks to the RAG pipeline by pointing its
base URL at ``<server>/v1`` and using an API key of this service as its bearer token. Requests run
on exactly the pipeline of ``POST /api/v1/chat`` (``ChatService``: same authentication, rate limits,
stream slots, answer cache, tracing and metrics); only the wire shapes differ.

Models: ``rag`` answers with the provider fail-over chain; ``rag/<provider>`` and
``rag/<provider>/<model>`` pin one provider (and model), like ``model`` on ``/api/v1/chat``.

Messages: the last ``user`` message is the question. ``system``/``developer``/``tool`` messages are
accepted and ignored (the pipeline has its own grounded system prompt). ``metadata.session_id`` (any
session id ``/api/v1/chat`` accepts) or a UUID in ``user`` binds the request to a stored
conversation, whose memory is used and which records the turn; without one, requests are stateless.

The ``model`` of a response and of every chunk names who answered: ``rag/<provider>/<model>``
with the model as the provider's own response named it (``rag/groq/llama-3.3-70b-versatile``;
the configured name only when the provider names none), ``rag`` alone when no model answered (the
"nothing matches" answer, the apology when every provider is down). A stream that another
provider continued after a break names the continuer in its later chunks (``answered_model``).
``usage`` is the answering call's own; when it is unknown (a provider that reports none, a
continued stream) it is left out, never zeros.

The ``rag`` extension field: a non-streaming response, and the last chunk of a stream, carry
``rag: {sources, provider, model, cached, degraded, trace_id, session_id, latency_ms,
continued_by, retrieval_query}`` (``retrieval_query``: what was searched, the last user message
made standalone from the earlier ``messages``); OpenAI SDKs keep unknown fields
(``completion.model_extra["rag"]`` / ``completion.to_dict()["rag"]``).

Errors use OpenAI's shape, ``{"error": {"message", "type", "code", "param", "trace_id"}}``, with
OpenAI's statuses (401 ``invalid_api_key``, 404 ``model_not_found``, 400 for invalid input, 429
with ``Retry-After``), so the SDKs raise their usual exception classes. A stream that fails after
it started ends with ``data: {"error": {...}}`` and no ``[DONE]``: the SDKs raise ``APIError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from app.api.asking import ChatEntryDep
from app.api.auth import ReaderPrincipal
from app.api.deps import ChainDep
from app.api.openai_errors import model_not_found, openai_error_for_exception
from app.api.openai_render import ChunkRenderer, completion
from app.api.openai_wire import BASE_MODEL, ChatCompletionBody, to_ask
from app.llm.chain import ProviderChain

logger = structlog.get_logger(__name__)

OWNED_BY = "ragchat"
MODELS_CREATED = int(time.time())


class OpenAIRoute(APIRoute):
    """Renders every failure of its endpoint, including body validation and the dependencies'
    401/429, in OpenAI's error shape; the app's problem+json handlers never see them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return await openai_error_for_exception(request, exc)

        return openai_handler


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

# --- endpoints -------------------------------------------------------------------------------------


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion over your documents",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: ChatCompletionBody, entry: ChatEntryDep) -> Response:
    admitted = await entry.admit(to_ask(body))
    if not body.stream:
        return JSONResponse(completion(await entry.answer(admitted)))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await entry.stream(admitted, ChunkRenderer(include_usage).render)


async def _model_ids(chain: ProviderChain) -> list[str]:
    statuses = await chain.status()
    return [BASE_MODEL, *(f"{BASE_MODEL}/{s.name}" for s in statuses if s.configured)]


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": OWNED_BY}


@router.get("/models", summary="OpenAI-compatible list of models")
async def list_models(_: ReaderPrincipal, chain: ChainDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in await _model_ids(chain)]}


@router.get("/models/{model_id:path}", summary="OpenAI-compatible model lookup", response_model=None)
async def retrieve_model(model_id: str, _: ReaderPrincipal, chain: ChainDep) -> Response:
    if model_id not in await _model_ids(chain):
        return model_not_found(f"The model {model_id!r} does not exist")
    return JSONResponse(_model(model_id))
