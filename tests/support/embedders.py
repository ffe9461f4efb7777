"""Embedders for tests: a pure deterministic one for unit tests, a counting wrapper that records
what a real embedder was asked to embed, and a gated one that holds ingestion in its embedding."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.rag.embeddings import Embedder


class HashingEmbedder:
    """Bag-of-words feature hashing, L2-normalised: same text → same vector, shared words → close
    vectors. No model, no threads; good enough to make retrieval order meaningful in unit tests."""

    def __init__(self, dimension: int = 384, model_name: str = "test-hashing") -> None:
        self._dimension = dimension
        self._name = model_name

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    def vector(self, text: str) -> list[float]:
        values = [0.0] * self._dimension
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self._dimension
            values[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [v / norm for v in values]

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        return self.vector(text)

    async def aclose(self) -> None:
        return None


@dataclass
class _Wrapping:
    """Delegates to ``inner``, which belongs to the session (closing the wrapper leaves it open)."""

    inner: Embedder

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed_documents(texts)

    async def embed_query(self, text: str) -> list[float]:
        return await self.inner.embed_query(text)

    async def aclose(self) -> None:
        return None


@dataclass
class CountingEmbedder(_Wrapping):
    """Records every text it embedded (for "only that page" asserts)."""

    texts: list[str] = field(default_factory=list)
    calls: int = 0

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed_documents(texts)

    def reset(self) -> None:
        self.texts.clear()
        self.calls = 0


@dataclass
class GatedEmbedder(_Wrapping):
    """Holds every embedding call until ``release`` is set (``embedding``: one has begun)."""

    embedding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedding.set()
        await self.release.wait()
        return await self.inner.embed_documents(texts)
