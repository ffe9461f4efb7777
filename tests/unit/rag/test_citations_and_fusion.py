from __future__ import annotations

import uuid

import pytest

from app.rag.citations import cited_numbers
from app.rag.query import RetrievedChunk
from app.rag.retrieval import reciprocal_rank_fusion

pytestmark = [pytest.mark.unit, pytest.mark.pgvector]


def test_citations_are_parsed_in_order_without_duplicates() -> None:
    assert cited_numbers("A [2] and B [1][2], also [3, 1].", available=3) == [2, 1, 3]


def test_citations_of_passages_that_do_not_exist_are_ignored() -> None:
    assert cited_numbers("See [9] and [0] and [2].", available=3) == [2]
    assert cited_numbers("No citations here.", available=3) == []


def make(chunk_id: int) -> RetrievedChunk:
    return RetrievedChunk(chunk_id, uuid.UUID(int=chunk_id), 1, "t", 1, "x", (), 0.0)


def test_rrf_rewards_chunks_found_by_both_searches() -> None:
    vector = [make(1), make(2), make(3)]
    keyword = [make(3), make(4)]
    fused = reciprocal_rank_fusion([(1.0, vector), (1.0, keyword)], top_k=3)
    # 3 is in both lists; 2 and 4 tie on rank 2, and ties keep the first list's order.
    assert [c.chunk_id for c in fused] == [3, 1, 2]


def test_rrf_weights_shift_the_ranking() -> None:
    vector = [make(1)]
    keyword = [make(2)]
    assert reciprocal_rank_fusion([(1.0, vector), (3.0, keyword)], top_k=1)[0].chunk_id == 2
    assert reciprocal_rank_fusion([(3.0, vector), (1.0, keyword)], top_k=1)[0].chunk_id == 1
