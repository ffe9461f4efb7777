from __future__ import annotations

import pytest

from tests.support.embedders import HashingEmbedder

pytestmark = pytest.mark.unit


async def test_the_unit_test_embedder_is_deterministic_and_meaningful(
    hashing_embedder: HashingEmbedder,
) -> None:
    a, b = await hashing_embedder.embed_documents(["stalled worker retry", "banana bread recipe"])
    query = await hashing_embedder.embed_query("worker retry")
    assert query == await hashing_embedder.embed_query("worker retry")
    assert sum(x * y for x, y in zip(query, a, strict=True)) > sum(
        x * y for x, y in zip(query, b, strict=True)
    )
