from __future__ import annotations

import itertools

import pytest

from app.documents.chunking import chunk_pages, chunk_text, estimate_tokens, split_sentences
from app.documents.parsing import Page

pytestmark = pytest.mark.unit

SENTENCES = [f"Sentence {n} tells one fact about the ingestion service." for n in range(30)]


def test_sentences_split_at_punctuation_and_blank_lines() -> None:
    assert split_sentences("One. Two? Three!\n\nFour") == ["One.", "Two?", "Three!", "Four"]


def test_chunks_stay_under_the_budget_and_overlap_by_whole_sentences() -> None:
    chunks = chunk_text(" ".join(SENTENCES), max_tokens=40, overlap_tokens=12)
    assert len(chunks) > 3
    assert all(estimate_tokens(chunk) <= 40 for chunk in chunks)
    for previous, current in itertools.pairwise(chunks):
        last_sentence = split_sentences(previous)[-1]
        assert current.startswith(last_sentence)


def test_every_sentence_is_kept() -> None:
    chunks = chunk_text(" ".join(SENTENCES), max_tokens=40, overlap_tokens=0)
    assert " ".join(chunks) == " ".join(SENTENCES)


def test_a_sentence_longer_than_a_chunk_is_cut_into_windows() -> None:
    long_sentence = " ".join(["word"] * 100) + "."
    chunks = chunk_text(long_sentence, max_tokens=30, overlap_tokens=5)
    assert len(chunks) >= 4 and all(estimate_tokens(chunk) <= 30 for chunk in chunks)


def test_chunks_never_span_pages_and_keep_page_numbers() -> None:
    pages = [Page(1, " ".join(SENTENCES[:10])), Page(2, " ".join(SENTENCES[10:20]))]
    drafts = chunk_pages(pages, max_tokens=40, overlap_tokens=10)
    assert {draft.page for draft in drafts} == {1, 2}
    assert all(("Sentence 1 " in d.text) <= (d.page == 1) for d in drafts)
    assert next(d.position for d in drafts if d.page == 2) == 0
    assert all(d.page_sha256 == pages[d.page - 1].sha256 for d in drafts)
