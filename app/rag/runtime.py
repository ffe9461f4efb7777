"""What the retrieval capability adds to a process: the embedder (the one the settings name, or one
the caller shares), the reranker (``RERANKER``), the retriever (on a read replica when
``DATABASE_REPLICA_URLS`` names some) and the counter of the embedding model's tokens. Each that
holds a model or a client is closed when the process's exit stack closes."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.replicas import ReadSessions
from app.rag.embeddings import Embedder, LocalEmbedder, create_embedder
from app.rag.query import RetrievalQuery, RetrievedChunk
from app.rag.replica_retrieval import CorpusVersionOf, ReplicaRetriever
from app.rag.rerank import Reranker, open_reranker
from app.rag.retrieval import retrieve
from app.rag.tokens import WordPieceTokenCounter
from app.settings import Settings


class Retriever(Protocol):
    """A search over the tenant's current chunks in the session given (or on a replica)."""

    async def __call__(self, db: AsyncSession, query: RetrievalQuery) -> list[RetrievedChunk]: ...


@dataclass(frozen=True)
class RagRuntime:
    embedder: Embedder
    reranker: Reranker
    retriever: Retriever
    counter: WordPieceTokenCounter


async def open_embedder(settings: Settings, stack: AsyncExitStack) -> Embedder:
    """The settings' embedder, closed when ``stack`` closes, and loaded now (off the loop) when
    EMBEDDING_WARM_UP says the local models load at start: the first question should not pay
    for loading the weights."""
    embedder = create_embedder(settings)
    stack.push_async_callback(embedder.aclose)
    if settings.embedding_warm_up and isinstance(embedder, LocalEmbedder):
        await asyncio.to_thread(embedder.load)
    return embedder


async def start_rag(
    stack: AsyncExitStack,
    settings: Settings,
    read_sessions: ReadSessions,
    *,
    corpus_version: CorpusVersionOf,
    embedder: Embedder | None = None,
) -> RagRuntime:
    """``corpus_version`` reads a tenant's corpus version in a session: a replica serves a search
    only while it has the primary's. ``embedder`` shares an already-loaded model (it then stays
    the caller's to close)."""
    reranker = await open_reranker(settings, stack)
    if embedder is None:
        embedder = await open_embedder(settings, stack)
    retriever: Retriever = (
        ReplicaRetriever(read_sessions, retrieve, corpus_version) if read_sessions.configured else retrieve
    )
    counter = WordPieceTokenCounter(settings.embedding_tokenizer_path)
    return RagRuntime(embedder=embedder, reranker=reranker, retriever=retriever, counter=counter)
