"""The golden set is what it claims to be, and its metrics are computed right."""

from __future__ import annotations

import math
import re

import pytest

from scripts.eval.golden import distinct, load, score

pytestmark = pytest.mark.unit

_WORD = re.compile(r"[a-z0-9_]+")


def _longest_shared_run(question: str, page: str) -> int:
    words = _WORD.findall(question.lower())
    text = " " + " ".join(_WORD.findall(page.lower())) + " "
    longest = 0
    for start in range(len(words)):
        for end in range(start + longest + 1, len(words) + 1):
            if f" {' '.join(words[start:end])} " not in text:
                break
            longest = end - start
    return longest


def test_the_shipped_golden_set_is_large_and_consistent() -> None:
    golden = load("sqlite")
    pages = {page.id for page in golden.pages}
    assert len(pages) == len(golden.pages) >= 200
    assert len(golden.questions) >= 60
    assert len({q.id for q in golden.questions}) == len(golden.questions)
    for question in golden.questions:
        assert question.relevant and question.relevant <= pages, question.id


def test_questions_paraphrase_their_pages_instead_of_quoting_them() -> None:
    golden = load("sqlite")
    text = {page.id: page.text for page in golden.pages}
    copied = {
        question.id: run
        for question in golden.questions
        for run in [max(_longest_shared_run(question.text, text[p]) for p in question.relevant)]
        if run >= 5
    }
    assert copied == {}, f"questions sharing a run of 5+ words with their page: {copied}"


def test_metrics_follow_the_first_relevant_document() -> None:
    rankings = [
        (["a", "b", "c"], frozenset({"a"})),  # first: reciprocal rank 1
        (["x", "y", "b"], frozenset({"b", "z"})),  # third: 1/3
        (["x", "y"], frozenset({"q"})),  # missed
    ]
    scores = score(rankings)
    assert scores.hits == {
        1: pytest.approx(1 / 3),
        3: pytest.approx(2 / 3),
        5: pytest.approx(2 / 3),
        10: pytest.approx(2 / 3),
    }
    assert scores.mrr == pytest.approx((1 + 1 / 3) / 3)
    # nDCG@10: 1 for the first; (1/log2(4)) / (1 + 1/log2(3)) for the second (two relevant).
    second = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert scores.ndcg10 == pytest.approx((1 + second) / 3)


def test_a_page_named_twice_counts_once_at_its_first_place() -> None:
    assert distinct(["p2", "p1", "p2", "p3", "p1"]) == ["p2", "p1", "p3"]
