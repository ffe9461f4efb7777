"""``LocalEmbedder``: the part of a model run in this process that does not depend on its backend
(lazy loading off the loop, one inference at a time, concurrent questions batched, prefixes, the
dimension check)."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from app.rag.embeddings.base import EmbedderBase, EmbeddingError
from app.rag.embeddings.batching import QueryBatcher
from app.rag.embeddings.names import NO_PREFIXES, EmbeddingPrefixes
from app.rag.local_models import InferenceLock


class LocalEmbedder(EmbedderBase, ABC):
    """A model run in this process on CPU, whichever backend. It loads on first use (in a worker
    thread) so that processes which never embed pay nothing; one lock per event loop serialises
    inference, because a document batch already uses every core. ``prefixes`` go before each query and
    document text (``embed_query`` / ``embed_documents``; ``encode`` takes texts as they are).
    Questions asked at once share a model call (``QueryBatcher``; ``query_batch_window_s``: how
    long the first waits for company when the model is idle)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        prefixes: EmbeddingPrefixes = NO_PREFIXES,
        query_batch_window_s: float = 0.0,
    ) -> None:
        super().__init__(model_name + prefixes.identity, dimension, batch_size)
        self._prefixes = prefixes
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._infer_lock = InferenceLock()
        self._queries = QueryBatcher(
            self.encode_queries, self._infer_lock, window_s=query_batch_window_s, max_batch=batch_size
        )

    @abstractmethod
    def _load(self) -> Any:
        """The loaded model (blocking), whatever the backend needs to encode."""

    @abstractmethod
    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: one normalised vector per text, in order."""

    def _encode_queries(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: ``_encode`` for a batch of short questions (a backend may run them apart)."""
        return self._encode(model, texts)

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _require_dimension(self, actual: int) -> None:
        if actual != self._dimension:
            raise EmbeddingError(
                f"model {self._name!r} makes {actual}-d vectors but EMBEDDING_DIM is {self._dimension}: "
                f"set EMBEDDING_DIM={actual} (a new dimension needs a fresh database migrated with it)"
            )

    def load(self) -> None:
        """Load the weights now (blocking); workers call it at start instead of on the first job."""
        self._loaded()

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: one normalised vector per text as given, in order (benchmarks and tests)."""
        return self._encode(self._loaded(), texts)

    def encode_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: ``encode`` as questions are (prefixes already applied)."""
        return self._encode_queries(self._loaded(), texts)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        async with self._infer_lock.current():
            return await asyncio.to_thread(self.encode, texts)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await self._embed([self._prefixes.document + text for text in texts])

    async def embed_query(self, text: str) -> list[float]:
        return await self._queries.embed(self._prefixes.query + text)

    async def aclose(self) -> None:
        self._model = None
