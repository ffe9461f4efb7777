"""The retrieval stage embeds the question while the search starts: the search gets the vector as
pending, and whichever of the two fails first, the other is not left running or unread."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from typing import Any

import pytest

from app.chat.retrieval import RetrievalStage
from app.chat.types import ChatInput
from app.observability.telemetry import Telemetry
from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.rerank import NoReranker
from app.settings import Settings
from tests.support.embedders import HashingEmbedder
from tests.unit.chat.test_chat_service import ALICE
from tests.unit.chat.test_chat_service import CHUNK as SOME_CHUNK

pytestmark = pytest.mark.unit

CHUNK = replace(SOME_CHUNK, similarity=0.8, text_match=0.9)  # evidence the relevance gate admits


class HeldEmbedder(HashingEmbedder):
    """Holds each question until ``release`` is set; records a question it was cancelled in."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False
        self._error = error

    async def embed_query(self, text: str) -> list[float]:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self._error is not None:
            raise self._error
        return self.vector(text)


def stage(embedder: HeldEmbedder, retriever: Any) -> RetrievalStage:
    return RetrievalStage(
        settings=Settings(_env_file=None),
        retriever=retriever,
        embedder=embedder,
        reranker=NoReranker(),
        telemetry=Telemetry.disabled(),
    )


async def test_the_search_starts_before_the_question_is_embedded_and_then_gets_its_vector() -> None:
    embedder = HeldEmbedder()
    seen: list[bool] = []

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        await embedder.started.wait()
        seen.append(query.vector is None and query.has_vector)  # pending, not yet computed
        embedder.release.set()
        resolved = await query.with_vector()
        assert list(resolved.vector or ()) == embedder.vector("How long is the refund window?")
        return [CHUNK]

    found = await stage(embedder, retriever).search(None, ALICE, ChatInput("How long is the refund window?"))  # type: ignore[arg-type]
    assert found == [CHUNK] and seen == [True]


async def test_a_failed_search_cancels_the_embedding_it_did_not_wait_for() -> None:
    embedder = HeldEmbedder()

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        await embedder.started.wait()
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        await stage(embedder, retriever).search(None, ALICE, ChatInput("How long is the refund window?"))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the cancellation is delivered at the embedding's next step
    assert embedder.cancelled


async def test_a_failed_embedding_fails_the_search_with_its_own_error() -> None:
    embedder = HeldEmbedder(error=RuntimeError("the embedding model failed"))
    embedder.release.set()

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        await query.with_vector()
        return [CHUNK]

    with pytest.raises(RuntimeError, match="the embedding model failed"):
        await stage(embedder, retriever).search(None, ALICE, ChatInput("How long is the refund window?"))  # type: ignore[arg-type]


async def test_a_text_search_embeds_nothing() -> None:
    embedder = HeldEmbedder()
    queries: list[RetrievalQuery] = []

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        queries.append(query)
        return [CHUNK]

    chat = ChatInput("How long is the refund window?", mode=RetrievalMode.text)
    assert await stage(embedder, retriever).search(None, ALICE, chat) == [CHUNK]  # type: ignore[arg-type]
    assert not embedder.started.is_set() and not queries[0].has_vector


async def test_the_kept_question_vector_is_one_the_collector_does_not_walk() -> None:
    """Kept vectors are tuples of floats, which the collector stops tracking: a full collection
    walked every element of the lists they were, stalling the worker 41-56 ms each time."""
    embedder = HeldEmbedder()
    embedder.release.set()
    vectors: list[Any] = []

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        vectors.append((await query.with_vector()).vector)
        return [CHUNK]

    await stage(embedder, retriever).search(None, ALICE, ChatInput("How long is the refund window?"))  # type: ignore[arg-type]
    gc.collect()
    assert vectors and not gc.is_tracked(vectors[0])
