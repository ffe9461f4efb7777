"""Upload → durable job → chunks with embeddings; incremental re-ingestion by page; soft delete."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from app.auth.principal import Role
from app.resources import Resources
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.callers import MakeCaller
from tests.support.documents import (
    chunk_rows,
    make_docx,
    make_pdf,
    page_text,
    run_jobs,
    search_current_chunks,
    upload,
)
from tests.support.embedders import CountingEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

PAGES = [page_text(n) for n in range(1, 5)]


async def test_upload_is_acknowledged_then_a_worker_stores_chunks_with_embeddings(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, make_pdf(PAGES), title="Ops guide", tags="ops,guide")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["version"] == 1 and body["status"] == "queued"
    assert body["status_url"] == f"/api/v1/jobs/{body['job_id']}"
    queued = (await client.get(body["status_url"], headers=caller.headers)).json()
    assert queued["status"] == "queued" and queued["progress"] == 0

    await run_jobs(resources)

    job = (await client.get(body["status_url"], headers=caller.headers)).json()
    assert job["status"] == "succeeded" and job["progress"] == 100 and job["error"] is None
    rows = await chunk_rows(resources, body["document_id"])
    assert rows and {row.page for row in rows} == {1, 2, 3, 4}
    assert all(
        len(row.embedding) == 384 and row.embedding_model == "all-MiniLM-L6-v2+onnx-int8-dynamic"
        for row in rows
    )
    detail = (await client.get(f"/api/v1/docs/{body['document_id']}", headers=caller.headers)).json()
    assert detail["current_version"] == 1 and detail["page_count"] == 4
    assert detail["chunk_count"] == len(rows) and detail["tags"] == ["ops", "guide"]
    assert detail["current"]["mime_type"] == "application/pdf"


async def test_new_version_with_one_page_changed_reembeds_only_that_page(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    counting_embedder: CountingEmbedder,
) -> None:
    caller = await make_caller()
    first = (await upload(client, caller.headers, make_pdf(PAGES))).json()
    await run_jobs(resources)
    before = await chunk_rows(resources, first["document_id"], current_only=True)
    counting_embedder.reset()

    edited = [*PAGES]
    edited[2] = page_text(3, topic="billing")
    second = await upload(client, caller.headers, make_pdf(edited), document_id=first["document_id"])
    assert second.status_code == 202 and second.json()["version"] == 2
    await run_jobs(resources)

    assert counting_embedder.texts, "the changed page must be embedded"
    assert all("billing" in text and "Page 3" in text for text in counting_embedder.texts)
    after = await chunk_rows(resources, first["document_id"], current_only=True)
    assert len(after) == len(before)
    unchanged_ids = {row.id for row in before if row.page != 3}
    assert unchanged_ids <= {row.id for row in after}, "unchanged pages keep their rows and vectors"
    assert {row.valid_from_version for row in after if row.page == 3} == {2}
    history = await chunk_rows(resources, first["document_id"])
    replaced = [row for row in history if row.valid_to_version == 2]
    assert {row.page for row in replaced} == {3}, "old rows of the edited page are kept as history"

    versions = (
        await client.get(f"/api/v1/docs/{first['document_id']}/versions", headers=caller.headers)
    ).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert (versions[1]["pages_reused"], versions[1]["pages_reembedded"]) == (3, 1)
    assert (versions[0]["pages_reused"], versions[0]["pages_reembedded"]) == (0, 4)
    assert versions[1]["chunk_count"] == len(after) and versions[1]["is_current"]
    assert versions[1]["page_count"] == 4


async def test_identical_reupload_creates_no_version_and_no_chunks(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    counting_embedder: CountingEmbedder,
) -> None:
    caller = await make_caller()
    data = make_pdf(PAGES)
    first = (await upload(client, caller.headers, data, path="guides/ops.pdf")).json()
    await run_jobs(resources)
    rows = await chunk_rows(resources, first["document_id"])
    counting_embedder.reset()

    again = await upload(client, caller.headers, data, document_id=first["document_id"])
    by_path = await upload(client, caller.headers, data, path="guides/ops.pdf")
    await run_jobs(resources)

    for response in (again, by_path):
        assert response.status_code == 200
        assert response.json() | {"status_url": None} == first | {"status": "unchanged", "status_url": None}
    assert counting_embedder.calls == 0
    assert [row.id for row in await chunk_rows(resources, first["document_id"])] == [row.id for row in rows]
    listing = (await client.get("/api/v1/docs", headers=caller.headers)).json()
    assert listing["total"] == 1


async def test_upload_with_a_known_path_becomes_a_new_version(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    first = (await upload(client, caller.headers, make_pdf(PAGES[:2]), path="a/b.pdf")).json()
    second = (await upload(client, caller.headers, make_pdf(PAGES[:3]), path="a/b.pdf", tags="new")).json()
    assert second["document_id"] == first["document_id"] and second["version"] == 2


async def test_newer_version_supersedes_a_queued_older_one(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    first = (await upload(client, caller.headers, make_pdf(PAGES[:2]))).json()
    second = (await upload(client, caller.headers, make_pdf(PAGES), document_id=first["document_id"])).json()

    old_job = (await client.get(first["status_url"], headers=caller.headers)).json()
    assert old_job["status"] == "failed" and old_job["error_code"] == "superseded"
    await run_jobs(resources)

    assert (await client.get(second["status_url"], headers=caller.headers)).json()["status"] == "succeeded"
    assert (await client.get(first["status_url"], headers=caller.headers)).json()["status"] == "failed"
    detail = (await client.get(f"/api/v1/docs/{first['document_id']}", headers=caller.headers)).json()
    assert detail["current_version"] == 2 and detail["page_count"] == 4
    versions = (
        await client.get(f"/api/v1/docs/{first['document_id']}/versions", headers=caller.headers)
    ).json()
    assert [v["status"] for v in versions] == ["superseded", "succeeded"]


async def test_soft_delete_hides_from_listing_and_retrieval_and_restore_brings_it_back(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    counting_embedder: CountingEmbedder,
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, make_pdf(PAGES), title="Operations")).json()
    await run_jobs(resources)
    query = await counting_embedder.embed_query("How are pages embedded in batches?")

    async def retrieved() -> set[uuid.UUID]:
        async with resources.session_factory() as session:
            hits = await search_current_chunks(session, caller.tenant_id, query, limit=5)
        return {hit.document_id for hit in hits}

    assert retrieved_ids(await retrieved()) == {doc["document_id"]}
    deleted = await client.delete(f"/api/v1/docs/{doc['document_id']}", headers=caller.headers)
    assert deleted.status_code == 204
    assert (await client.get("/api/v1/docs", headers=caller.headers)).json()["total"] == 0
    assert (await client.get(f"/api/v1/docs/{doc['document_id']}", headers=caller.headers)).status_code == 404
    assert await retrieved() == set()
    listed = (await client.get("/api/v1/docs?include_deleted=true", headers=caller.headers)).json()
    assert listed["items"][0]["deleted_at"] is not None

    restored = await client.post(f"/api/v1/docs/{doc['document_id']}/restore", headers=caller.headers)
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert retrieved_ids(await retrieved()) == {doc["document_id"]}
    assert (await client.get("/api/v1/docs", headers=caller.headers)).json()["total"] == 1


def retrieved_ids(ids: set[uuid.UUID]) -> set[str]:
    return {str(value) for value in ids}


async def test_listing_filters_by_tag_and_text_and_paginates(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    for index in range(3):
        await upload(
            client,
            caller.headers,
            f"Document number {index} about onboarding.".encode(),
            filename=f"note-{index}.txt",
            title=f"Note {index}",
            tags="even" if index % 2 == 0 else "odd",
            path=f"notes/{index}.txt",
        )
    even = (await client.get("/api/v1/docs?tag=even", headers=caller.headers)).json()
    assert even["total"] == 2 and all("even" in item["tags"] for item in even["items"])
    text = (await client.get("/api/v1/docs?q=notes/1", headers=caller.headers)).json()
    assert [item["title"] for item in text["items"]] == ["Note 1"]
    page = (await client.get("/api/v1/docs?limit=2&offset=2", headers=caller.headers)).json()
    assert page["total"] == 3 and len(page["items"]) == 1


async def test_patch_changes_title_tags_and_author(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, b"Plain text body.", filename="a.txt")).json()
    patched = await client.patch(
        f"/api/v1/docs/{doc['document_id']}",
        json={"title": "Renamed", "tags": ["x", "y", "x"], "author": "Ada"},
        headers=caller.headers,
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["title"], body["tags"], body["author"]) == ("Renamed", ["x", "y"], "Ada")


async def test_docx_and_markdown_are_ingested_with_sections_as_pages(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    docx = make_docx([("Install", page_text(1)), ("Operate", page_text(2))])
    markdown = f"# Intro\n\n{page_text(1)}\n\n## Usage\n\n{page_text(2)}\n".encode()
    a = (await upload(client, caller.headers, docx, filename="guide.bin")).json()
    b = (await upload(client, caller.headers, markdown, filename="readme.md")).json()
    await run_jobs(resources)
    for doc, mime in ((a, "wordprocessingml"), (b, "text/markdown")):
        detail = (await client.get(f"/api/v1/docs/{doc['document_id']}", headers=caller.headers)).json()
        assert detail["page_count"] == 2 and detail["chunk_count"] >= 2
        assert mime in detail["current"]["mime_type"]


async def test_a_reader_may_read_but_not_upload(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    reader = await make_caller(role=Role.reader)
    assert (await upload(client, reader.headers, b"text")).status_code == 403
    assert (await client.get("/api/v1/docs", headers=reader.headers)).status_code == 200


async def test_the_in_process_worker_ingests_without_a_separate_worker(
    settings: Settings, counting_embedder: CountingEmbedder, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    async with running_app(
        settings, embedder=counting_embedder, run_worker_in_process=True, worker_heartbeat_s=1.0
    ) as (_, client, _make):
        doc = (await upload(client, caller.headers, make_pdf(PAGES[:2]))).json()
        for _ in range(300):
            job = (await client.get(doc["status_url"], headers=caller.headers)).json()
            if job["status"] in {"succeeded", "failed"}:
                break
            await asyncio.sleep(0.1)
    assert job["status"] == "succeeded", job
