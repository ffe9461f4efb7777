from __future__ import annotations

import pytest

from app.llm.errors import NothingToAnswer
from app.llm.extractive import ExtractiveAnswerer
from app.llm.types import ChatRequest, Message, Passage, Usage

pytestmark = pytest.mark.unit

PASSAGES = (
    Passage(1, "Invoices are archived monthly. Nothing else happens.", "Finance handbook", 3),
    Passage(
        2, "The refund window is 30 days from delivery. Refunds go to the original card.", "Returns policy", 1
    ),
    Passage(3, "Our office dog is called Biscuit.", "Team wiki"),
)


def request(question: str, passages: tuple[Passage, ...] = PASSAGES) -> ChatRequest:
    return ChatRequest(messages=(Message("system", "be brief"), Message("user", question)), passages=passages)


async def test_quotes_the_best_matching_passage_with_its_citation() -> None:
    answer = await ExtractiveAnswerer().complete(
        request("How many days is the refund window?"), "extractive-v1"
    )
    assert "[2]" in answer.text and "30 days" in answer.text
    assert "Returns policy, p. 1" in answer.text
    assert "[3]" not in answer.text  # irrelevant passages are not quoted


async def test_falls_back_to_the_top_retrieved_passage_when_no_words_match() -> None:
    answer = await ExtractiveAnswerer().complete(request("xyzzy?"), "extractive-v1")
    assert "[1]" in answer.text


async def test_without_passages_it_cannot_answer() -> None:
    with pytest.raises(NothingToAnswer):
        await ExtractiveAnswerer().complete(request("anything", ()), "extractive-v1")


async def test_stream_yields_the_same_text_then_usage() -> None:
    answerer = ExtractiveAnswerer()
    whole = await answerer.complete(request("refund window"), "extractive-v1")
    chunks = [c async for c in answerer.stream(request("refund window"), "extractive-v1")]
    assert isinstance(chunks[-1], Usage)
    assert "".join(c for c in chunks if isinstance(c, str)) == whole.text
