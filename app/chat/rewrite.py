"""The query a chat turn searches: the follow-up made standalone before retrieval.

``CONVERSATION_REWRITE`` chooses how:

- ``off``: the literal question;
- ``offline`` (default): ``app.rag.followup.retrieval_query``, no model and no network;
- ``llm``: the router rewrites a follow-up into a standalone question, with the request's own
  chain (the caller's provider keys first when they sent some), a token cap of
  ``CONVERSATION_REWRITE_MAX_TOKENS`` and at most ``CONVERSATION_REWRITE_TIMEOUT_S`` added to the
  answer. Rewrites are cached in Redis by the conversation and the question. Any failure, a
  timeout, an unusable rewrite or the extractive fallback answering gives the offline query.

A first turn is never rewritten: it is searched as asked, whatever the setting.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.db.redis import KeySpace
from app.llm.chain import NO_PROVIDER, ProviderChain
from app.llm.extractive import EXTRACTIVE
from app.llm.types import ChatRequest, Message
from app.observability.telemetry import Telemetry
from app.rag.followup import retrieval_query
from app.rag.prompt import Turn
from app.settings import Settings

logger = structlog.get_logger(__name__)

REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last question as one standalone search query for a document search, "
    "naming the subject it refers to from the conversation. If it is already standalone or "
    "changes topic, repeat it unchanged. Answer with the query only, on one line, no quotes."
)
# Turns of the conversation shown to the rewriter (the most recent ones) and their length cap.
REWRITE_TURNS = 3
REWRITE_TURN_CHARS = 600
MAX_REWRITE_CHARS = 500


def _conversation_text(history: Sequence[Turn]) -> str:
    lines = []
    for turn in history[-REWRITE_TURNS:]:
        lines.append(f"User: {turn.question[:REWRITE_TURN_CHARS]}")
        lines.append(f"Assistant: {turn.answer[:REWRITE_TURN_CHARS]}")
    return "\n".join(lines)


def _usable(text: str, question: str) -> str | None:
    """The rewrite's first non-empty line, unquoted; None when empty or runaway."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = line.strip("\"'` ").removeprefix("Query:").strip()
    if not line or len(line) > max(MAX_REWRITE_CHARS, 2 * len(question)):
        return None
    return line


class QueryRewriter:
    def __init__(self, settings: Settings, redis: Redis | None, keys: KeySpace, telemetry: Telemetry) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = keys
        self._telemetry = telemetry

    @property
    def mode(self) -> str:
        return self._settings.conversation_rewrite

    async def __call__(self, question: str, history: Sequence[Turn], chain: ProviderChain | None) -> str:
        """The text to embed and search for ``question`` asked after ``history``."""
        if self.mode == "off" or not history:
            return question
        offline = retrieval_query(question, history)
        if self.mode != "llm" or chain is None:
            return offline
        return await self._rewrite(question, history, chain, offline)

    def _key(self, question: str, history: Sequence[Turn]) -> str:
        state = json.dumps([[t.question, t.answer] for t in history[-REWRITE_TURNS:]] + [question])
        return self._keys.key("rewrite", hashlib.sha256(state.encode()).hexdigest())

    async def _cached(self, key: str) -> str | None:
        if self._redis is None or self._settings.conversation_rewrite_cache_ttl_s == 0:
            return None
        try:
            value = await self._redis.get(key)
        except RedisError:
            logger.warning("query_rewrite_cache_unavailable")
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def _store(self, key: str, rewrite: str) -> None:
        ttl = self._settings.conversation_rewrite_cache_ttl_s
        if self._redis is None or ttl == 0:
            return
        try:
            await self._redis.set(key, rewrite, ex=ttl)
        except RedisError:
            logger.warning("query_rewrite_cache_unavailable")

    async def _ask(
        self, question: str, history: Sequence[Turn], chain: ProviderChain
    ) -> tuple[str, str | None]:
        request = ChatRequest(
            messages=(
                Message("system", REWRITE_INSTRUCTIONS),
                Message("user", f"{_conversation_text(history)}\n\nLast question: {question}"),
            ),
            temperature=0.0,
            max_tokens=self._settings.conversation_rewrite_max_tokens,
        )
        try:
            with anyio.fail_after(self._settings.conversation_rewrite_timeout_s):
                completion = await chain.complete(request)
        except TimeoutError:
            return "timeout", None
        except Exception as error:
            logger.warning("query_rewrite_failed", error=type(error).__name__)
            return "failed", None
        if completion.degraded or completion.provider in (NO_PROVIDER, EXTRACTIVE):
            return "failed", None
        rewrite = _usable(completion.text, question)
        return ("rewritten", rewrite) if rewrite is not None else ("unusable", None)

    async def _rewrite(
        self, question: str, history: Sequence[Turn], chain: ProviderChain, offline: str
    ) -> str:
        started = time.perf_counter()
        key = self._key(question, history)
        async with self._telemetry.tracer.span(
            "query_rewrite", input={"question": question, "turns": len(history)}
        ) as span:
            rewrite = await self._cached(key)
            outcome = "cached"
            if rewrite is None:
                outcome, rewrite = await self._ask(question, history, chain)
                if rewrite is not None:
                    await self._store(key, rewrite)
            span.update(output={"outcome": outcome, "query": rewrite or offline})
        self._telemetry.metrics.query_rewrite(outcome, time.perf_counter() - started)
        return rewrite or offline
