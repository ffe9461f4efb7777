"""Every bad upload gets its own problem code, and nothing is half-written."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.db.models import Document, DocumentVersion, IngestionJob
from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.documents import (
    GIF_BYTES,
    count_rows,
    make_corrupt_pdf,
    make_docx_bomb,
    make_encrypted_pdf,
    make_pdf,
    page_text,
    upload,
)
from tests.support.scans import png_with_header_size

pytestmark = pytest.mark.integration

BAD_FILES = {
    "wrong type": ("picture.pdf", GIF_BYTES, 415, "unsupported_document_type"),
    "encrypted PDF": ("locked.pdf", make_encrypted_pdf([page_text(1)]), 422, "encrypted_document"),
    "corrupt PDF": ("broken.pdf", make_corrupt_pdf(), 422, "corrupt_document"),
    "empty document": ("empty.txt", b"  \n\n ", 422, "empty_document"),
    "image decompression bomb": ("bomb.png", png_with_header_size(60_000, 60_000), 422, "image_too_large"),
    "image with a damaged header": (
        "broken.png",
        b"\x89PNG\r\n\x1a\n" + b"\x07" * 64,
        422,
        "corrupt_document",
    ),
    "DOCX zip bomb": ("bomb.docx", make_docx_bomb(), 422, "archive_bomb"),
    "ZIP that is no DOCX": ("a.docx", b"PK\x03\x04" + b"\0" * 100, 422, "corrupt_document"),
    "file over the limit": ("big.txt", b"word " * 230_000, 413, "upload_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
async def test_each_bad_upload_has_its_code_and_stores_nothing(
    case: str, client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    filename, data, status, code = BAD_FILES[case]
    caller = await make_caller()
    response = await upload(client, caller.headers, data, filename=filename)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["trace_id"]
    for model in (Document, DocumentVersion, IngestionJob):
        assert await count_rows(resources, model) == 0


async def test_a_bad_new_version_leaves_the_document_untouched(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, make_pdf([page_text(1)]))).json()
    response = await upload(client, caller.headers, make_corrupt_pdf(), document_id=doc["document_id"])
    assert response.json()["code"] == "corrupt_document"
    assert await count_rows(resources, DocumentVersion) == 1


async def test_missing_file_part(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller()
    response = await client.post("/api/v1/docs", data={"title": "no file"}, headers=caller.headers)
    assert response.status_code == 400 and response.json()["code"] == "missing_file"
    response = await client.post("/api/v1/docs", headers=caller.headers)
    assert response.status_code == 400 and response.json()["code"] == "missing_file"


async def test_a_body_far_over_the_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, b"x" * (3 * 1024 * 1024), filename="huge.txt")
    assert response.status_code == 413
    assert response.json()["code"] in {"payload_too_large", "upload_too_large"}


async def test_unknown_ids_are_404_with_their_codes(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    unknown = uuid.uuid4()
    for method, url in [
        ("GET", f"/api/v1/docs/{unknown}"),
        ("GET", f"/api/v1/docs/{unknown}/versions"),
        ("DELETE", f"/api/v1/docs/{unknown}"),
        ("POST", f"/api/v1/docs/{unknown}/restore"),
    ]:
        response = await client.request(method, url, headers=caller.headers)
        assert (response.status_code, response.json()["code"]) == (404, "document_not_found"), url
    response = await upload(client, caller.headers, b"text", filename="a.txt", document_id=unknown)
    assert (response.status_code, response.json()["code"]) == (404, "document_not_found")
    response = await client.get(f"/api/v1/jobs/{unknown}", headers=caller.headers)
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")


async def test_another_tenants_document_and_job_are_invisible(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    owner = await make_caller(tenant="owner")
    intruder = await make_caller(tenant="intruder")
    doc = (await upload(client, owner.headers, b"Secret plan text.", filename="plan.txt")).json()
    doc_id = doc["document_id"]
    attempts = [
        await client.get(f"/api/v1/docs/{doc_id}", headers=intruder.headers),
        await client.get(f"/api/v1/docs/{doc_id}/versions", headers=intruder.headers),
        await client.patch(f"/api/v1/docs/{doc_id}", json={"title": "mine"}, headers=intruder.headers),
        await client.delete(f"/api/v1/docs/{doc_id}", headers=intruder.headers),
        await client.post(f"/api/v1/docs/{doc_id}/restore", headers=intruder.headers),
        await upload(client, intruder.headers, b"Overwrite.", filename="x.txt", document_id=doc_id),
    ]
    assert [r.status_code for r in attempts] == [404] * len(attempts)
    assert (await client.get(doc["status_url"], headers=intruder.headers)).status_code == 404
    assert (await client.get("/api/v1/docs", headers=intruder.headers)).json()["total"] == 0
    assert (await client.get(f"/api/v1/docs/{doc_id}", headers=owner.headers)).json()["title"] == "plan.txt"


async def test_new_version_of_a_deleted_document_is_a_conflict(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, b"Body text.", filename="a.txt")).json()
    await client.delete(f"/api/v1/docs/{doc['document_id']}", headers=caller.headers)
    response = await upload(
        client, caller.headers, b"New body.", filename="a.txt", document_id=doc["document_id"]
    )
    assert (response.status_code, response.json()["code"]) == (409, "document_deleted")


NUL = "\u0000"


@pytest.mark.parametrize(
    ("fields", "filename", "code"),
    [
        ({"title": f"bad{NUL}title"}, "notes.txt", "invalid_title"),
        ({"tags": f"ok,bad{NUL}"}, "notes.txt", "invalid_tags"),
        ({"author": f"Ann{NUL}"}, "notes.txt", "invalid_author"),
        ({"path": f"docs/{NUL}notes"}, "notes.txt", "invalid_path"),
        ({}, "notes\u001b[31m.txt", "invalid_filename"),
    ],
    ids=["title", "tags", "author", "path", "filename-escape"],
)
async def test_control_characters_in_upload_fields_are_a_422_naming_the_field(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    fields: dict[str, str],
    filename: str,
    code: str,
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, b"Plain notes.", filename=filename, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    for model in (Document, DocumentVersion, IngestionJob):
        assert await count_rows(resources, model) == 0


@pytest.mark.parametrize(("query", "code"), [(f"tag=a{NUL}", "invalid_tag"), (f"q=x{NUL}", "invalid_q")])
async def test_control_characters_in_list_queries_are_a_422(
    client: httpx.AsyncClient, make_caller: MakeCaller, query: str, code: str
) -> None:
    caller = await make_caller()
    response = await client.get("/api/v1/docs", params=dict([query.split("=", 1)]), headers=caller.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


async def test_a_raw_nul_in_the_multipart_filename_is_a_422(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    """Written by hand: HTTP clients escape such a name, a hostile one does not."""
    caller = await make_caller()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="notes\x00.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nPlain notes.\r\n--b--\r\n"
    )
    response = await client.post(
        "/api/v1/docs",
        content=body,
        headers={**caller.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_filename"
    assert await count_rows(resources, Document) == 0
