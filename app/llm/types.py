"""The router's typed request, results and stream events (frozen dataclasses, no loose dicts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Passage:
    """A retrieved passage as numbered in the prompt; the extractive answerer cites ``[number]``."""

    number: int
    text: str
    title: str = ""
    page: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    """What the chat pipeline asks the router for. Prompt building happens before this point:
    ``messages`` are sent as they are; ``passages`` are carried for the extractive answerer."""

    messages: tuple[Message, ...]
    passages: tuple[Passage, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    model: str | None = None  # pins a provider ("groq") or a provider's model ("groq/llama-3.1-8b")

    @property
    def question(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Generation:
    """One provider's complete answer; ``model`` as the provider's response named it (the
    requested name only when the response names none)."""

    text: str
    model: str
    usage: Usage | None = None


@dataclass(frozen=True)
class ResponseModel:
    """A provider stream's announcement of the model that answers, as its response names it
    (OpenAI's and Groq's ``model``, Gemini's ``modelVersion``): "gpt-4o-mini-2024-07-18" where
    "gpt-4o-mini" was asked for. Yielded at most once, before the text."""

    name: str


@dataclass(frozen=True, kw_only=True)
class AnswerMetadata:
    """What the chain says about a finished answer: the provider and model that produced it (or
    "none" and the degraded apology), and whether it may be served again from a cache
    (``ProviderChain._cacheable``)."""

    provider: str
    model: str
    usage: Usage | None
    trace_id: str
    degraded: bool = False
    cacheable: bool = False


@dataclass(frozen=True, kw_only=True)
class Completion(AnswerMetadata):
    """The chain's whole answer."""

    text: str


# --- streaming ----------------------------------------------------------------------------------
# A provider streams ``str`` text chunks, at most once a ``ResponseModel`` and at most once a
# ``Usage``. The chain turns that into the events below. Nothing is emitted before a provider
# produced its first real token.


@dataclass(frozen=True)
class StreamStart:
    provider: str
    model: str
    degraded: bool = False


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Answerer:
    """A provider and the model that produced (part of) an answer."""

    provider: str
    model: str


@dataclass(frozen=True)
class StreamContinued:
    """The provider that was streaming broke after its first token (``code``); ``provider`` and
    ``model`` continue the same answer from where it stopped (the text so far sent to them as an
    assistant prefill). Deltas after this event are theirs."""

    provider: str
    model: str
    code: str


@dataclass(frozen=True, kw_only=True)
class StreamEnd(AnswerMetadata):
    """The streamed answer is complete. ``provider`` and ``model`` started it; ``continued_by``
    finished it when the first one broke part-way (``StreamContinued``)."""

    continued_by: Answerer | None = None


@dataclass(frozen=True)
class StreamFailed:
    """The provider failed after its first token: the answer so far is incomplete, not done."""

    provider: str
    model: str
    code: str
    message: str
    trace_id: str


StreamEvent = StreamStart | TextDelta | StreamContinued | StreamEnd | StreamFailed
ProviderChunk = str | Usage | ResponseModel
