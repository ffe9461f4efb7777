"""The Streamlit demo under ``AppTest`` against the real API server (tests/support/demo.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.demo import DemoApi, running_demo_api
from tests.support.services import ROOT, RedisForTests

DEMO_APP = ROOT / "demo" / "app.py"
RUN_TIMEOUT_S = 120  # one script run may upload a document and wait for its ingestion


@pytest.fixture(scope="module")
def demo_api(
    database_url: str,
    redis_server: RedisForTests,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DemoApi]:
    """One server for the module: starting it is the slow part. Each test mints its own key."""
    with running_demo_api(
        database_url, redis_server.url, fake_llm_server, tmp_path_factory.mktemp("demo-api")
    ) as api:
        yield api


MakeDemo = Callable[..., AppTest]


@pytest.fixture
def make_demo(
    demo_api: DemoApi, fake: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MakeDemo:
    """``make_demo(key=None, **query)``: the demo app, connected to the test server with ``key``
    (a fresh editor's by default), not yet run. ``DATA_DIR`` is empty, so nothing is prefilled."""
    demo_api.clear_cooldowns()
    monkeypatch.setenv("API_URL", demo_api.url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "no-data"))

    def make(key: str | None = None, **query: str) -> AppTest:
        app = AppTest.from_file(str(DEMO_APP), default_timeout=RUN_TIMEOUT_S)
        app.session_state["api_key"] = key if key is not None else demo_api.new_key()
        for name, value in query.items():
            app.query_params[name] = value
        return app

    return make
