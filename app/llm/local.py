"""Local model adapter (``gpt4all`` loading ``LOCAL_MODEL_PATH``; never downloads).

The model runs in its own single-thread executor so generation never blocks the event loop and
one model instance is never used by two threads at once. Tokens cross from that thread to the loop
through a queue; a consumer that stops listening (timeout, client gone) makes the generation
callback return False, which ends the generation at the next token.

A broken model file makes llama.cpp abort the whole process, so the file is first loaded once in
a throw-away subprocess; only a file that survives that is loaded here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

import structlog

from app.llm.errors import ProviderError, ServerError
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk, Usage

logger = structlog.get_logger(__name__)

_PREFLIGHT = """
import pathlib, sys
from gpt4all import GPT4All
p = pathlib.Path(sys.argv[1])
model = GPT4All(p.name, model_path=str(p.parent), allow_download=False, device="cpu", n_ctx=int(sys.argv[2]))
model.close()
"""

_ROLE_HEADERS = {"system": "### System:", "user": "### User:", "assistant": "### Assistant:"}
_DONE = object()
# Prompt tokens evaluated per llama.cpp batch. gpt4all's default (8) suits small GPU buffers; on a
# CPU, 128 brought SmolLM2's first token of a RAG prompt from 3.6-4.7 s to 3.0 s (1 thread, busy
# 2-core machine; README, "The local model").
PROMPT_BATCH_TOKENS = 128

# How the conversation is written for the model (LOCAL_PROMPT_FORMAT): "instruct" uses
# "### User:" headers; "chatml" the <|im_start|>role ... <|im_end|> turns that ChatML-tuned models
# (SmolLM2, Qwen, …) were trained on, and whose end token stops their generation.
PromptFormat = Literal["instruct", "chatml"]


def prompt_of(request: ChatRequest, prompt_format: PromptFormat = "instruct") -> str:
    if prompt_format == "chatml":
        turns = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in request.messages]
        return "".join(turns) + "<|im_start|>assistant\n"
    lines = [f"{_ROLE_HEADERS[m.role]}\n{m.content}\n" for m in request.messages]
    return "\n".join(lines) + "\n### Assistant:\n"


def preflight(path: Path, n_ctx: int, timeout_s: float) -> str | None:
    """None when gpt4all loads the file in a subprocess, else the reason it cannot."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PREFLIGHT, str(path), str(n_ctx)],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading {path.name} took longer than {timeout_s:g}s"
    if result.returncode == 0:
        return None
    tail = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    reason = next(
        (line for line in reversed(tail) if "Error" in line or "ASSERT" in line), tail[-1] if tail else ""
    )
    return f"gpt4all cannot load {path.name} (exit {result.returncode}): {reason.strip()[:200]}"


class LocalProvider:
    def __init__(
        self,
        *,
        model_path: Path | None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        load_timeout_s: float = 120.0,
        prompt_format: PromptFormat = "instruct",
    ) -> None:
        self._path = model_path
        self._prompt_format: PromptFormat = prompt_format
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._load_timeout_s = load_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")
        self._model: Any = None
        self._loading: asyncio.Future[Any] | None = None
        self._load_error: str | None = None

    @property
    def name(self) -> str:
        return "local"

    @property
    def prompt_format(self) -> PromptFormat:
        return self._prompt_format

    @property
    def default_model(self) -> str:
        return self._path.name if self._path else "none"

    def availability(self) -> Availability:
        if self._path is None:
            return Availability.missing("LOCAL_MODEL_PATH is not set")
        if not self._path.is_file():
            return Availability.missing(f"LOCAL_MODEL_PATH {self._path} is not a file")
        if importlib.util.find_spec("gpt4all") is None:
            return Availability.missing(
                "gpt4all is not installed (requirements-local.txt, or the image's `local` target)"
            )
        if self._load_error:
            return Availability.missing(self._load_error)
        return Availability.ready()

    def _load_sync(self) -> Any:
        assert self._path is not None
        reason = preflight(self._path, self._n_ctx, self._load_timeout_s)
        if reason is not None:
            raise RuntimeError(reason)
        from gpt4all import GPT4All  # imported late: loads native libraries

        return GPT4All(
            model_name=self._path.name,
            model_path=str(self._path.parent),
            allow_download=False,
            device="cpu",
            n_ctx=self._n_ctx,
            n_threads=self._n_threads,
        )

    async def _ensure_loaded(self) -> Any:
        if self._model is not None:
            return self._model
        if self._load_error:
            raise ServerError(self._load_error)
        if self._loading is None:
            self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)
        try:
            # Shielded: a request that times out while the model loads must not lose the load.
            self._model = await asyncio.shield(self._loading)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._load_error = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            logger.warning("local_model_unusable", reason=self._load_error)
            raise ServerError(self._load_error) from exc
        return self._model

    async def load(self) -> Availability:
        """Load now rather than on the first request; the outcome is the availability."""
        if self._path is not None and self._path.is_file():
            with suppress(ProviderError):
                await self._ensure_loaded()
        return self.availability()

    async def warm_up(self) -> None:
        await self.load()

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        parts: list[str] = []
        usage: Usage | None = None
        async for chunk in self.stream(request, model):
            if isinstance(chunk, Usage):
                usage = chunk
            elif isinstance(chunk, str):
                parts.append(chunk)
        return Generation(text="".join(parts), model=self.default_model, usage=usage)

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        llm = await self._ensure_loaded()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        produced = 0

        def send(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (shutdown); nobody is listening any more
                stop.set()

        def on_token(_token_id: int, text: str) -> bool:
            nonlocal produced
            produced += 1
            send(text)
            return not stop.is_set()

        def generate() -> None:
            try:
                llm.generate(
                    prompt_of(request, self._prompt_format),
                    max_tokens=request.max_tokens or 256,
                    temp=request.temperature if request.temperature is not None else 0.7,
                    n_batch=PROMPT_BATCH_TOKENS,
                    callback=on_token,
                )
            except Exception as exc:
                send(ServerError(f"local generation failed: {exc}"))
            finally:
                send(_DONE)

        future = loop.run_in_executor(self._executor, generate)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, ProviderError):
                    raise item
                if isinstance(item, str) and item:
                    yield item
            yield Usage(prompt_tokens=0, completion_tokens=produced)
        finally:
            stop.set()  # the generating thread ends at its next token
            if not future.done():
                future.add_done_callback(lambda f: f.exception())

    async def aclose(self) -> None:
        model = self._model
        self._model = None
        if model is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, model.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
