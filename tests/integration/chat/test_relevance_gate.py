"""The relevance gate end to end: a question the documents cannot answer, though it shares words
with them, gets the "nothing in your documents matches" answer without a model call; a question
they answer is answered. With the gate off, the same unanswerable question got passages."""

from __future__ import annotations

import httpx
import pytest

from app.auth.principal import Role
from app.chat.types import NO_CONTEXT_ANSWER
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

HANDBOOK = {
    "retention.md": "# Retention\n\nBackups of customer databases are kept for exactly 35 days before "
    "deletion. Retention is enforced by a nightly purge job.",
    "parking.md": "# Parking\n\nStaff parking is on level two of the garage. Bicycles go in the "
    "courtyard racks.",
    "hours.md": "# Office hours\n\nThe support desk is open from nine to five on weekdays. Visitors sign in "
    "at reception.",
}
ANSWERABLE = "How long are backups of the customer databases kept?"
# On topic and sharing words with the retention page ("customer", "databases", "backups"), but
# nothing in the handbook says anything about encryption keys.
UNANSWERABLE = "Which encryption algorithm protects the customer database backups, and who holds the keys?"


async def add_handbook(library: Library) -> None:
    for filename, text in HANDBOOK.items():
        await library.add(text, filename=filename)


async def test_an_unanswerable_question_gets_the_no_match_answer_and_an_answerable_one_an_answer(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await add_handbook(library)
    fake.configure("openai", text="They are kept for 35 days [1].")
    calls = fake.stats()["openai"]["chat_requests"]

    refused = (await ask(client, editor, UNANSWERABLE)).json()
    assert refused["answer"] == NO_CONTEXT_ANSWER
    assert refused["sources"] == [] and refused["provider"] == "none"
    assert fake.stats()["openai"]["chat_requests"] == calls  # no model asked to make one up

    answered = (await ask(client, editor, ANSWERABLE)).json()
    assert answered["answer"] == "They are kept for 35 days [1]." and answered["provider"] == "openai"
    assert "35 days" in answered["sources"][0]["snippet"]

    # vector mode is judged on the same similarity
    assert (await ask(client, editor, UNANSWERABLE, mode="vector")).json()["answer"] == NO_CONTEXT_ANSWER
    assert (await ask(client, editor, ANSWERABLE, mode="vector")).json()["provider"] == "openai"


async def test_with_the_gate_off_the_same_question_gets_passages(
    settings: Settings, app_embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    off = {"relevance_min_similarity": 0.0, "relevance_min_text_match": 0.0}
    async with running_app(settings, embedder=app_embedder, **off) as (app, client, make_caller):
        editor = await make_caller(tenant="gate-off", role=Role.editor)
        await add_handbook(Library(client, app.state.resources, editor))
        fake.configure("openai", text="AES, probably [1].")
        body = (await ask(client, editor, UNANSWERABLE)).json()
    assert body["sources"] and body["provider"] == "openai"
