"""The conversational golden set (eval/<corpus>/conversations.jsonl): multi-turn conversations on
the golden corpus whose follow-ups name their subject only through the earlier turns.

Every conversation is asked turn by turn in a stored session of ``POST /api/v1/chat`` (what the
service searched is its ``retrieval_query``); every follow-up is asked a second time with no
session at all, "alone", which is what retrieval did before it read the conversation. Scored on
the follow-ups, per kind:

- ``pronoun``: "How much free disk space does it need?" after a question about VACUUM;
- ``ellipsis``: "And a column?" after "How do I rename a table?";
- ``others``: "Are there any others?";
- ``comparison``: "How is an IMMEDIATE one different?", a comparison with the previous answer;
- ``switch``: a question of its own on another topic, which must not drag the old topic along.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from scripts.eval.golden import EVAL_DIR, Question, Scores, distinct, score
from tests.support.callers import Caller

KINDS = ("pronoun", "ellipsis", "others", "comparison", "switch")

# `make eval-check` fails below these (hybrid, the default mode). Set from `make eval` on the
# shipped defaults (follow-ups 0.946 / 0.805, switches 1.0; README "Conversational retrieval") less
# about three follow-ups of the 56, and one switch of the 10; asked alone the follow-ups score
# 0.821 / 0.661, under these floors.
FLOORS: dict[str, float] = {
    "follow-up hit@5": 0.89,
    "follow-up MRR": 0.75,
    "switch hit@5": 0.90,
}


@dataclass(frozen=True)
class Turn:
    question: str
    relevant: frozenset[str]
    kind: str | None  # None for the opening turn


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class KindScores:
    kind: str
    session: Scores
    alone: Scores


@dataclass(frozen=True)
class ConversationResult:
    conversations: int
    openings: Scores
    kinds: list[KindScores]
    overall: KindScores
    examples: list[tuple[str, str]]  # (follow-up, the retrieval_query the service searched)
    # The golden single questions, each asked in a session right after the one before it (another
    # topic): a standalone question must not be dragged towards the previous turn's.
    singles_after_other: Scores | None = None


def load(name: str = "sqlite") -> tuple[Conversation, ...]:
    path = EVAL_DIR / name / "conversations.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(
        Conversation(
            id=row["id"],
            turns=tuple(Turn(t["question"], frozenset(t["relevant"]), t.get("kind")) for t in row["turns"]),
        )
        for row in rows
    )


async def _ranked(
    client: httpx.AsyncClient, caller: Caller, page_of: Mapping[str, str], body: dict[str, Any]
) -> tuple[list[str], str]:
    response = await client.post("/api/v1/chat", json={"top_k": 10, **body}, headers=caller.headers)
    if response.status_code != 200:
        raise RuntimeError(f"chat refused {body['question']!r}: {response.status_code} {response.text}")
    payload = response.json()
    ranked = distinct(page_of[s["document_id"]] for s in payload["sources"])
    return ranked, str(payload.get("retrieval_query", body["question"]))


Ranking = tuple[Sequence[str], frozenset[str]]


async def evaluate(
    client: httpx.AsyncClient,
    caller: Caller,
    page_of: Mapping[str, str],
    conversations: Sequence[Conversation],
    singles: Sequence[Question] = (),
) -> ConversationResult:
    """Asks every conversation in a session of its own and every follow-up alone (hybrid mode);
    then each of ``singles`` in a session after the one before it."""
    openings: list[Ranking] = []
    session: dict[str, list[Ranking]] = {kind: [] for kind in KINDS}
    alone: dict[str, list[Ranking]] = {kind: [] for kind in KINDS}
    examples: list[tuple[str, str]] = []
    for conversation in conversations:
        session_id = f"eval-{conversation.id}-{secrets.token_hex(4)}"
        for turn in conversation.turns:
            body = {"question": turn.question, "mode": "hybrid"}
            ranked, searched = await _ranked(client, caller, page_of, {**body, "session_id": session_id})
            if turn.kind is None:
                openings.append((ranked, turn.relevant))
                continue
            session[turn.kind].append((ranked, turn.relevant))
            alone[turn.kind].append(((await _ranked(client, caller, page_of, body))[0], turn.relevant))
            if len(examples) < 8 and searched != turn.question:
                examples.append((turn.question, searched))
    kinds = [KindScores(kind, score(session[kind]), score(alone[kind])) for kind in KINDS if session[kind]]
    overall = KindScores(
        "all follow-ups",
        score([r for kind in KINDS for r in session[kind]]),
        score([r for kind in KINDS for r in alone[kind]]),
    )
    after_other: list[Ranking] = []
    for previous, question in zip([*singles[-1:], *singles[:-1]], singles, strict=True):
        session_id = f"eval-single-{question.id}-{secrets.token_hex(4)}"
        await _ranked(client, caller, page_of, {"question": previous.text, "session_id": session_id})
        body = {"question": question.text, "session_id": session_id, "mode": "hybrid"}
        after_other.append(((await _ranked(client, caller, page_of, body))[0], question.relevant))
    return ConversationResult(
        len(conversations),
        score(openings),
        kinds,
        overall,
        examples,
        score(after_other) if singles else None,
    )


def table(result: ConversationResult) -> str:
    lines = [
        f"Conversations: {result.conversations}; opening questions hit@5 {result.openings.hits[5]:.3f}, "
        f"MRR {result.openings.mrr:.3f}",
    ]
    if result.singles_after_other is not None:
        after = result.singles_after_other
        lines.append(
            f"Single questions asked in a session after another topic: hit@5 {after.hits[5]:.3f}, "
            f"MRR {after.mrr:.3f}"
        )
    lines += [
        "",
        "| follow-up kind | n | in session hit@5 | in session MRR | asked alone hit@5 | asked alone MRR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in [*result.kinds, result.overall]:
        s, a = row.session, row.alone
        lines.append(
            f"| {row.kind} | {s.questions} | {s.hits[5]:.3f} | {s.mrr:.3f} | {a.hits[5]:.3f} | {a.mrr:.3f} |"
        )
    lines += ["", "Examples of what was searched:"]
    lines += [f"- {question!r} -> {searched!r}" for question, searched in result.examples]
    return "\n".join(lines)


def below_floors(result: ConversationResult, floors: Mapping[str, float] = FLOORS) -> list[str]:
    switch = next((k.session for k in result.kinds if k.kind == "switch"), result.overall.session)
    values = {
        "follow-up hit@5": result.overall.session.hits[5],
        "follow-up MRR": result.overall.session.mrr,
        "switch hit@5": switch.hits[5],
    }
    return [
        f"conversations {name} {values[name]:.3f} < {floor}"
        for name, floor in floors.items()
        if values[name] < floor
    ]
