"""The embedder the settings ask for: a cloud provider, or the local model on its backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.rag.embeddings.base import Embedder, EmbeddingError
from app.rag.embeddings.directory import Backend, inspect_model_directory
from app.rag.embeddings.gemini_provider import GeminiEmbedder
from app.rag.embeddings.local import LocalEmbedder
from app.rag.embeddings.names import NO_PREFIXES, EmbeddingPrefixes
from app.rag.embeddings.onnx_backend import OnnxEmbedder
from app.rag.embeddings.openai_provider import OpenAIEmbedder
from app.rag.embeddings.torch_backend import TorchEmbedder

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class LocalTuning:
    """How the local model uses the CPU: threads per ONNX call for questions and for document
    batches (0: one per core), and how long a question waits for others to share its call."""

    query_threads: int = 1
    document_threads: int = 0
    query_batch_window_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalTuning:
        return cls(
            settings.embedding_query_threads,
            settings.embedding_document_threads,
            settings.embedding_query_batch_window_ms / 1000,
        )

    def onnx(self) -> dict[str, Any]:
        return {
            "query_threads": self.query_threads,
            "document_threads": self.document_threads,
            "query_batch_window_s": self.query_batch_window_s,
        }


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
    tuning = LocalTuning.from_settings(settings)
    prefixes = EmbeddingPrefixes(settings.embedding_query_prefix, settings.embedding_document_prefix)
    if settings.embedding_model_path is not None:
        return directory_embedder(
            settings.embedding_model_path,
            settings.embedding_dim,
            backend=settings.embedding_backend,
            batch_size=settings.embedding_batch_size,
            prefixes=prefixes,
            tuning=tuning,
        )
    if settings.embedding_backend == "torch":
        return TorchEmbedder(
            settings.embedding_model,
            settings.embedding_dim,
            batch_size=settings.embedding_batch_size,
            prefixes=prefixes,
            query_batch_window_s=tuning.query_batch_window_s,
        )
    return OnnxEmbedder(
        settings.embedding_model,
        settings.embedding_dim,
        batch_size=settings.embedding_batch_size,
        tokenizer_path=settings.embedding_tokenizer_path,
        prefixes=prefixes,
        quantization=settings.embedding_onnx_quantization,
        graph_dir=settings.embedding_graph_dir,
        **tuning.onnx(),
    )


def directory_embedder(
    path: Path,
    dimension: int,
    *,
    backend: Backend = "onnx",
    batch_size: int = 32,
    prefixes: EmbeddingPrefixes = NO_PREFIXES,
    tuning: LocalTuning | None = None,
) -> LocalEmbedder:
    """The embedder of a local model directory (EMBEDDING_MODEL_PATH). ``onnx`` runs its ONNX export
    when it has one that can run, else its sentence-transformers model on torch; ``torch`` always
    runs the sentence-transformers model. ``dimension`` (EMBEDDING_DIM) must be the model's."""
    tuning = tuning or LocalTuning()
    directory = inspect_model_directory(path)
    dimension = directory.checked_dimension(dimension)
    if backend == "onnx" and directory.onnx is not None:
        return OnnxEmbedder(
            directory.stored_name("onnx"),
            dimension,
            batch_size=batch_size,
            recipe=directory.onnx,
            prefixes=prefixes,
            **tuning.onnx(),
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
        query_batch_window_s=tuning.query_batch_window_s,
    )
