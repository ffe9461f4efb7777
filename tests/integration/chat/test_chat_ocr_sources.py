"""A scanned PDF and a photo of a page, uploaded over the API and recognised by the worker, answer
questions with citations whose sources say the text was recognised (``ocr: true``)."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.library import Library, ask
from tests.support.scans import ScanStyle, image_bytes, render_page, scanned_pdf

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

SCANNED = "Quarterly audit. The harbour crane was inspected on 14 March and passed every load test."
PHOTO = "Canteen notice. Soup of the day is lentil with cumin, served from noon until two."


async def test_a_scanned_pdf_and_a_photo_are_answered_with_citations_marked_ocr(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    scan = render_page(SCANNED, ScanStyle(dpi=200, rotation=0.7, noise=0.03), full_page=False)
    await library.add(scanned_pdf([scan], 200), filename="audit.pdf", title="Audit scan")
    photo = render_page(
        PHOTO, ScanStyle(dpi=200, rotation=-1.2, noise=0.02, paper=215, blur=0.8), full_page=False
    )
    await library.add(image_bytes(photo, "JPEG", quality=80), filename="notice.jpg", title="Canteen photo")

    fake.configure("openai", text="The crane passed every load test [1].")
    body = (await ask(client, editor, "When was the harbour crane inspected?")).json()
    top = body["sources"][0]
    assert top["title"] == "Audit scan" and top["page"] == 1
    assert top["cited"] is True and top["ocr"] is True
    assert "crane" in top["snippet"]

    body = (await ask(client, editor, "What is the soup of the day in the canteen?")).json()
    top = body["sources"][0]
    assert top["title"] == "Canteen photo" and top["ocr"] is True
    assert "lentil" in top["snippet"].lower()
