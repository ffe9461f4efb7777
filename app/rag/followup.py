"""The retrieval query of a conversational turn, built offline (no model, no network).

A follow-up such as "And for views?" or "Are there any others?" names its subject only through
the earlier turns, so searching its literal words finds nothing useful. ``retrieval_query`` gives
the text that is embedded and searched instead:

- a first turn, or a follow-up that reads as a question of its own, is searched as it is: a
  standalone question is never changed, and a switch of topic does not drag the old topic along;
- a follow-up that leans on the conversation (it opens with "and", "what about"; or it is short
  and refers back with "it", "those", "others" or compares with "than"; or it has almost no
  words of its own) is searched
  with the key terms of the previous question carried after its own words. The previous question
  is itself resolved the same way first, so a chain of follow-ups keeps its subject.

Only the user's questions are read, never the answers: an answer may be long, wrong, or a model's
paraphrase, and the user's words are what names the subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.rag.prompt import Turn

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[-'][A-Za-z0-9_]+)*|\d+")


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that point back at something said before.
_REFERRING = _word_set(
    """it its itself they them their theirs themselves this that these those such one ones another
    other others same former latter either neither both also too instead else"""
)
# Openings that continue the previous question ("And for views?", "What about DELETE?").
_CONTINUING = (
    ("and",),
    ("or",),
    ("but",),
    ("also",),
    ("so",),
    ("then",),
    ("what", "about"),
    ("how", "about"),
    ("same", "for"),
)
# Words that refer back only when no noun follows them.
_COUNTING = _word_set("one another")
# Words of comparison: "How does that compare with ...", "Is it better than ...".
_COMPARING = _word_set("than compare compared comparison differ differs different difference versus vs")

# Words that carry no subject of their own: question words, auxiliaries, pronouns, fillers.
_STOPWORDS = (
    _word_set(
        """a an the of to in on at by for from with without into onto over under about as and or but
        not no nor so if then than which who whom whose what when where why how is are was were be
        been being am do does did doing done have has had having can could will would shall should
        may might must i me my mine we us our you your yours he him his she her there here any some
        all each every very more most much many few less least just only still yet even again ever
        please tell show give explain want need know get got use used using work works way ways
        thing things something anything kind kinds sort type like lot lots really actually after
        before while during until since because though although whether between among within
        through per via"""
    )
    | _REFERRING
)

# A follow-up with at most this many words of its own is read as leaning on the conversation.
_OWN_WORDS_ALONE = 1
# A question that refers back ("it", "those", "than") but names this many things of its own carries
# its subject itself ("Is it safe to delete the -wal file before copying the database?"): follow-ups
# are short, and carrying an old subject into a long question only dilutes it.
_OWN_WORDS_SELF_CONTAINED = 7
# How many earlier questions a chain of follow-ups may reach back through.
_MAX_DEPTH = 3


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def own_terms(text: str) -> list[str]:
    """The words of ``text`` that name something, in order, once each."""
    seen: dict[str, None] = {}
    for word in words(text):
        if word not in _STOPWORDS and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)


def _refers_back(tokens: list[str], n: int) -> bool:
    token = tokens[n]
    if token == "that":  # noqa: S105 - "does that setting ..." refers back; "a function that returns ..." does not
        return n == 0 or tokens[n - 1] in _STOPWORDS
    if (
        token in _COUNTING
    ):  # "a descending one?", "add one to" refer back; "one month", "another table" do not
        return n + 1 == len(tokens) or tokens[n + 1] in _STOPWORDS
    return token in _REFERRING or token in _COMPARING


def leans_on_conversation(question: str) -> bool:
    """True when ``question`` reads as a follow-up that needs the earlier turns to be understood."""
    tokens = words(question)
    if not tokens:
        return False
    if any(tuple(tokens[: len(opening)]) == opening for opening in _CONTINUING):
        return True
    own = len(own_terms(question))
    if any(_refers_back(tokens, n) for n in range(len(tokens))):
        return own < _OWN_WORDS_SELF_CONTAINED
    return own <= _OWN_WORDS_ALONE


def retrieval_query(question: str, history: Sequence[Turn], *, depth: int = _MAX_DEPTH) -> str:
    """The text to embed and search for ``question`` asked after ``history`` (oldest first)."""
    if not history or depth <= 0 or not leans_on_conversation(question):
        return question
    previous = retrieval_query(history[-1].question, history[:-1], depth=depth - 1)
    own = set(own_terms(question))
    carried = [term for term in own_terms(previous) if term not in own]
    if not carried:
        return question
    return f"{question} {' '.join(carried)}"
