"""The wire format of ``POST /v1/chat/completions``' request, parsed into the pipeline's
``AskRequest``: OpenAI's body, its bounds, and how the model, the question, the session and the
conversation a stateless client resends are read from it (``app.api.openai_compat``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from app.api.chat import MAX_QUESTION_CHARS
from app.chat.request import AskRequest
from app.llm.errors import UnknownModelError
from app.memory.service import SessionId
from app.rag.prompt import Turn
from app.security.text import PlainText, plain_text_problem

BASE_MODEL = "rag"

# Every message is bounded, not only the question: earlier turns become prompt history, and the
# ignored roles are still parsed and checked. A user message is at most a question's length.
MAX_MESSAGE_CHARS = 16_000
MAX_CONTENT_PARTS = 100
# OpenAI's own bounds on ``metadata``.
MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


class ContentPart(BaseModel):
    type: str = Field(max_length=64)
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")

    def strings(self) -> list[str]:
        """Every text the message carries (the text of non-text parts too)."""
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [self.content]
        return [s for part in self.content for s in (part.type, part.text) if s is not None]

    def max_chars(self) -> int:
        return MAX_QUESTION_CHARS if self.role == "user" else MAX_MESSAGE_CHARS

    def problem(self) -> str | None:
        """Why this message is refused, or None."""
        for text in self.strings():
            problem = plain_text_problem(text)
            if problem is not None:
                return problem
        length = len(self.text().strip())
        if length > self.max_chars():
            return f"a {self.role} message is at most {self.max_chars()} characters; this one has {length}"
        return None


class StreamOptions(BaseModel):
    include_usage: bool = False


_question: TypeAdapter[str] = TypeAdapter(
    Annotated[PlainText, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]
)


class ChatCompletionBody(BaseModel):
    """OpenAI's request; fields this service has no use for (``top_p``, ``presence_penalty``,
    ``tools``, ...) are accepted and ignored, as OpenAI-compatible servers customarily do."""

    model_config = ConfigDict(extra="ignore")

    model: PlainText = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: PlainText | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("messages")
    @classmethod
    def _has_question(cls, messages: list[Message]) -> list[Message]:
        """One error location (``messages``) for every message problem, naming the message."""
        for index, message in enumerate(messages):
            problem = message.problem()
            if problem is not None:
                raise ValueError(f"messages[{index}]: {problem}")
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise ValueError("at least one message must have the role 'user'")
        try:
            question = _question.validate_python(users[-1].text().strip())
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ValueError(f"the last user message is invalid: {reason}") from None
        if not question:
            raise ValueError("the last user message is empty")
        return messages

    @field_validator("metadata")
    @classmethod
    def _metadata_is_bounded(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if not metadata:
            return metadata
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters and values "
                    f"at most {MAX_METADATA_VALUE_CHARS}"
                )
            problem = plain_text_problem(key) or plain_text_problem(value)
            if problem is not None:
                raise ValueError(f"metadata keys and values {problem}")
        return metadata

    @field_validator("metadata")
    @classmethod
    def _session_id_is_valid(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata and "session_id" in metadata and _session_id(metadata["session_id"]) is None:
            raise ValueError(
                "metadata.session_id must be a session id: 1-128 characters of A-Z a-z 0-9 . _ : -"
            )
        return metadata

    def question(self) -> str:
        return next(m for m in reversed(self.messages) if m.role == "user").text().strip()

    def session_id(self) -> str | None:
        """``metadata.session_id``, else ``user`` when it is a UUID; None: stateless."""
        if self.metadata and "session_id" in self.metadata:
            return _session_id(self.metadata["session_id"])
        return _uuid_session_id(self.user) if self.user else None


_stored_session: TypeAdapter[str] = TypeAdapter(SessionId)


def _session_id(value: str) -> str | None:
    """A session id as ``/api/v1`` accepts it (``SessionId``, canonical form), else None."""
    try:
        return _stored_session.validate_python(value)
    except ValidationError:
        return None


def _uuid_session_id(value: str) -> str | None:
    """``user`` binds a session only when it is a UUID: OpenAI clients often send an end-user
    label there (``"alice"``), which must not silently become a stored, ever-growing conversation."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def model_pin(model: str) -> str | None:
    """``rag`` → None (the fallback chain); ``rag/<provider>[/<model>]`` → ``<provider>[/<model>]``.
    Raises ``UnknownModelError`` for anything else."""
    if model == BASE_MODEL:
        return None
    prefix = BASE_MODEL + "/"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    raise UnknownModelError(
        f"The model {model!r} does not exist; use 'rag', 'rag/<provider>' or 'rag/<provider>/<model>' "
        "(GET /v1/models lists them)"
    )


def _history(messages: list[Message]) -> tuple[Turn, ...]:
    """Earlier user turns paired with the assistant reply that follows each (stateless clients
    send the conversation every time); the last user message is the question, not history."""
    last_user = max(i for i, m in enumerate(messages) if m.role == "user")
    turns: list[Turn] = []
    question: str | None = None
    for message in messages[:last_user]:
        if message.role == "user":
            question = message.text().strip()
        elif message.role == "assistant" and question is not None:
            turns.append(Turn(question=question, answer=message.text().strip()))
            question = None
    return tuple(turns)  # the pipeline keeps the last MEMORY_MAX_TURNS


def to_ask(body: ChatCompletionBody) -> AskRequest:
    return AskRequest(
        question=body.question(),
        session_id=body.session_id(),
        history=_history(body.messages),
        model=model_pin(body.model),
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )
