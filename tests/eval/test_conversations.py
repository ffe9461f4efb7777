"""The conversational golden set is what the README says it is, and its floors name what fell."""

from __future__ import annotations

from collections import Counter

import pytest

from scripts.eval.conversations import (
    FLOORS,
    KINDS,
    ConversationResult,
    KindScores,
    below_floors,
    load,
    table,
)
from scripts.eval.golden import Scores
from scripts.eval.golden import load as load_golden

pytestmark = pytest.mark.unit


def test_the_shipped_conversations_are_many_varied_and_point_at_real_pages() -> None:
    conversations = load("sqlite")
    pages = {page.id for page in load_golden("sqlite").pages}
    assert len(conversations) >= 40
    follow_ups = [turn for c in conversations for turn in c.turns[1:]]
    kinds = Counter(turn.kind for turn in follow_ups)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 9
    for conversation in conversations:
        assert conversation.turns[0].kind is None, conversation.id
        for turn in conversation.turns:
            assert turn.relevant and turn.relevant <= pages, (conversation.id, turn.question)
    assert len({turn.question for turn in follow_ups if turn.kind != "switch"}) >= 40


def _result(hit5: float, mrr: float, switch_hit5: float) -> ConversationResult:
    def scores(h: float, m: float) -> Scores:
        return Scores(10, {1: m, 3: h, 5: h, 10: h}, m, m)

    kinds = [KindScores(k, scores(hit5, mrr), scores(0.8, 0.6)) for k in KINDS if k != "switch"]
    kinds.append(KindScores("switch", scores(switch_hit5, mrr), scores(1.0, 0.75)))
    overall = KindScores("all follow-ups", scores(hit5, mrr), scores(0.82, 0.66))
    return ConversationResult(54, scores(0.94, 0.81), kinds, overall, [])


def test_the_measured_numbers_pass_and_a_drop_is_named() -> None:
    assert below_floors(_result(0.946, 0.805, 1.0)) == []
    below = below_floors(_result(0.821, 0.661, 0.8))
    assert below == [
        f"conversations follow-up hit@5 0.821 < {FLOORS['follow-up hit@5']}",
        f"conversations follow-up MRR 0.661 < {FLOORS['follow-up MRR']}",
        f"conversations switch hit@5 0.800 < {FLOORS['switch hit@5']}",
    ]


def test_the_table_sets_each_kind_beside_the_same_follow_up_asked_alone() -> None:
    text = table(_result(0.946, 0.805, 1.0))
    assert "| pronoun | 10 | 0.946 | 0.805 | 0.800 | 0.600 |" in text
    assert "| all follow-ups | 10 | 0.946 | 0.805 | 0.820 | 0.660 |" in text
