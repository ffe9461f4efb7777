"""The demo's "Add a URL" control and a URL document's Refresh button, under ``AppTest`` against
the real API server, whose allow-list admits the local web server on 127.0.0.2 only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.demo.conftest import MakeDemo
from tests.demo.test_demo_app import assert_no_exception, headers, open_documents, rendered
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.demo import DemoApi, running_demo_api
from tests.support.services import RedisForTests
from tests.support.web import Route, WebServer, web_server

pytestmark = pytest.mark.e2e

PAGE = b"<!doctype html><html><body><h1>Refunds</h1><p>Refunds take 30 days.</p></body></html>"


@pytest.fixture(scope="module")
def demo_api(
    database_url: str,
    redis_server: RedisForTests,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DemoApi]:
    with running_demo_api(
        database_url,
        redis_server.url,
        fake_llm_server,
        tmp_path_factory.mktemp("demo-url-api"),
        URL_FETCH_ALLOW_CIDRS="127.0.0.2/32",
    ) as api:
        yield api


@pytest.fixture
def site() -> Iterator[WebServer]:
    with web_server("127.0.0.2") as server:
        yield server


def test_a_url_is_added_with_the_progress_bar_and_refreshed_unchanged(
    make_demo: MakeDemo, demo_api: DemoApi, site: WebServer
) -> None:
    site.routes["/refunds.html"] = Route(PAGE, headers={"ETag": '"r1"'})
    key = demo_api.new_key()
    title = f"Refunds {uuid.uuid4().hex[:6]}"
    at = open_documents(make_demo(key))
    at.text_input(key="new_url").input(site.url("/refunds.html")).run()
    at.text_input(key="new_url_title").input(title)
    at.text_input(key="new_url_tags").input("policy")
    at.button(key="fetch_new").click().run()
    assert_no_exception(at)
    assert "Ingested · 100 %" in rendered(at) and "Ready: version 1 is searchable." in rendered(at)
    listing = httpx.get(demo_api.url + "/api/v1/docs", headers=headers(key), timeout=10).json()
    (document,) = [d for d in listing["items"] if d["title"] == title]
    assert document["source_url"] == site.url("/refunds.html") and document["tags"] == ["policy"]

    at.run()
    at.button(key=f"refresh_{document['id']}").click().run()
    assert_no_exception(at)
    assert "Unchanged since the last fetch: version 1 stays current." in rendered(at)
    assert site.requests[-1].headers.get("if-none-match") == '"r1"'


def test_a_forbidden_url_is_refused_in_words(make_demo: MakeDemo, demo_api: DemoApi) -> None:
    at = open_documents(make_demo())
    at.text_input(key="new_url").input("http://169.254.169.254/latest/meta-data/").run()
    at.button(key="fetch_new").click().run()
    assert_no_exception(at)
    assert "(url_forbidden)" in rendered(at)
