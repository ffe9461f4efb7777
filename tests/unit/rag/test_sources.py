"""A source as clients, the answer cache and memory see it: every field, values unchanged."""

from __future__ import annotations

import json
from dataclasses import asdict

from app.cache.answers import CachedAnswer
from app.rag.sources import Source


def _source(number: int) -> Source:
    return Source(
        number=number,
        document_id="0b6f6c4e-5d38-4b8e-9a53-7e0d9b1f1c2a",
        version=3,
        title="Refunds",
        page=2,
        chunk_id=40 + number,
        score=0.031,
        snippet="Refunds are issued within 14 days.",
        tags=["policy", "billing"],
        cited=True,
        ocr=False,
        relevance=0.712,
        start=10,
        end=44,
    )


def test_a_source_s_dict_has_every_field_as_asdict_gives_it() -> None:
    source = _source(1)
    assert source.to_dict() == asdict(source)


def test_a_source_s_dict_holds_its_own_tag_list() -> None:
    source = _source(1)
    source.to_dict()["tags"].append("changed")
    assert source.tags == ["policy", "billing"]


def test_a_cached_answer_comes_back_from_its_json_as_it_was() -> None:
    answer = CachedAnswer(
        answer="Within 14 days [1].",
        sources=(_source(1), _source(2)),
        provider="openai",
        model="gpt-4o-mini",
        usage={"prompt_tokens": 120, "completion_tokens": 9},
    )
    assert CachedAnswer.from_json(answer.to_json()) == answer
    assert set(json.loads(answer.to_json())) == {"answer", "sources", "provider", "model", "usage"}
