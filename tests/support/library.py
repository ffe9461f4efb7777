"""A tenant's document library driven as a user drives it (upload, replace, delete over HTTP, the
ingestion jobs run to completion in process), and ``ask``, one chat question."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.resources import Resources
from tests.support.callers import Caller
from tests.support.documents import run_jobs, upload


class Library:
    """Uploads documents as a user would and runs the ingestion jobs to completion."""

    def __init__(self, client: httpx.AsyncClient, resources: Resources, caller: Caller) -> None:
        self.client = client
        self.resources = resources
        self.caller = caller

    async def add(
        self, text: str | bytes, *, filename: str = "doc.md", caller: Caller | None = None, **fields: Any
    ) -> str:
        headers = (caller or self.caller).headers
        data = text.encode() if isinstance(text, str) else text
        title = fields.pop("title", filename)
        response = await upload(self.client, headers, data, filename=filename, title=title, **fields)
        assert response.status_code == 202, response.text
        await run_jobs(self.resources)
        job = await self.client.get(response.json()["status_url"], headers=headers)
        assert job.json()["status"] == "succeeded", job.text
        return str(response.json()["document_id"])

    async def replace(self, document_id: str, text: str | bytes, *, filename: str = "doc.md") -> None:
        data = text.encode() if isinstance(text, str) else text
        response = await upload(
            self.client, self.caller.headers, data, filename=filename, document_id=document_id
        )
        assert response.status_code == 202, response.text
        await run_jobs(self.resources)

    async def delete(self, document_id: str) -> None:
        response = await self.client.delete(f"/api/v1/docs/{document_id}", headers=self.caller.headers)
        assert response.status_code in (200, 204), response.text


async def ask(client: httpx.AsyncClient, caller: Caller, question: str, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/chat", json={"question": question, **body}, headers=caller.headers)


def new_session() -> str:
    return str(uuid.uuid4())
