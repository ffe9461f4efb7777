"""The ONNX backend (the default) computes what sentence-transformers on torch computes, closely
enough that retrieval cannot tell: with the wheel's float32 products (EMBEDDING_ONNX_QUANTIZATION=
weights), cosine ≥ 0.99 per text between the two backends' vectors on a fixed set of 200 texts of
every length and many topics; the default int8 graph is held to those vectors in
test_bundled_graph.py. The backends still never share an index: their vectors are stored under
different model names."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from app.rag.embeddings import (
    EmbeddingError,
    LocalEmbedder,
    OnnxEmbedder,
    TorchEmbedder,
    create_embedder,
    settings_for_vectors,
)
from app.rag.embeddings.onnx_backend import token_batches
from app.settings import Settings

pytestmark = [pytest.mark.unit, pytest.mark.pgvector]

TOPICS = {
    "operations": "deploy rollback replica failover backup restore alert pager uptime incident",
    "databases": "postgres index vacuum query planner transaction isolation replica vector hnsw",
    "cooking": "simmer onion garlic butter oven roast recipe sauce pinch salt flour",
    "law": "contract clause liability warranty tenant landlord notice court appeal statute",
    "medicine": "dosage symptom fever antibiotic diagnosis patient clinic allergy vaccine",
    "football": "striker goal penalty referee offside league season coach midfield",
    "finance": "interest loan mortgage inflation bond equity dividend budget invoice audit",
    "travel": "airport passport luggage train ticket hotel itinerary border museum",
    "physics": "momentum energy photon quantum field gravity entropy particle velocity",
    "music": "chord melody rhythm tempo orchestra guitar piano lyrics album",
}
# Things real documents contain that a tokenizer must treat exactly like the reference one.
ODDITIES = [
    "Café déjà vu — naïve résumé coöperation",
    "ERROR 0x7f3a: connection refused (errno=111) at 10:42:07.123Z",
    "def embed(texts: list[str]) -> list[float]: return [t.strip() for t in texts]",
    "Prices rose 3.5% to $1,299.99; see §4(b)(ii) and https://example.org/a?b=c#d",
    "東京は日本の首都です。北京是中国的首都。",
    "ALL CAPS HEADINGS SHOUT BUT MEAN THE SAME THING",
    "",
    "?!",
]
LENGTHS = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 400]  # words; the longest pass 256 tokens


def agreement_texts(count: int = 200) -> list[str]:
    """The same ``count`` texts on every run: oddities, then sentences of varied topics and lengths."""
    rng = random.Random(15)
    texts = list(ODDITIES)
    topics = list(TOPICS)
    while len(texts) < count:
        words = TOPICS[topics[len(texts) % len(topics)]].split()
        length = LENGTHS[rng.randrange(len(LENGTHS))]
        sentence = " ".join(rng.choice(words) for _ in range(length))
        texts.append(sentence.capitalize() + rng.choice([".", "?", "!", ""]))
    return texts


@pytest.fixture(scope="module")
def torch_embedder() -> TorchEmbedder:
    model = TorchEmbedder("all-MiniLM-L6-v2", 384, batch_size=32)
    model.load()
    return model


def test_onnx_vectors_agree_with_torch_vectors_on_200_texts(
    weights_embedder: OnnxEmbedder, torch_embedder: TorchEmbedder
) -> None:
    texts = agreement_texts()
    assert len(texts) == 200 and len(set(texts)) > 190
    onnx = np.array(weights_embedder.encode(texts))
    torch = np.array(torch_embedder.encode(texts))
    cosines = (onnx * torch).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= 0.99, f"text {worst} ({texts[worst][:60]!r}…): cosine {cosines[worst]:.4f}"
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-4)


def test_a_batch_gives_each_text_the_vector_it_gets_alone(embedder: LocalEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about replicas", "mid length text", "x " * 300]
    batched = np.array(embedder.encode(texts))
    alone = np.array([embedder.encode([text])[0] for text in texts])
    assert np.allclose(batched, alone, atol=1e-4)


def test_the_two_backends_store_their_vectors_under_different_model_names(
    embedder: LocalEmbedder, torch_embedder: TorchEmbedder
) -> None:
    assert embedder.model_name == "all-MiniLM-L6-v2+onnx-int8-dynamic"
    assert torch_embedder.model_name == "all-MiniLM-L6-v2"
    assert settings_for_vectors(torch_embedder.model_name) == (
        "EMBEDDING_BACKEND=torch EMBEDDING_MODEL=all-MiniLM-L6-v2"
    )
    assert (
        settings_for_vectors(embedder.model_name) == "EMBEDDING_BACKEND=onnx EMBEDDING_MODEL=all-MiniLM-L6-v2"
    )
    # vectors stored before the int8 graph became the default: the setting that still makes them
    assert settings_for_vectors("all-MiniLM-L6-v2+onnx-int8") == (
        "EMBEDDING_BACKEND=onnx EMBEDDING_ONNX_QUANTIZATION=weights EMBEDDING_MODEL=all-MiniLM-L6-v2"
    )


def test_settings_choose_the_backend_and_onnx_is_the_default() -> None:
    default = create_embedder(Settings(_env_file=None))  # type: ignore[call-arg]
    torch = create_embedder(Settings(embedding_backend="torch", _env_file=None))  # type: ignore[call-arg]
    assert isinstance(default, OnnxEmbedder) and isinstance(torch, TorchEmbedder)


def test_onnx_backend_refuses_a_model_it_does_not_ship() -> None:
    with pytest.raises(EmbeddingError, match="EMBEDDING_BACKEND=torch"):
        OnnxEmbedder("intfloat/e5-small-v2", 384)


def test_a_missing_tokenizer_file_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(embedding_tokenizer_path=tmp_path / "tokenizer.json", _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(EmbeddingError, match="is not a file"):
        create_embedder(settings)


def test_long_texts_share_a_call_only_with_texts_of_similar_length() -> None:
    # Token lengths: two long chunks, a middling one, then short texts (batched whatever their padding).
    lengths = [60, 200, 9, 190, 50, 10]
    assert token_batches(lengths, 32) == [[1, 3], [0, 4, 5, 2]]
    assert token_batches(lengths, 2) == [[1, 3], [0, 4], [5, 2]]
