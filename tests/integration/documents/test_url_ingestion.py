"""Documents added from a URL: refused at the request when the URL may not be fetched, fetched by
the real worker into versions, refreshed into a new version only when the content changed.

The web servers run on 127.0.0.2, the one address the app's allow-list (URL_FETCH_ALLOW_CIDRS)
admits: 127.0.0.1, where a redirect tries to lead, stays forbidden."""

from __future__ import annotations

import gzip
import ipaddress
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.db.models import Document, DocumentVersion, IngestionJob
from app.documents.fetching import FetchLimits, IPAddress, UrlFetcher
from app.documents.ingestion import IngestionContext
from app.documents.url_ingestion import run_fetch_stage
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import Caller, MakeCaller
from tests.support.documents import chunk_rows, count_rows, make_pdf, page_text, run_jobs, upload
from tests.support.embedders import CountingEmbedder
from tests.support.web import Route, WebServer, web_server

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

SERVED_FROM = "127.0.0.2"


def guide(rotation_days: int) -> bytes:
    return (
        "<!doctype html><html><head><title>Key guide</title></head><body>"
        "<h1>Rotation</h1><p>Rotate every API key at least every "
        f"{rotation_days} days and revoke the old one at once.</p>"
        "<h1>Revocation</h1><p>A revoked key is refused with 401 from the next request on; "
        "the audit log records who revoked it and when.</p></body></html>"
    ).encode()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"url_fetch_allow_cidrs": [f"{SERVED_FROM}/32"]})


@pytest.fixture
def site() -> Iterator[WebServer]:
    with web_server(SERVED_FROM) as server:
        yield server


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    return await make_caller()


async def add_url(client: httpx.AsyncClient, caller: Caller, url: str, **fields: Any) -> httpx.Response:
    return await client.post("/api/v1/docs", json={"url": url, **fields}, headers=caller.headers)


async def job_of(client: httpx.AsyncClient, caller: Caller, accepted: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(accepted.json()["status_url"], headers=caller.headers)).json()
    return body


