"""An optional rerank stage between retrieval and the prompt, behind one interface, ``Reranker``.

``RERANKER=none`` (the default) is ``NoReranker``: retrieval is asked for the request's ``top_k``
and nothing else happens. ``RERANKER=cross-encoder`` is ``CrossEncoderReranker``: retrieval is asked
for ``max(top_k, RERANKER_CANDIDATES)`` chunks, a cross-encoder read from the local directory
``RERANKER_MODEL_PATH`` scores each (question, chunk text) pair, and the ``top_k`` best, in score
order and carrying that score, go on to the prompt. The directory is either an ONNX export
(``model.onnx`` or ``onnx/model.onnx`` with tokenizer.json; ONNX Runtime, no torch) or, without
one, a sentence-transformers ``CrossEncoder`` / Hugging Face sequence-classification model (torch,
``requirements-local.txt``). A head with one logit scores ``sigmoid(logit)``, one with two the
softmax probability of label 1, so both backends give the same scores in [0, 1]. Nothing is
downloaded; inference runs in a worker thread, one question at a time per process.

A question waits at most ``RERANKER_WAIT_S`` for the questions ahead of it (whatever their tenant);
past that the reranker is ``RerankerBusyError`` and ``rerank_stage`` keeps the retrieval order
(``rerank_skipped_total``), so a burst from one tenant costs the others ordering quality, never
an unbounded queue.

The retrieval stage (``app.chat.retrieval``), which the chat pipeline and the MCP server's
``search_documents`` share, runs it through ``retrieval_depth`` and ``rerank_stage``, which records
a ``rerank`` span and ``rerank_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from app.errors import InternalError
from app.rag.local_models import (
    InferenceLock,
    LocalModelError,
    find_onnx_file,
    find_tokenizer_file,
    is_transformers_model,
    load_tokenizer,
    max_sequence_length,
    offline,
    open_onnx_session,
    quiet_progress_bars,
)
from app.rag.query import RetrievedChunk

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from app.observability.telemetry import Telemetry
    from app.settings import Settings

RERANK_BATCH_SIZE = 32
DEFAULT_WAIT_S = 1.0  # RERANKER_WAIT_S


class RerankerError(InternalError):
    """The reranker is misconfigured (no or a bad RERANKER_MODEL_PATH, a runtime not installed) or
    its model failed. Not the request's fault; at start it stops the service with its message."""

    code = "reranker_error"
    title = "Reranker unusable"


class RerankerBusyError(RerankerError):
    """Other questions held the reranker for longer than this one may wait (RERANKER_WAIT_S).
    ``rerank_stage`` answers it with the retrieval order; it never reaches a client."""

    code = "reranker_busy"
    title = "Reranker busy"


@runtime_checkable
class Reranker(Protocol):
    async def rerank(
        self, question: str, chunks: Sequence[RetrievedChunk], top_k: int
    ) -> list[RetrievedChunk]:
        """The ``top_k`` chunks most relevant to ``question``, best first."""
        ...

    async def aclose(self) -> None: ...


class NoReranker:
    """``RERANKER=none``: the retrieval order stands."""

    async def rerank(
        self, question: str, chunks: Sequence[RetrievedChunk], top_k: int
    ) -> list[RetrievedChunk]:
        return list(chunks[:top_k])

    async def aclose(self) -> None:
        return None


