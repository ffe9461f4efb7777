"""Reading the OpenAI wire's server-sent events and chunks (app/llm/openai_wire.py,
app/llm/openai_compat.py) without a server: however the body is split into reads, the same events."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import pytest

from app.llm.errors import ContentFiltered, MalformedResponse, ServerError, TruncatedStream
from app.llm.openai_compat import generation_of, stream_chunks
from app.llm.openai_wire import sse_events
from app.llm.types import ResponseModel, Usage

pytestmark = pytest.mark.unit


async def reads(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def events_of(body: bytes, cut_every: int | None = None) -> list[Any]:
    step = cut_every or len(body) or 1
    parts = [body[i : i + step] for i in range(0, len(body), step)]
    return [event async for event in sse_events(reads(parts))]


BODY = (
    b": keep-alive comment\n"
    b'data: {"n": 1}\n\n'
    b"event: message\n"
    b"id: 7\n"
    b'data: {"n":\n'
    b"data: 2}\n\n"
    b'data:{"n": 3}\n\n'
    b"data: [DONE]\n\n"
    b'data: {"n": 4}\n\n'
)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
async def test_events_are_the_same_however_the_body_is_split(line_end: bytes) -> None:
    body = BODY.replace(b"\n", line_end)
    whole = await events_of(body)
    assert whole == [{"n": 1}, {"n": 2}, {"n": 3}]  # multi-line data joined; nothing after [DONE]
    for cut in range(1, 12):
        assert await events_of(body, cut) == whole, cut


async def test_an_event_the_body_ends_inside_is_dropped() -> None:
    assert await events_of(b'data: {"n": 1}\n\ndata: {"n": 2}\n') == [{"n": 1}]


async def test_an_event_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        await events_of(b'data: {"n": 1}\n\ndata: {"choices": [\n\n')


async def test_an_error_event_is_a_server_error_with_the_providers_message() -> None:
    body = b'data: {"error": {"message": "overloaded", "code": "server_busy"}}\n\n'
    with pytest.raises(ServerError, match="overloaded server_busy"):
        await events_of(body)


# --- chunks ---------------------------------------------------------------------------------------


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"model": "m-1", "choices": [{"delta": delta, "finish_reason": finish}], **extra}


async def gen(items: Iterable[Any]) -> AsyncGenerator[Any, None]:
    for item in items:
        yield item


async def chunks_of(items: Iterable[Any]) -> list[Any]:
    return [c async for c in stream_chunks(gen(items))]


async def test_model_text_then_usage_from_either_place() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    openai_style = [chunk("Hi"), chunk(" there"), chunk(finish="stop"), {"choices": [], "usage": usage}]
    groq_style = [chunk("Hi"), chunk(" there"), chunk(finish="stop", x_groq={"usage": usage})]
    for items in (openai_style, groq_style):
        assert await chunks_of(items) == [ResponseModel("m-1"), "Hi", " there", Usage(3, 2)]


@pytest.mark.parametrize(
    "bad",
    [
        "not an object",
        {"choices": {"0": {}}},
        {"choices": ["not an object"]},
        {"choices": [{"delta": "text"}]},
        {"choices": [{"delta": {"content": 7}}]},
    ],
)
async def test_a_chunk_of_the_wrong_shape_is_malformed(bad: Any) -> None:
    with pytest.raises(MalformedResponse):
        await chunks_of([chunk("Hi"), bad, chunk(finish="stop")])


async def test_without_finish_reason_the_stream_is_truncated() -> None:
    with pytest.raises(TruncatedStream):
        await chunks_of([chunk("Hi")])


async def test_a_content_filter_stop_without_text_is_a_refusal() -> None:
    with pytest.raises(ContentFiltered):
        await chunks_of([chunk(finish="content_filter")])


def test_a_completion_names_its_model_and_text() -> None:
    body = json.loads(
        '{"model": "m-2", "choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],'
        ' "usage": {"prompt_tokens": 5, "completion_tokens": 1}}'
    )
    generation = generation_of(body, "asked")
    assert (generation.text, generation.model, generation.usage) == ("Paris.", "m-2", Usage(5, 1))
    with pytest.raises(MalformedResponse):
        generation_of({"choices": [{"message": {"content": ["Paris."]}}]}, "asked")
