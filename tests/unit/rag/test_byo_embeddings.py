"""Bring your own embedding model (EMBEDDING_MODEL_PATH): a sentence-transformers directory runs on
torch, its ONNX export on ONNX Runtime, and the two agree as the bundled model's backends do; the
stored model name says which model, which files and which prefixes made a vector; a directory the
service cannot run, or of another dimension, is refused before anything loads. The models are
tiny random-weight BERTs written at test time (tests/support/tiny_models.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.rag.embeddings import (
    EmbeddingError,
    OnnxEmbedder,
    TorchEmbedder,
    create_embedder,
    settings_for_vectors,
)
from app.settings import Settings
from tests.support.tiny_models import TinyModels, write_embedding_model

pytestmark = [pytest.mark.unit, pytest.mark.pgvector]

TEXTS = [
    "",
    "?!",
    "hello",
    "Backups of customer databases are kept for exactly 35 days before deletion.",
    "Café déjà vu — naïve résumé coöperation",
    "東京は日本の首都です。北京是中国的首都。",
    "def embed(texts: list[str]) -> list[float]: return [t.strip() for t in texts]",
    "ERROR 0x7f3a: connection refused (errno=111) at 10:42:07.123Z",
    " ".join(["replica failover backup restore alert pager"] * 60),  # past 256 tokens
    *[" ".join(["word"] * n) + f" number {n}" for n in (3, 17, 90, 200)],
]


def settings(**values: Any) -> Settings:
    return Settings(**values, _env_file=None)


def cosines(a: list[list[float]], b: list[list[float]]) -> Any:
    return (np.array(a) * np.array(b)).sum(axis=1)


@pytest.fixture(scope="module")
def onnx_embedder(tiny_models: TinyModels) -> OnnxEmbedder:
    embedder = create_embedder(settings(embedding_model_path=tiny_models.embedder))
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="module")
def torch_embedder(tiny_models: TinyModels) -> TorchEmbedder:
    embedder = create_embedder(settings(embedding_model_path=tiny_models.embedder, embedding_backend="torch"))
    assert isinstance(embedder, TorchEmbedder)
    embedder.load()
    return embedder


def test_the_onnx_export_and_the_sentence_transformers_directory_agree(
    onnx_embedder: OnnxEmbedder, torch_embedder: TorchEmbedder
) -> None:
    onnx, torch = onnx_embedder.encode(TEXTS), torch_embedder.encode(TEXTS)
    agreement = cosines(onnx, torch)
    worst = int(agreement.argmin())
    assert agreement.min() >= 0.99, f"text {worst} ({TEXTS[worst][:40]!r}): cosine {agreement[worst]:.4f}"
    assert np.allclose(np.linalg.norm(np.array(onnx), axis=1), 1.0, atol=1e-4)
    assert np.array(onnx).shape == (len(TEXTS), 384)


def test_a_bare_onnx_export_without_token_type_ids_pools_by_mean(
    tiny_models: TinyModels, torch_embedder: TorchEmbedder
) -> None:
    """model.onnx + tokenizer.json and nothing else: a graph that takes no token_type_ids, no
    pooling configuration (mean), no length configuration (512 tokens)."""
    bare = create_embedder(settings(embedding_model_path=tiny_models.embedder_onnx_only))
    assert isinstance(bare, OnnxEmbedder)
    short = [text for text in TEXTS if len(text) < 300]
    assert cosines(bare.encode(short), torch_embedder.encode(short)).min() >= 0.99


def test_a_batch_gives_each_text_the_vector_it_gets_alone(onnx_embedder: OnnxEmbedder) -> None:
    batched = np.array(onnx_embedder.encode(TEXTS))
    alone = np.array([onnx_embedder.encode([text])[0] for text in TEXTS])
    assert np.allclose(batched, alone, atol=1e-4)


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_the_pooling_configuration_is_followed(tiny_models: TinyModels, tmp_path: Path, pooling: str) -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    directory = tmp_path / f"tiny-{pooling}"
    shutil.copytree(tiny_models.embedder_onnx_only, directory)
    (directory / "1_Pooling").mkdir()
    flags = {f"pooling_mode_{name}": name.startswith(pooling) for name in ("cls_token", "max_tokens")}
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384, **flags})
    )
    texts = ["How long are backups kept?", "Staff parking is on level two of the garage."]
    vectors = np.array(create_embedder(settings(embedding_model_path=directory)).encode(texts))

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.embedder)
    model = BertModel.from_pretrained(tiny_models.embedder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    pooled = hidden[:, 0] if pooling == "cls" else np.where(mask > 0, hidden, -1e9).max(axis=1)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-4)


def test_the_stored_model_name_names_the_directory_its_files_and_the_backend(
    tiny_models: TinyModels, onnx_embedder: OnnxEmbedder, torch_embedder: TorchEmbedder
) -> None:
    assert re.fullmatch(r"tiny-embedder@[0-9a-f]{12}\+onnx", onnx_embedder.model_name)
    assert re.fullmatch(r"tiny-embedder@[0-9a-f]{12}\+torch", torch_embedder.model_name)
    bare = create_embedder(settings(embedding_model_path=tiny_models.embedder_onnx_only))
    assert len({onnx_embedder.model_name, torch_embedder.model_name, bare.model_name}) == 3
    # the same directory twice is the same model
    again = create_embedder(settings(embedding_model_path=tiny_models.embedder))
    assert again.model_name == onnx_embedder.model_name
    # without EMBEDDING_MODEL_PATH, the bundled model as before
    assert create_embedder(settings()).model_name == "all-MiniLM-L6-v2+onnx-int8-dynamic"
    assert settings_for_vectors(torch_embedder.model_name).startswith(
        "EMBEDDING_MODEL_PATH=<the tiny-embedder directory whose files hash to "
    )
    assert settings_for_vectors(torch_embedder.model_name).endswith("> EMBEDDING_BACKEND=torch")
    assert settings_for_vectors(
        "all-MiniLM-L6-v2+onnx-int8-dynamic", configured=onnx_embedder.model_name
    ) == ("EMBEDDING_BACKEND=onnx EMBEDDING_MODEL=all-MiniLM-L6-v2 with EMBEDDING_MODEL_PATH unset")


def test_other_weights_are_another_model_name(tiny_models: TinyModels, tmp_path: Path) -> None:
    directory = write_embedding_model(tmp_path / "tiny-embedder", seed=1, onnx="none")
    other = create_embedder(settings(embedding_model_path=directory, embedding_backend="torch"))
    reference = create_embedder(
        settings(embedding_model_path=tiny_models.embedder, embedding_backend="torch")
    )
    assert other.model_name.split("@")[0] == reference.model_name.split("@")[0] == "tiny-embedder"
    assert other.model_name != reference.model_name


async def test_prefixes_go_before_queries_and_documents_and_into_the_model_name(
    tiny_models: TinyModels, onnx_embedder: OnnxEmbedder
) -> None:
    e5 = create_embedder(
        settings(
            embedding_model_path=tiny_models.embedder,
            embedding_query_prefix="query: ",
            embedding_document_prefix="passage: ",
        )
    )
    assert isinstance(e5, OnnxEmbedder)
    assert re.fullmatch(re.escape(onnx_embedder.model_name) + r"\+prefixes-[0-9a-f]{8}", e5.model_name)
    other = create_embedder(
        settings(embedding_model_path=tiny_models.embedder, embedding_query_prefix="Represent this: ")
    )
    assert other.model_name != e5.model_name
    text = "How long are backups kept?"
    assert np.allclose(await e5.embed_query(text), onnx_embedder.encode(["query: " + text])[0], atol=1e-5)
    assert np.allclose(
        await e5.embed_documents([text]), onnx_embedder.encode(["passage: " + text]), atol=1e-5
    )
    assert not np.allclose(await e5.embed_query(text), await onnx_embedder.embed_query(text), atol=1e-3)
    assert "EMBEDDING_QUERY_PREFIX" in settings_for_vectors(e5.model_name)


def test_a_model_of_another_dimension_names_the_setting_to_change(tmp_path: Path) -> None:
    directory = write_embedding_model(tmp_path / "narrow", hidden=32, onnx="none")
    with pytest.raises(
        EmbeddingError, match="makes 32-d vectors but EMBEDDING_DIM is 384: set EMBEDDING_DIM=32"
    ):
        create_embedder(settings(embedding_model_path=directory))
    assert create_embedder(settings(embedding_model_path=directory, embedding_dim=32)).dimension == 32


def test_a_directory_the_service_cannot_run_is_refused_with_what_it_looked_for(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    with pytest.raises(EmbeddingError, match="is not a directory"):
        create_embedder(settings(embedding_model_path=tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        EmbeddingError, match=r"holds neither an ONNX export .* nor a sentence-transformers model"
    ):
        create_embedder(settings(embedding_model_path=tmp_path / "empty"))
    (tmp_path / "graph-only").mkdir()
    shutil.copyfile(tiny_models.embedder_onnx_only / "model.onnx", tmp_path / "graph-only" / "model.onnx")
    with pytest.raises(EmbeddingError, match=r"model\.onnx but no tokenizer\.json"):
        create_embedder(settings(embedding_model_path=tmp_path / "graph-only"))
    with pytest.raises(EmbeddingError, match="holds only an ONNX export: use EMBEDDING_BACKEND=onnx"):
        create_embedder(
            settings(embedding_model_path=tiny_models.embedder_onnx_only, embedding_backend="torch")
        )
    with pytest.raises(EmbeddingError, match="set EMBEDDING_PROVIDER=local or unset EMBEDDING_MODEL_PATH"):
        create_embedder(
            settings(
                embedding_model_path=tiny_models.embedder, embedding_provider="openai", openai_api_key="k"
            )
        )


def test_an_empty_setting_is_the_bundled_model() -> None:
    assert settings(embedding_model_path="").embedding_model_path is None
