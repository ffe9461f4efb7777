"""Local model directories and the ONNX Runtime plumbing that the local embedder
(``app.rag.embeddings``) and the cross-encoder reranker (``app.rag.rerank``) share: what a
directory holds (an ONNX export with its tokenizer.json, or a Hugging Face / sentence-transformers
model), how long its inputs may be, its tokenizer set up for batches, its inference session and the
inputs its graph takes, and a digest of the files that make its outputs. Nothing here downloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.errors import InternalError

# Where an ONNX export keeps its graph: at the top (optimum's export) or in onnx/ (Hugging Face
# repositories that ship both, sentence-transformers' own export).
ONNX_FILES = ("model.onnx", "onnx/model.onnx")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Subdirectories whose files are other runtimes' copies of the weights, never torch's.
OTHER_RUNTIMES = frozenset({"onnx", "openvino"})
DEFAULT_MAX_LENGTH = 512
# tokenizer_config.json says 1e30 when it does not know; anything this large means "unset".
UNSET_MODEL_MAX_LENGTH = 1_000_000


class InferenceLock:
    """One inference at a time per process, for whichever event loop asks.

    A model object can outlive an event loop (a test session's shared embedder; a server's model
    handed from one loop to the next), and an ``asyncio.Lock`` binds to the first loop that waits
    on it: queued callers on any later loop then fail. Callers on one loop still queue in order."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def current(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class LocalModelError(InternalError):
    """A local model directory is missing, incomplete or of a kind this service cannot run. The
    embedder and the reranker raise it as their own configuration errors, naming their setting."""

    code = "local_model_error"
    title = "Local model unusable"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise LocalModelError(f"{path} is not a JSON object")
    return value


def find_onnx_file(directory: Path) -> Path | None:
    for name in ONNX_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def find_tokenizer_file(directory: Path, onnx_file: Path | None) -> Path | None:
    """tokenizer.json next to the ONNX file, else at the top of the directory."""
    for candidate in ((onnx_file.parent,) if onnx_file else ()) + (directory,):
        if (candidate / "tokenizer.json").is_file():
            return candidate / "tokenizer.json"
    return None


def torch_weight_files(directory: Path) -> list[Path]:
    """The safetensors / pytorch_model*.bin files of a Hugging Face or sentence-transformers model,
    in a stable order (the ONNX and OpenVINO copies excluded)."""
    found = {
        path
        for pattern in WEIGHT_PATTERNS
        for path in directory.rglob(pattern)
        if path.is_file() and not OTHER_RUNTIMES & set(path.relative_to(directory).parts[:-1])
    }
    return sorted(found)


def onnx_weight_files(onnx_file: Path) -> list[Path]:
    """The graph and its external data files (graphs over 2 GB keep their weights beside them)."""
    extra = [
        onnx_file.with_name(onnx_file.name + suffix)
        for suffix in ("_data", ".data")
        if onnx_file.with_name(onnx_file.name + suffix).is_file()
    ]
    return [onnx_file, *extra]


def is_transformers_model(directory: Path) -> bool:
    """A directory transformers (and so sentence-transformers) can load: config.json and weights."""
    return (directory / "config.json").is_file() and bool(torch_weight_files(directory))


def max_sequence_length(directory: Path) -> int:
    """Tokens per input, as sentence-transformers decides it: ``max_seq_length`` of
    sentence_bert_config.json, else the tokenizer's ``model_max_length`` within the model's
    ``max_position_embeddings``, else 512."""
    sbert = read_json(directory / "sentence_bert_config.json") or {}
    if isinstance(sbert.get("max_seq_length"), int) and sbert["max_seq_length"] > 0:
        return int(sbert["max_seq_length"])
    limits = []
    tokenizer_config = read_json(directory / "tokenizer_config.json") or {}
    model_max = tokenizer_config.get("model_max_length")
    if isinstance(model_max, int | float) and 0 < model_max < UNSET_MODEL_MAX_LENGTH:
        limits.append(int(model_max))
    positions = (read_json(directory / "config.json") or {}).get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else DEFAULT_MAX_LENGTH


def _pad_token_named(directory: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        value = (read_json(directory / name) or {}).get("pad_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


def load_tokenizer(tokenizer_file: Path, *, max_length: int, pad_token: str | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` that truncates at ``max_length`` (longest sequence first, as
    transformers' ``truncation=True`` does for pairs) and pads each batch to its longest input.
    The pad token: ``pad_token``, else the one tokenizer_config.json names, else ``[PAD]`` or
    ``<pad>`` when the vocabulary has it, else id 0."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    candidates = [pad_token, _pad_token_named(tokenizer_file.parent), "[PAD]", "<pad>"]
    for token in candidates:
        if token is not None and tokenizer.token_to_id(token) is not None:
            tokenizer.enable_padding(pad_id=tokenizer.token_to_id(token), pad_token=token)
            break
    else:
        tokenizer.enable_padding(pad_id=0, pad_token=tokenizer.id_to_token(0) or "[PAD]")
    return tokenizer


@dataclass(frozen=True)
class OnnxSession:
    session: Any
    inputs: frozenset[str]

    def run(self, encodings: Sequence[Any]) -> list[Any]:
        """Every output of the graph for a tokenised batch; inputs the graph does not take (often
        ``token_type_ids``) are left out."""
        import numpy as np

        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        outputs: list[Any] = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})
        return outputs

    def output_names(self) -> list[str]:
        return [output.name for output in self.session.get_outputs()]

    def output_shape(self, index: int) -> list[int | str | None]:
        shape: list[int | str | None] = list(self.session.get_outputs()[index].shape)
        return shape


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, as a container's cpuset limits it)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_onnx_session(onnx_file: Path, *, threads: int = 0) -> OnnxSession:
    """Blocking: an ONNX Runtime session on CPU, logging errors only, running each call on
    ``threads`` threads (0: one per core, ONNX Runtime's default). Its threads sleep when idle:
    by default they spin after every call, burning the cores that the event loop, PostgreSQL and
    the next request need (a short query took three times as long beside one busy process). No
    memory arena: it kept the largest batch's buffers for good (about 800 MB after two batches of
    32 texts of 256 tokens, at the same speed without it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise LocalModelError(f"{onnx_file} is not an ONNX graph ONNX Runtime can run: {exc}") from exc
    inputs = frozenset(i.name for i in session.get_inputs())
    unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown or "input_ids" not in inputs:
        raise LocalModelError(
            f"{onnx_file} takes inputs {sorted(inputs)}; a BERT-like encoder takes input_ids, "
            "attention_mask and optionally token_type_ids"
        )
    return OnnxSession(session, inputs)


def quiet_progress_bars() -> None:
    """A server prints no progress bars, and starts no thread for them: tqdm's monitor thread
    (started by every bar, even a disabled one) would outlive each call."""
    import tqdm
    from transformers.utils import logging as transformers_logging

    tqdm.tqdm.monitor_interval = 0
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def offline() -> None:
    """Never reach for the Hugging Face hub: every model this service runs is a local directory."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def files_digest(directory: Path, files: Iterable[Path]) -> str:
    """A short SHA-256 of the files' names (relative to ``directory``) and contents."""
    parts = [(path.relative_to(directory).as_posix(), _file_digest(*_stat_key(path))) for path in files]
    return hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()[:12]


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Remembered per (path, size, mtime): each process hashes a weights file once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
