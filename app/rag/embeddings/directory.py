"""The directory ``EMBEDDING_MODEL_PATH`` names, as found on disk: an ONNX export the ONNX backend
can run (``OnnxRecipe``), a sentence-transformers model, the dimension its configuration states, and
the stored name its vectors get (``ModelDirectory.stored_name``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.rag.embeddings.base import EmbeddingError
from app.rag.embeddings.names import DIRECTORY_BACKEND_SUFFIXES
from app.rag.local_models import (
    LocalModelError,
    files_digest,
    find_onnx_file,
    find_tokenizer_file,
    is_transformers_model,
    max_sequence_length,
    onnx_weight_files,
    read_json,
    torch_weight_files,
)

# all-MiniLM-L6-v2's sentence_bert_config.json: sentence-transformers truncates at 256 tokens.
MAX_SEQ_LENGTH = 256
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