def relevance(logits: Any) -> Any:
    """Scores in [0, 1] from a cross-encoder's logits: sigmoid of a single logit, softmax
    probability of label 1 for two."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-values[:, 0]))
    if values.shape[1] == 2:
        shifted = values - values.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp[:, 1] / exp.sum(axis=1)
    raise RerankerError(f"a cross-encoder gives 1 or 2 logits per pair; this one gives {values.shape[1]}")


class CrossEncoderReranker:
    """Scores (question, passage) pairs with the cross-encoder in ``model_path``: its ONNX export
    on ONNX Runtime when it has one, else sentence-transformers' ``CrossEncoder`` on torch. Pairs
    are truncated longest-first at the model's maximum length (as transformers does). The model
    loads on first use (``load`` loads it now)."""

    def __init__(
        self, model_path: Path, *, batch_size: int = RERANK_BATCH_SIZE, wait_s: float = DEFAULT_WAIT_S
    ) -> None:
        setting = f"RERANKER_MODEL_PATH={model_path}"
        if not model_path.is_dir():
            raise RerankerError(f"{setting} is not a directory")
        try:
            onnx_file = find_onnx_file(model_path)
            tokenizer_file = find_tokenizer_file(model_path, onnx_file)
            transformers_model = is_transformers_model(model_path)
            self._max_length = max_sequence_length(model_path)
        except LocalModelError as exc:
            raise RerankerError(f"{setting}: {exc}") from exc
        self.backend: Literal["onnx", "torch"]
        if onnx_file is not None and tokenizer_file is not None:
            self.backend = "onnx"
        elif transformers_model:
            if importlib.util.find_spec("sentence_transformers") is None:
                raise RerankerError(
                    f"{setting} has no ONNX export (model.onnx and tokenizer.json), so it runs on "
                    "sentence-transformers and torch, which are not installed: install "
                    "requirements-local.txt or export the model to ONNX"
                )
            self.backend = "torch"
        elif onnx_file is not None:
            raise RerankerError(f"{setting} has {onnx_file.relative_to(model_path)} but no tokenizer.json")
        else:
            raise RerankerError(
                f"{setting} holds neither an ONNX export of a cross-encoder (model.onnx or onnx/model.onnx "
                "with tokenizer.json) nor a sentence-transformers CrossEncoder / Hugging Face "
                "sequence-classification model (config.json with model.safetensors or pytorch_model.bin)"
            )
        self.path = model_path
        self._onnx_file = onnx_file
        self._tokenizer_file = tokenizer_file
        self._batch_size = batch_size
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._infer_lock = InferenceLock()
        self._wait_s = wait_s

    def _load(self) -> Any:
        if self.backend == "onnx":
            assert self._onnx_file is not None
            assert self._tokenizer_file is not None
            try:
                tokenizer = load_tokenizer(self._tokenizer_file, max_length=self._max_length)
                session = open_onnx_session(self._onnx_file)
            except LocalModelError as exc:
                raise RerankerError(str(exc)) from exc
            names = session.output_names()
            return tokenizer, session, names.index("logits") if "logits" in names else 0
        offline()
        quiet_progress_bars()
        import torch
        from sentence_transformers import CrossEncoder

        return CrossEncoder(
            str(self.path),
            device="cpu",
            local_files_only=True,
            max_length=self._max_length,
            activation_fn=torch.nn.Identity(),  # raw logits: ``relevance`` scores them for both backends
        )

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def load(self) -> None:
        """Load the model now (blocking), so that the first question does not wait for it."""
        self._loaded()

    def logits(self, question: str, passages: Sequence[str]) -> Any:
        """Blocking: the model's raw logits for each (question, passage) pair, in order."""
        import numpy as np

        model = self._loaded()
        if self.backend == "torch":
            return np.asarray(
                model.predict(
                    [(question, passage) for passage in passages],
                    batch_size=self._batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            )
        tokenizer, session, output = model
        # Longest first: pairs of similar length share a batch, so little of each is padding.
        order = sorted(range(len(passages)), key=lambda i: -len(passages[i]))
        rows: list[Any] = [None] * len(passages)
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            encodings = tokenizer.encode_batch([(question, passages[i]) for i in batch])
            result = np.asarray(session.run(encodings)[output])
            for index, row in zip(batch, result.reshape(len(batch), -1), strict=True):
                rows[index] = row
        return np.stack(rows) if rows else np.empty((0, 1))

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        """Blocking: the relevance of each passage to ``question`` in [0, 1], in order."""
        if not passages:
            return []
        return [float(score) for score in relevance(self.logits(question, passages))]

    async def rerank(
        self, question: str, chunks: Sequence[RetrievedChunk], top_k: int
    ) -> list[RetrievedChunk]:
        if not chunks:
            return []
        lock = self._infer_lock.current()
        try:
            await asyncio.wait_for(lock.acquire(), timeout=self._wait_s)
        except TimeoutError:
            raise RerankerBusyError(f"the reranker stayed busy for {self._wait_s} s") from None
        try:
            scores = await asyncio.to_thread(self.scores, question, [chunk.text for chunk in chunks])
        finally:
            lock.release()
        order = sorted(range(len(chunks)), key=lambda i: -scores[i])  # stable: ties keep retrieval order
        return [dataclasses.replace(chunks[i], score=round(scores[i], 6)) for i in order[:top_k]]

    async def aclose(self) -> None:
        self._model = None


def build_reranker(settings: Settings) -> Reranker:
    """The reranker the settings ask for; a cross-encoder without a usable directory is a
    configuration error (raised here, before anything loads)."""
    if settings.reranker == "none":
        return NoReranker()
    if settings.reranker_model_path is None:
        raise RerankerError(
            "RERANKER=cross-encoder needs RERANKER_MODEL_PATH, a local cross-encoder directory "
            "(model.onnx with tokenizer.json, or a sentence-transformers CrossEncoder)"
        )
    return CrossEncoderReranker(settings.reranker_model_path, wait_s=settings.reranker_wait_s)


def reranker_identity(reranker: Reranker) -> str | None:
    """What distinguishes this reranker's orderings (answer-cache keys): None for ``NoReranker``."""
    if isinstance(reranker, NoReranker):
        return None
    if isinstance(reranker, CrossEncoderReranker):
        return f"cross-encoder:{reranker.backend}:{reranker.path.resolve()}"
    return type(reranker).__qualname__


def retrieval_depth(reranker: Reranker, top_k: int, candidates: int) -> int:
    """How many chunks to retrieve for ``top_k`` in the end: ``top_k`` itself without a reranker,
    else ``max(top_k, candidates)`` (RERANKER_CANDIDATES) for the reranker to choose from."""
    return top_k if isinstance(reranker, NoReranker) else max(top_k, candidates)


async def rerank_stage(
    reranker: Reranker,
    question: str,
    chunks: list[RetrievedChunk],
    top_k: int,
    telemetry: Telemetry,
) -> list[RetrievedChunk]:
    """The retrieved ``chunks`` as they are without a reranker; else the reranker's ``top_k``,
    under a ``rerank`` span and timed in ``rerank_duration_seconds``; the first ``top_k`` in
    retrieval order when the reranker is busy (``rerank_skipped_total``)."""
    if isinstance(reranker, NoReranker):
        return chunks
    started = time.perf_counter()
    span_input = {"question": question, "candidates": [chunk.chunk_id for chunk in chunks]}
    async with telemetry.tracer.span("rerank", input=span_input) as span:
        try:
            ranked = await reranker.rerank(question, chunks, top_k)
        except RerankerBusyError:
            telemetry.metrics.rerank_skipped()
            span.update(output={"skipped": "busy"})
            return chunks[:top_k]
        span.update(output={"chunks": [chunk.chunk_id for chunk in ranked]})
    telemetry.metrics.rerank(time.perf_counter() - started)
    return ranked


async def open_reranker(settings: Settings, stack: AsyncExitStack) -> Reranker:
    """The settings' reranker, closed when ``stack`` closes, and loaded now (off the loop) when
    EMBEDDING_WARM_UP says the local models load at start."""
    reranker = build_reranker(settings)
    stack.push_async_callback(reranker.aclose)
    if settings.embedding_warm_up and isinstance(reranker, CrossEncoderReranker):
        await asyncio.to_thread(reranker.load)
    return reranker
