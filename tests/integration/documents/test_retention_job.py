"""MEMORY_RETENTION_DAYS, DELETED_HISTORY_PURGE_DAYS and FEEDBACK_RETENTION_DAYS are enforced by a
periodic job that every ingestion worker runs (its clock injected: "now" is 400 days ahead)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from procrastinate.periodic import PeriodicDeferrer
from sqlalchemy import select, update

from app.db.models import AnswerFeedback, Conversation, Message
from app.documents.ingestion import IngestionContext
from app.documents.queue import RETENTION_TASK
from app.resources import Resources
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration

# Far enough ahead that, on the real clock, no conversation of this test is idle at all.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)


async def conversation(
    resources: Resources, tenant_id: uuid.UUID, client_id: str, idle: timedelta
) -> uuid.UUID:
    async with resources.session_factory() as session, session.begin():
        row = Conversation(
            tenant_id=tenant_id, principal_id="api_key:test", client_id=client_id, last_active_at=NOW - idle
        )
        session.add(row)
        await session.flush()
        for role, content in (("user", "How long are backups kept?"), ("assistant", "Thirty days.")):
            session.add(Message(conversation_id=row.id, tenant_id=tenant_id, role=role, content=content))
        return row.id


async def defer_due_periodic_jobs(resources: Resources) -> None:
    """What a worker's periodic deferrer does at the next tick of the retention schedule."""
    registry = resources.job_queue.app.periodic_registry
    (retention,) = [task for task in registry.periodic_tasks.values() if task.task.name == RETENTION_TASK]
    tick = retention.croniter.get_next(ret_type=float, start_time=time.time())
    assert retention.croniter.get_next(ret_type=float, start_time=tick) - tick == 3600, "hourly"
    deferrer = PeriodicDeferrer(registry)
    await deferrer.defer_jobs(deferrer.get_previous_tasks(at=tick + 1))


async def test_the_worker_soft_deletes_conversations_idle_past_the_retention_and_keeps_recent_ones(
    make_caller: MakeCaller, resources: Resources
) -> None:
    assert resources.settings.memory_retention_days == 30
    tenant_id = (await make_caller()).tenant_id
    idle = await conversation(resources, tenant_id, "idle", timedelta(days=31))
    recent = await conversation(resources, tenant_id, "recent", timedelta(days=29))

    await defer_due_periodic_jobs(resources)
    context = IngestionContext(
        resources.session_factory, resources.embedder, resources.settings, clock=lambda: NOW
    )
    await resources.job_queue.run_worker(context, burst=True)

    async with resources.session_factory() as session:
        deleted = {row.id: row.deleted_at for row in (await session.execute(select(Conversation))).scalars()}
        messages = (await session.execute(select(Message))).scalars().all()
    assert deleted == {idle: NOW, recent: None}
    assert {(m.conversation_id, m.deleted_at) for m in messages} == {(idle, NOW), (recent, None)}


async def soft_deleted(
    resources: Resources, tenant_id: uuid.UUID, client_id: str, ago: timedelta
) -> uuid.UUID:
    conversation_id = await conversation(resources, tenant_id, client_id, timedelta(days=1))
    async with resources.session_factory() as session, session.begin():
        for model, column in ((Conversation, Conversation.id), (Message, Message.conversation_id)):
            await session.execute(update(model).where(column == conversation_id).values(deleted_at=NOW - ago))
    return conversation_id


async def rating(resources: Resources, tenant_id: uuid.UUID, trace_id: str, age: timedelta) -> None:
    async with resources.session_factory() as session, session.begin():
        session.add(
            AnswerFeedback(
                tenant_id=tenant_id,
                principal_id="api_key:test",
                trace_id=trace_id,
                score=5,
                comment="my account number is in the question",
                question="How long are backups kept?",
                answer="Thirty days.",
                provider="fake",
                model="m",
                answered_at=NOW - age,
                created_at=NOW - age,
                updated_at=NOW - age,
            )
        )


async def test_the_worker_purges_deleted_history_and_old_ratings_for_good(
    make_caller: MakeCaller, resources: Resources
) -> None:
    settings = resources.settings
    assert (settings.deleted_history_purge_days, settings.feedback_retention_days) == (7, 365)
    tenant_id = (await make_caller()).tenant_id
    purged = await soft_deleted(resources, tenant_id, "reset long ago", timedelta(days=8))
    recent = await soft_deleted(resources, tenant_id, "reset lately", timedelta(days=6))
    live = await conversation(resources, tenant_id, "live", timedelta(days=1))
    await rating(resources, tenant_id, "old", timedelta(days=366))
    await rating(resources, tenant_id, "new", timedelta(days=364))

    await defer_due_periodic_jobs(resources)
    context = IngestionContext(
        resources.session_factory, resources.embedder, resources.settings, clock=lambda: NOW
    )
    await resources.job_queue.run_worker(context, burst=True)

    async with resources.session_factory() as session:
        conversations = set((await session.execute(select(Conversation.id))).scalars())
        texts = {
            (row.conversation_id, row.content) for row in (await session.execute(select(Message))).scalars()
        }
        ratings = set((await session.execute(select(AnswerFeedback.trace_id))).scalars())
    assert conversations == {recent, live}, "deleted 8 days ago: gone; 6 days ago: still kept"
    assert {conversation_id for conversation_id, _ in texts} == {recent, live}
    assert purged not in {conversation_id for conversation_id, _ in texts}, "the text stayed"
    assert ratings == {"new"}
