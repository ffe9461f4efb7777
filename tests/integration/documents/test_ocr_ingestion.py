"""OCR in the real worker: an image's job goes through the `ocr` stage page by page, its chunks are
marked as recognised, and an image whose pixels cannot be decoded fails the job with a message a
person can read (the worker goes on)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.documents import chunk_rows, run_jobs, upload
from tests.support.scans import ScanStyle, damaged_png, image_bytes, render_page

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]


async def _watch_job(client: httpx.AsyncClient, url: str, headers: dict[str, str], seen: list[tuple]) -> None:
    while True:
        response = await client.get(url, headers=headers)
        if response.status_code == 200:  # a 429 of the read budget just skips a look
            job = response.json()
            seen.append((job["stage"], job["stage_page"], job["stage_pages"]))
            if job["status"] in {"succeeded", "failed"}:
                return
        await asyncio.sleep(0.5)


async def test_an_image_is_recognised_in_an_ocr_stage_and_its_chunks_are_marked_ocr(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    page = render_page(
        "The lighthouse on Cape Verlaine was painted blue in 1987.", ScanStyle(dpi=200), full_page=False
    )
    response = await upload(client, caller.headers, image_bytes(page, "PNG"), filename="note.png")
    assert response.status_code == 202, response.text
    status_url = response.json()["status_url"]
    seen: list[tuple] = []
    watcher = asyncio.create_task(_watch_job(client, status_url, caller.headers, seen))
    # Every step written (a recognition this short would else end within one progress interval).
    await run_jobs(resources, settings=resources.settings.model_copy(update={"job_progress_interval_s": 0}))
    await asyncio.wait_for(watcher, timeout=30)

    job = (await client.get(status_url, headers=caller.headers)).json()
    assert job["status"] == "succeeded", job
    assert ("ocr", 0, 1) in seen  # the stage as a client polling the job sees it: page 0 of 1
    assert job["stage_page"] is None  # the later stages do not go page by page
    rows = await chunk_rows(resources, response.json()["document_id"])
    assert rows and all(row.ocr for row in rows)
    assert "Cape Verlaine" in " ".join(row.text for row in rows)
    detail = (
        await client.get(f"/api/v1/docs/{response.json()['document_id']}", headers=caller.headers)
    ).json()
    assert detail["current"]["mime_type"] == "image/png"


async def test_an_image_whose_pixels_cannot_be_decoded_fails_its_job_with_a_readable_error(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, damaged_png(), filename="scan.png")
    assert response.status_code == 202, response.text  # its header is sound
    await run_jobs(resources)
    job = (await client.get(response.json()["status_url"], headers=caller.headers)).json()
    assert job["status"] == "failed" and job["error_code"] == "corrupt_document"
    assert job["error"] == "page 1 cannot be read for OCR: its image data is damaged"
    assert await chunk_rows(resources, response.json()["document_id"]) == []
