"""Conversation history under per-document access: a turn whose answer cited a document the
caller may no longer see (its access list was narrowed after the answer) is left out of the
prompt's window and of the history shown, question and answer both."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import AccessSet, visible_document_ids
from app.db.models import Message


def _cited(message: Message) -> set[uuid.UUID]:
    cited = set()
    for source in message.sources or ():
        try:
            cited.add(uuid.UUID(str(source.get("document_id"))))
        except (ValueError, AttributeError):
            continue
    return cited


async def hidden_message_ids(
    db: AsyncSession, tenant_id: uuid.UUID, access: AccessSet, messages: Sequence[Message]
) -> set[int]:
    """Ids of the messages (in order: each question, then its answer) the caller may not see."""
    if not access.restricted:
        return set()
    cited = {m.id: _cited(m) for m in messages if m.role == "assistant"}
    wanted = set().union(*cited.values()) if cited else set()
    if not wanted:
        return set()
    seen = await visible_document_ids(db, tenant_id, access, wanted)
    hidden: set[int] = set()
    question: int | None = None
    for message in messages:
        if message.role == "user":
            question = message.id
        elif not cited.get(message.id, set()) <= seen:
            hidden.add(message.id)
            if question is not None:
                hidden.add(question)
    return hidden