async def test_a_url_is_fetched_by_the_worker_into_a_searchable_version(
    client: httpx.AsyncClient, caller: Caller, resources: Resources, site: WebServer
) -> None:
    site.routes["/guide.html"] = Route(
        guide(90),
        headers={
            "Content-Type": "text/html",
            "ETag": '"g1"',
            "Last-Modified": "Mon, 07 Dec 2026 01:00:00 GMT",
        },
    )
    accepted = await add_url(client, caller, site.url("/guide.html"), tags=["keys"])
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["version"] is None and accepted.json()["status"] == "queued"
    assert (await job_of(client, caller, accepted))["status"] == "queued"

    await run_jobs(resources)

    job = await job_of(client, caller, accepted)
    assert job["status"] == "succeeded" and job["version"] == 1 and job["progress"] == 100
    document_id = accepted.json()["document_id"]
    detail = (await client.get(f"/api/v1/docs/{document_id}", headers=caller.headers)).json()
    assert (
        detail["source_url"] == site.url("/guide.html")
        and detail["title"] == f"{SERVED_FROM}:{site.port}/guide.html"
    )
    assert (
        detail["source_etag"] == '"g1"' and detail["source_last_modified"] == "Mon, 07 Dec 2026 01:00:00 GMT"
    )
    assert detail["current"]["mime_type"] == "text/html" and detail["tags"] == ["keys"]
    rows = await chunk_rows(resources, document_id)
    assert any("90 days" in row.text for row in rows)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/guide",  # loopback outside the allow-list
        "http://[::ffff:127.0.0.1]:9/guide",  # the same, IPv4-mapped
        "http://[::1]:9/guide",
        "http://2130706433:9/guide",  # 127.0.0.1 written as one number: the resolver decides
        "http://0x7f000001:9/guide",
        "http://127.1:9/guide",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/wiki",
        "file:///etc/passwd",
        "gopher://127.0.0.2/",
    ],
)
async def test_a_url_that_may_not_be_fetched_is_refused_at_the_request(
    url: str, client: httpx.AsyncClient, caller: Caller, resources: Resources
) -> None:
    response = await add_url(client, caller, url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "url_forbidden" and response.json()["trace_id"]
    for model in (Document, DocumentVersion, IngestionJob):
        assert await count_rows(resources, model) == 0


async def test_a_url_too_long_once_encoded_is_refused_not_stored(
    client: httpx.AsyncClient, caller: Caller, resources: Resources
) -> None:
    response = await add_url(client, caller, f"http://{SERVED_FROM}/" + "é" * 1500)  # 9000 encoded
    assert response.status_code == 422 and response.json()["code"] == "invalid_document_metadata"
    assert await count_rows(resources, Document) == 0


async def test_a_json_body_without_a_url_is_a_validation_problem(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post("/api/v1/docs", json={"title": "no url"}, headers=caller.headers)
    assert response.status_code == 422 and response.json()["code"] == "validation_error", response.text


def _failures(site: WebServer) -> dict[str, tuple[Route, str]]:
    inner = "http://127.0.0.1:9/secret"
    return {
        "redirect to 127.0.0.1": (Route(status=302, headers={"Location": inner}), "url_forbidden"),
        "too large": (Route(b"word " * 300_000, chunked=True), "url_too_large"),  # MAX_UPLOAD_MB=1
        "wrong type": (
            Route(gzip.compress(b"x" * 1000), headers={"Content-Type": "text/html"}),
            "unsupported_media_type",
        ),
        "error status": (Route(b"gone", status=410), "url_unreachable"),
        "too many redirects": (Route(status=301, headers={"Location": "/loop"}), "url_unreachable"),
        "too slow": (Route(hang=True), "url_timeout"),
    }


@pytest.mark.parametrize(
    "case",
    ["redirect to 127.0.0.1", "too large", "wrong type", "error status", "too many redirects", "too slow"],
)
async def test_what_the_fetch_meets_ends_the_job_with_its_code_and_a_readable_error(
    case: str,
    client: httpx.AsyncClient,
    caller: Caller,
    resources: Resources,
    site: WebServer,
    settings: Settings,
) -> None:
    route, code = _failures(site)[case]
    site.routes["/loop"] = route
    accepted = await add_url(client, caller, site.url("/loop"))
    assert accepted.status_code == 202, accepted.text

    # Only the hanging server meets the small time cap: the others must end on their own merits.
    timeout_s = 0.3 if case == "too slow" else 30.0
    await run_jobs(resources, settings=settings.model_copy(update={"url_fetch_timeout_s": timeout_s}))

    job = await job_of(client, caller, accepted)
    assert job["status"] == "failed" and job["error_code"] == code, job
    assert job["error"] and "ingestion failed" not in job["error"] and job["version"] is None
    assert await count_rows(resources, DocumentVersion) == 0
    if case == "redirect to 127.0.0.1":
        assert "127.0.0.1" in job["error"]


async def test_the_worker_refuses_a_name_that_resolves_to_a_private_address(
    client: httpx.AsyncClient, caller: Caller, resources: Resources, site: WebServer, settings: Settings
) -> None:
    """The name passed the request's check (then it resolved to the allowed address); by the time
    the worker fetches, it resolves to a private one: the worker's own check refuses it."""
    accepted = await add_url(client, caller, site.url("/guide"))

    async def rebound(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("10.0.0.7")]

    fetcher = UrlFetcher(FetchLimits.from_settings(settings), resolver=rebound)
    job_id = uuid.UUID(accepted.json()["job_id"])
    document_id = accepted.json()["document_id"]
    async with resources.session_factory() as session, session.begin():
        document = await session.get(Document, uuid.UUID(document_id))
        assert document is not None
        document.source_url = f"http://intranet.test:{site.port}/guide"
    outcome = await run_fetch_stage(resources.session_factory, settings, job_id, fetcher=fetcher)

    assert outcome == "failed"
    job = await job_of(client, caller, accepted)
    assert job["error_code"] == "url_forbidden" and "10.0.0.7" in job["error"]
    assert site.requests == []


async def test_refresh_makes_a_new_version_only_when_the_content_changed(
    client: httpx.AsyncClient,
    caller: Caller,
    resources: Resources,
    site: WebServer,
    counting_embedder: CountingEmbedder,
) -> None:
    site.routes["/guide.html"] = Route(guide(90), headers={"Content-Type": "text/html"})  # no validators
    accepted = await add_url(client, caller, site.url("/guide.html"))
    document_id = accepted.json()["document_id"]
    await run_jobs(resources)
    counting_embedder.reset()

    same = await client.post(f"/api/v1/docs/{document_id}/refresh", headers=caller.headers)
    assert same.status_code == 202, same.text
    await run_jobs(resources)
    job = await job_of(client, caller, same)
    assert job["status"] == "succeeded" and job["version"] == 1 and job["stage"] == "fetching"
    assert counting_embedder.texts == []

    site.routes["/guide.html"] = Route(guide(30), headers={"Content-Type": "text/html"})
    changed = await client.post(f"/api/v1/docs/{document_id}/refresh", headers=caller.headers)
    await run_jobs(resources)
    job = await job_of(client, caller, changed)
    assert job["status"] == "succeeded" and job["version"] == 2
    assert counting_embedder.texts and all("30 days" in text for text in counting_embedder.texts)
    versions = (await client.get(f"/api/v1/docs/{document_id}/versions", headers=caller.headers)).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["pages_reused"] == 1 and versions[1]["pages_reembedded"] == 1


async def test_refresh_is_a_conditional_request_and_a_304_stores_nothing(
    client: httpx.AsyncClient,
    caller: Caller,
    resources: Resources,
    site: WebServer,
    counting_embedder: CountingEmbedder,
) -> None:
    site.routes["/guide"] = Route(guide(90), headers={"ETag": '"g1"'})
    accepted = await add_url(client, caller, site.url("/guide"))
    document_id = accepted.json()["document_id"]
    await run_jobs(resources)
    counting_embedder.reset()

    refreshed = await client.post(f"/api/v1/docs/{document_id}/refresh", headers=caller.headers)
    await run_jobs(resources)

    assert site.requests[-1].headers.get("if-none-match") == '"g1"'
    job = await job_of(client, caller, refreshed)
    assert job["status"] == "succeeded" and job["version"] == 1
    assert counting_embedder.texts == [] and await count_rows(resources, DocumentVersion) == 1

    site.routes["/guide"] = Route(guide(30), headers={"ETag": '"g2"'})
    again = await client.post(f"/api/v1/docs/{document_id}/refresh", headers=caller.headers)
    await run_jobs(resources)
    assert (await job_of(client, caller, again))["version"] == 2
    detail = (await client.get(f"/api/v1/docs/{document_id}", headers=caller.headers)).json()
    assert detail["source_etag"] == '"g2"' and detail["current_version"] == 2


async def test_a_refresh_waiting_for_the_worker_is_not_queued_twice(
    client: httpx.AsyncClient, caller: Caller, resources: Resources, site: WebServer
) -> None:
    site.routes["/guide"] = Route(guide(90))
    accepted = await add_url(client, caller, site.url("/guide"))
    document_id = accepted.json()["document_id"]
    again = await client.post(f"/api/v1/docs/{document_id}/refresh", headers=caller.headers)
    assert again.json()["job_id"] == accepted.json()["job_id"]
    assert await count_rows(resources, IngestionJob) == 1


async def test_only_a_url_document_can_be_refreshed(
    client: httpx.AsyncClient, caller: Caller, resources: Resources
) -> None:
    uploaded = await upload(client, caller.headers, make_pdf([page_text(1)]))
    response = await client.post(
        f"/api/v1/docs/{uploaded.json()['document_id']}/refresh", headers=caller.headers
    )
    assert response.status_code == 409 and response.json()["code"] == "not_a_url_document"
    unknown = await client.post(f"/api/v1/docs/{uuid.uuid4()}/refresh", headers=caller.headers)
    assert unknown.status_code == 404


async def test_a_url_job_records_its_times_by_the_worker_clock(
    client: httpx.AsyncClient, caller: Caller, resources: Resources, site: WebServer
) -> None:
    site.routes["/guide.html"] = Route(guide(90), headers={"Content-Type": "text/html"})
    accepted = await add_url(client, caller, site.url("/guide.html"))
    now = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)

    context = IngestionContext(
        resources.session_factory, resources.embedder, resources.settings, clock=lambda: now
    )
    await resources.job_queue.run_worker(context, burst=True)

    job = await job_of(client, caller, accepted)
    assert job["status"] == "succeeded", job
    assert datetime.fromisoformat(job["started_at"]) == now == datetime.fromisoformat(job["finished_at"])
