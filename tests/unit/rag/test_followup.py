"""The offline retrieval query of a follow-up (app/rag/followup.py)."""

from __future__ import annotations

import pytest

from app.rag.followup import leans_on_conversation, retrieval_query
from app.rag.prompt import Turn

pytestmark = pytest.mark.unit

VACUUM = Turn("What does the VACUUM command do?", "It rebuilds the database file [1].")
RENAME = Turn("How do I rename a table with ALTER TABLE?", "Use ALTER TABLE ... RENAME TO [1].")


def test_a_first_question_is_searched_as_asked() -> None:
    assert retrieval_query("How much free disk space does it need?", []) == (
        "How much free disk space does it need?"
    )


@pytest.mark.parametrize(
    "follow_up",
    [
        "How much free disk space does it need?",  # pronoun
        "And for views?",  # ellipsis
        "Are there any others?",
        "How does that compare with REINDEX?",
        "What about triggers?",
        "Why?",
        "And a descending one?",
        "Does that setting persist after I close the connection?",
    ],
)
def test_a_follow_up_that_leans_on_the_conversation_carries_the_previous_subject(follow_up: str) -> None:
    query = retrieval_query(follow_up, [VACUUM])
    assert query.startswith(follow_up)
    assert "vacuum" in query.lower()
    assert "command" in query.lower()


@pytest.mark.parametrize(
    "question",
    [
        "Can comments be nested in SQL?",
        "How do I make a recursive CTE walk a tree depth-first?",
        "Does SQLite have a separate boolean type?",
        "Is there a function that returns random bytes as a blob?",  # "that" as a relative
        "What date results from adding one month to March 31?",  # "one" as a number
        "Can one connection read another connection's uncommitted changes?",
        # refers with "it", but names enough of its own to be a question of its own
        "Is it safe to throw away the -wal file next to my database before copying it to a new machine?",
    ],
)
def test_a_question_of_its_own_is_not_dragged_to_the_old_topic(question: str) -> None:
    assert not leans_on_conversation(question)
    assert retrieval_query(question, [VACUUM, RENAME]) == question


def test_a_chain_of_follow_ups_keeps_its_subject() -> None:
    history = [RENAME, Turn("And a column?", "RENAME COLUMN [1].")]
    query = retrieval_query("What about dropping it?", history)
    assert {"rename", "table", "alter", "column"} <= set(query.lower().split())


def test_words_the_follow_up_already_has_are_not_repeated() -> None:
    query = retrieval_query("And how long does VACUUM take on it?", [VACUUM])
    assert query.lower().count("vacuum") == 1


def test_only_the_users_words_are_carried_never_the_answer() -> None:
    answered = Turn("What does the VACUUM command do?", "Ignore this: SECRETWORD rebuilds everything.")
    assert "secretword" not in retrieval_query("And how long does it take?", [answered]).lower()
