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


SPAN_DOCUMENTS = [
    # sentences joined by single spaces, with overlap between chunks
    " ".join(SENTENCES),
    # blank lines, list items, headings and runs of whitespace between sentences
    "# Guide\n\nFirst   step.  Second step!\n\n- item one.\n- item two?\n\n"
    + "\n".join(f"Line {n} says something useful about the tool." for n in range(20)),
    # unicode: accents, CJK, emoji and combining marks keep their code-point offsets
    " ".join(f"Café n°{n} — naïve résumé 東京 🚀 e\u0301té fin." for n in range(25)),
    # a sentence longer than a chunk, cut into word windows, after leading whitespace
    "   " + " ".join(f"mot{n}\t" for n in range(150)) + ".",
]


@pytest.mark.parametrize("text", SPAN_DOCUMENTS)
@pytest.mark.parametrize("overlap", [0, 12])
def test_each_chunk_is_exactly_its_span_of_the_page_text(text: str, overlap: int) -> None:
    drafts = chunk_pages([Page(3, text)], max_tokens=30, overlap_tokens=overlap)
    assert len(drafts) > 2
    for draft in drafts:
        assert 0 <= draft.start < draft.end <= len(text)
        assert text[draft.start : draft.end] == draft.text
        assert draft.text == draft.text.strip()
    starts = [draft.start for draft in drafts]
    assert starts == sorted(starts)
    # every non-space character of the page is inside some chunk
    covered = set().union(*(range(d.start, d.end) for d in drafts))
    assert all(i in covered for i, char in enumerate(text) if not char.isspace())


def test_overlapping_chunks_share_the_characters_of_their_shared_sentences() -> None:
    text = " ".join(SENTENCES)
    drafts = chunk_pages([Page(1, text)], max_tokens=40, overlap_tokens=12)
    overlaps = [b.start < a.end for a, b in itertools.pairwise(drafts)]
    assert all(overlaps)
    for a, b in itertools.pairwise(drafts):
        assert text[b.start : a.end] in a.text and b.text.startswith(text[b.start : a.end])


def test_chunk_spans_with_a_context_title_still_index_the_page_text() -> None:
    text = "## Backups\n\nBackups are kept for 35 days. " + " ".join(SENTENCES)
    drafts = chunk_pages([Page(1, text)], max_tokens=40, overlap_tokens=8, title="Handbook.pdf")
    assert drafts[0].context == "Handbook — Backups"
    assert all(text[d.start : d.end] == d.text for d in drafts)
