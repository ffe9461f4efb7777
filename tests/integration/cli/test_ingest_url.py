"""`python -m app ingest --url URL`: the URL is fetched and ingested like `POST /api/v1/docs` with
a JSON url would, on the real database and worker code; refusals are summary rows with their code."""

from __future__ import annotations

import pytest

from app.cli.ingest import IngestionServices, ingest_url
from app.documents.ingestion import IngestionContext
from app.resources import Resources
from app.settings import Settings
from tests.support.web import Route, web_server

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

PAGE = b"<!doctype html><html><body><h1>Backups</h1><p>Backups run nightly at 02:00.</p></body></html>"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"url_fetch_allow_cidrs": ["127.0.0.2/32"]})


def services(resources: Resources) -> IngestionServices:
    context = IngestionContext(resources.session_factory, resources.embedder, resources.settings)
    return IngestionServices(resources.settings, resources.session_factory, resources.embedder, context)


async def test_a_url_is_ingested_and_a_forbidden_one_is_a_failed_row_with_its_code(
    resources: Resources,
) -> None:
    with web_server("127.0.0.2") as site:
        site.routes["/backups.html"] = Route(PAGE)
        ingested = await ingest_url(
            services(resources), site.url("/backups.html"), tenant_slug="cli", tags=["ops"]
        )
        refused = await ingest_url(services(resources), "http://127.0.0.1:9/", tenant_slug="cli", tags=[])
        missing = await ingest_url(services(resources), site.url("/gone"), tenant_slug="cli", tags=[])
    assert ingested.status == "ingested" and ingested.pages == 1 and ingested.chunks >= 1
    assert refused.status == "failed" and refused.reason.startswith("url_forbidden:")
    assert missing.status == "failed" and missing.reason == "url_unreachable: the server answered HTTP 404"
