"""What every embedder is and shares: the ``Embedder`` protocol, its error, and the base of the
provider classes (a model name, a dimension, a batch size; a query as a one-text batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from app.errors import InternalError


class EmbeddingError(InternalError):
    """A provider failed to embed (network, quota, malformed answer, wrong dimension), or a cloud
    provider has no key, or the local model is misconfigured. Not the request's fault: a client
    sees the generic 500; at start it stops the service with its message."""


@runtime_checkable
class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; batching is the embedder's business."""
        ...

    async def embed_query(self, text: str) -> list[float]: ...

    async def aclose(self) -> None: ...


def batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def length_sorted_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of ``size``, longest text first (as sentence-transformers
    does): texts of similar length share a batch, so a batch padded to its longest text is mostly
    text, not padding. Callers put each vector back at its index."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[start : start + size] for start in range(0, len(order), max(1, size))]


def check_dimension(vectors: list[list[float]], expected: int, model: str) -> list[list[float]]:
    for vector in vectors:
        if len(vector) != expected:
            raise EmbeddingError(
                f"model {model!r} returned {len(vector)}-d vectors; EMBEDDING_DIM is {expected}"
            )
    return vectors


class EmbedderBase:
    """What every embedder shares: its model's name and dimension, and a query as a one-text batch."""

    def __init__(self, model_name: str, dimension: int, batch_size: int) -> None:
        self._name = model_name
        self._dimension = dimension
        self._batch_size = batch_size

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed_documents([text]))[0]
