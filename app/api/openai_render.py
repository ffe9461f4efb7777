"""The wire format of ``POST /v1/chat/completions``' answers: a ``chat.completion`` object, or
``chat.completion.chunk`` events, with the ``rag`` extension field (``app.api.openai_compat``)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

from app.api.openai_errors import openai_code, stream_error_type
from app.api.openai_wire import BASE_MODEL
from app.chat.types import ChatAnswer, ChatEvent, DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent
from app.llm.chain import NO_PROVIDER
from app.observability.context import current_trace_id
from app.rag.sources import Source

# --- responses -------------------------------------------------------------------------------------


def answered_model(provider: str, model: str) -> str:
    """The public name of who answered: ``rag/<provider>/<model>``, or ``rag`` when no model did
    (provider "none")."""
    if not provider or provider == NO_PROVIDER:
        return BASE_MODEL
    return f"{BASE_MODEL}/{provider}/{model or provider}"


def _usage(usage: dict[str, int] | None) -> dict[str, dict[str, int]]:
    """``{"usage": …}`` for a response, or nothing when the usage is unknown (never zeros)."""
    if not usage:
        return {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens", prompt + completion),
        }
    }


def _rag(
    *,
    sources: list[Source],
    provider: str,
    model: str,
    cached: bool,
    degraded: bool,
    trace_id: str,
    session_id: str | None,
    latency_ms: float,
    continued_by: dict[str, str] | None = None,
    retrieval_query: str = "",
) -> dict[str, Any]:
    return {
        "sources": [s.to_dict() for s in sources],
        "provider": provider,
        "model": model,
        "cached": cached,
        "degraded": degraded,
        "trace_id": trace_id,
        "session_id": session_id,
        "latency_ms": latency_ms,
        "continued_by": continued_by,
        "retrieval_query": retrieval_query,
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


DONE = b"data: [DONE]\n\n"


class ChunkRenderer:
    """Turns the pipeline's events into ``chat.completion.chunk`` SSE events. Each chunk's
    ``model`` names the provider and model that produced its text, so the role chunk waits for
    the first text (who answers is known only then); the last chunk and the usage chunk name the
    last one that spoke."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id = f"chatcmpl-{current_trace_id() or uuid.uuid4().hex}"
        self.sources: list[Source] = []
        self.retrieval_query = ""
        self.model: str | None = None  # who spoke last; None before the first text

    def chunk(self, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    def render(self, event: ChatEvent) -> bytes:
        """The bytes for ``event`` (none for the sources: they go out with the last chunk).
        ``[DONE]`` ends a complete answer; an error payload, a failed one."""
        if isinstance(event, SourcesEvent):
            self.sources = event.sources
            self.retrieval_query = event.retrieval_query
            return b""
        if isinstance(event, DeltaEvent):
            return self.delta(event)
        if isinstance(event, DoneEvent):
            return self.done(event)
        return self.error(event)

    def delta(self, event: DeltaEvent) -> bytes:
        model = answered_model(event.provider, event.model)
        opening = b"" if self.model is not None else self.chunk(model, {"role": "assistant", "content": ""})
        self.model = model
        return opening + self.chunk(model, {"content": event.text})

    def done(self, event: DoneEvent) -> bytes:
        cited = set(event.cited)
        sources = [replace(s, cited=s.number in cited) for s in self.sources]
        rag = _rag(
            sources=sources,
            provider=event.provider,
            model=event.model,
            cached=event.cached,
            degraded=event.degraded,
            trace_id=event.trace_id,
            session_id=event.session_id,
            latency_ms=event.latency_ms,
            continued_by=event.continued_by,
            retrieval_query=self.retrieval_query,
        )
        model = self.model or answered_model(event.provider, event.model)
        out = self.chunk(model, {}, "stop", rag=rag)
        if self.include_usage and event.usage:
            out += _sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": model,
                    "choices": [],
                    **_usage(event.usage),
                }
            )
        return out + DONE

    @staticmethod
    def error(event: ErrorEvent) -> bytes:
        """No ``[DONE]`` after this: OpenAI's SDKs raise ``APIError`` on a data event carrying
        an ``error`` object (legacy stream mode), so a broken answer never looks complete."""
        return _sse(
            {
                "error": {
                    "message": event.message,
                    "type": stream_error_type(event.code),
                    "code": openai_code(event.code),
                    "param": None,
                    "trace_id": event.trace_id,
                }
            }
        )


def completion(answer: ChatAnswer) -> dict[str, Any]:
    """A non-streaming answer as OpenAI's ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{answer.trace_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answered_model(answer.provider, answer.model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.answer},
                "finish_reason": "stop",
            }
        ],
        **_usage(answer.usage),
        "rag": _rag(
            sources=answer.sources,
            provider=answer.provider,
            model=answer.model,
            cached=answer.cached,
            degraded=answer.degraded,
            trace_id=answer.trace_id,
            session_id=answer.session_id,
            latency_ms=answer.latency_ms,
            retrieval_query=answer.retrieval_query,
        ),
    }
