"""The retrieval query of a conversational turn, built offline (no model, no network).

A follow-up such as "And for views?" or "Are there any others?" names its subject only through
the earlier turns, so searching its literal words finds nothing useful. ``retrieval_query`` gives
the text that is embedded and searched instead:

- a first turn, or a follow-up that reads as a question of its own, is searched as it is: a
  standalone question is never changed, and a switch of topic does not drag the old topic along;
- a follow-up that leans on the conversation (it refers back with "it", "those", "others", opens
  with "and", "what about", compares with "than", or has almost no words of its own) is searched
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

# Words that point back at something said before.
_REFERRING = frozenset(
    """it its itself they them their theirs themselves this these those such one ones another other
    others same former latter either neither both also too instead else""".split()
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
# Words of comparison: "How does that compare with ...", "Is it better than ...".
_COMPARING = frozenset("than compare compared comparison differ differs different difference versus vs".split())

# Words that carry no subject of their own: question words, auxiliaries, pronouns, fillers.
_STOPWORDS = frozenset(
    """a an the of to in on at by for from with without into onto over under about as and or but
    not no nor so if then than that which who whom whose what when where why how is are was were
    be been being am do does did doing done have has had having can could will would shall should
    may might must i me my mine we us our you your yours he him his she her it its they them their
    this these those there here any some all each every other others another one ones such same
    very more most much many few less least just only also too still yet even again ever please
    tell show give explain want need know get got use used using work works way ways thing things
    something anything else instead kind kinds sort type like way lot lots really actually""".split()
) | _REFERRING

# A follow-up with at most this many words of its own is read as leaning on the conversation.
_OWN_WORDS_ALONE = 1
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


def leans_on_conversation(question: str) -> bool:
    """True when ``question`` reads as a follow-up that needs the earlier turns to be understood."""
    tokens = words(question)
    if not tokens:
        return False
    if any(tuple(tokens[: len(opening)]) == opening for opening in _CONTINUING):
        return True
    if any(token in _REFERRING or token in _COMPARING for token in tokens):
        return True
    return len(own_terms(question)) <= _OWN_WORDS_ALONE


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
