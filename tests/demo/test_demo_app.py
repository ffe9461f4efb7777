"""The Streamlit demo, one feature a test, under Streamlit's ``AppTest`` against the real API
server (its chat answered by the wire-level fake provider through the real SDKs).

What a person sees in a browser is ``tests/e2e/test_demo_browser.py``; here each feature of the
issue's list is driven through the app's widgets and checked on what it renders and on what the
API received."""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from tests.demo.conftest import DEMO_APP, RUN_TIMEOUT_S, MakeDemo
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.demo import CHAT_PER_MINUTE, KEY_TOKENS_PER_DAY, MAX_UPLOAD_MB, DemoApi
from tests.support.documents import make_pdf
from tests.support.server import free_port, upload_and_wait

pytestmark = pytest.mark.e2e

CHAT, DOCUMENTS = ":material/chat: Chat", ":material/description: Documents"


# --- helpers -----------------------------------------------------------------------------------


def rendered(at: AppTest) -> str:
    """Every text the page shows (markdown, captions, alerts, labels), one per line."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "title", "subheader"):
        parts += [str(element.value) for element in at.get(kind)]
    parts += [str(expander.label) for expander in at.expander]
    parts += [str(bar.proto.text) for bar in at.get("progress")]
    return "\n".join(parts)


def sidebar_text(at: AppTest) -> str:
    parts = [str(bar.proto.text) for bar in at.sidebar.get("progress")]
    for kind in ("markdown", "caption", "success", "warning", "error"):
        parts += [str(element.value) for element in at.sidebar.get(kind)]
    return "\n".join(parts)


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_documents(at: AppTest) -> AppTest:
    at.run()
    at.radio[0].set_value(DOCUMENTS).run()
    assert_no_exception(at)
    return at


def ask(at: AppTest, question: str) -> AppTest:
    if not at.chat_input:
        at.run()
    at.chat_input[0].set_value(question).run()
    assert_no_exception(at)
    return at


def assistant_messages(at: AppTest) -> list[Any]:
    return [message for message in at.chat_message if message.name == "assistant"]


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def add_document(demo_api: DemoApi, key: str, text: str, **fields: str) -> dict[str, Any]:
    return upload_and_wait(demo_api.url, headers(key), text, filename=f"{uuid.uuid4().hex}.md", fields=fields)


def budget(demo_api: DemoApi, key: str, name: str) -> dict[str, Any]:
    status = httpx.get(demo_api.url + "/api/v1/rate-limit/status", headers=headers(key), timeout=10).json()
    return next(b for b in status["budgets"] if b["budget"] == name)


def limits(demo_api: DemoApi, key: str) -> dict[str, Any]:
    response = httpx.get(demo_api.url + "/api/v1/limits", headers=headers(key), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def unique_fact() -> tuple[str, str, str]:
    """A document text, a question only it answers and the word that answer needs."""
    word = "zx" + uuid.uuid4().hex[:8]
    return (
        f"# Vault\n\nThe vault code word is {word}. It opens the archive.",
        f"What is the vault code word {word}?",
        word,
    )


# --- connection --------------------------------------------------------------------------------


def test_connection_shows_who_you_are(make_demo: MakeDemo, demo_api: DemoApi) -> None:
    key = demo_api.new_key("reader")
    at = make_demo(key)
    at.run()
    assert_no_exception(at)
    me = httpx.get(demo_api.url + "/api/v1/me", headers=headers(key), timeout=10).json()
    (connected,) = at.sidebar.success
    assert me["principal_id"] in connected.value and "reader" in connected.value
    assert at.chat_input, "a connected page offers the chat"


def test_a_wrong_key_or_an_unreachable_api_is_a_clear_message(
    make_demo: MakeDemo, demo_api: DemoApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = make_demo("rk_000000000000_not-a-real-key")
    at.run()
    assert_no_exception(at)
    assert "The API refused this key" in at.sidebar.error[0].value
    assert "dev-api-key" in at.info[0].value
    assert not at.chat_input

    monkeypatch.setenv("API_URL", f"http://127.0.0.1:{free_port()}")  # where the demo runs
    at.run()
    assert_no_exception(at)
    assert "Cannot reach the API" in at.sidebar.error[0].value
    assert "make run" in at.info[0].value


def test_a_visitor_cannot_send_the_key_elsewhere(make_demo: MakeDemo, demo_api: DemoApi) -> None:
    """The API URL is the server's API_URL: no field for it, and session state cannot move it."""
    at = make_demo()
    at.session_state["api_url"] = f"http://127.0.0.1:{free_port()}"  # what the old URL field held
    at.run()
    assert_no_exception(at)
    assert [field.label for field in at.text_input if "URL" in field.label] == []
    assert demo_api.url in sidebar_text(at)
    assert at.sidebar.success, "still connected to API_URL"


@pytest.fixture
def listening_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set Streamlit's ``server.address`` (what `make demo` passes) for the test."""
    before = st_config.get_option("server.address")

    def listen(address: str) -> None:
        st_config.set_option("server.address", address)

    yield listen
    st_config.set_option("server.address", before)


def dev_key_demo(demo_api: DemoApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[AppTest, str]:
    key = demo_api.new_key()
    (tmp_path / "dev-api-key").write_text(key + "\n")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("API_URL", demo_api.url)
    return AppTest.from_file(str(DEMO_APP), default_timeout=RUN_TIMEOUT_S), key


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1"])
def test_on_loopback_the_dev_key_is_used_and_never_shown(
    demo_api: DemoApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listening_on: Callable[[str], None],
    address: str,
) -> None:
    listening_on(address)
    at, key = dev_key_demo(demo_api, tmp_path, monkeypatch)
    at.run()
    assert_no_exception(at)
    assert at.sidebar.success, "connected with the dev key"
    assert at.text_input(key="api_key").value == "", "the key field is not prefilled"
    shown = [str(element.proto) for element in at.sidebar] + [str(element.proto) for element in at.main]
    assert not [proto for proto in shown if key in proto], "the key is in what the browser gets"
    assert key not in str(at.session_state.to_dict())


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.0.2.7"])
def test_on_other_addresses_the_dev_key_is_not_used(
    demo_api: DemoApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listening_on: Callable[[str], None],
    address: str,
) -> None:
    listening_on(address)
    at, _key = dev_key_demo(demo_api, tmp_path, monkeypatch)
    at.run()
    assert_no_exception(at)
    assert not at.sidebar.success and not at.chat_input, "a visitor got the dev key's access"
    assert at.sidebar.error, "asked for a key of their own"


def test_make_demo_listens_on_loopback_by_default() -> None:
    config = tomllib.loads((DEMO_APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    makefile = (DEMO_APP.parent.parent / "Makefile").read_text()
    assert "DEMO_HOST ?= 127.0.0.1" in makefile and "--server.address $(DEMO_HOST)" in makefile


# --- upload ------------------------------------------------------------------------------------


def test_the_uploader_takes_the_apis_formats_and_limit_and_refuses_bigger_files_before_sending(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key()
    at = open_documents(make_demo(key))
    uploader = at.get("file_uploader")[0]
    api_limits = limits(demo_api, key)
    assert uploader.proto.max_upload_size_mb == api_limits["max_upload_mb"] == MAX_UPLOAD_MB
    assert sorted(uploader.allowed_type) == sorted("." + ext for ext in api_limits["upload_extensions"])
    assert {".pdf", ".docx", ".md", ".txt", ".html"} <= set(uploader.allowed_type)

    uploads_before = budget(demo_api, key, "uploads")
    big = b"%PDF-1.4\n" + b"0" * (MAX_UPLOAD_MB * 1024 * 1024 + 1)
    uploader.upload("big.pdf", big, "application/pdf")
    at.run()
    at.button(key="process_new").click().run()
    assert_no_exception(at)
    assert f"this server accepts up to {MAX_UPLOAD_MB} MB (MAX_UPLOAD_MB). Nothing was sent." in rendered(at)
    assert budget(demo_api, key, "uploads")["remaining"] == uploads_before["remaining"]  # nothing sent


def test_a_pdf_is_processed_with_title_and_tags_and_its_progress_reaches_100(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key()
    title = f"Handbook {uuid.uuid4().hex[:6]}"
    at = open_documents(make_demo(key))
    at.get("file_uploader")[0].upload(
        "handbook.pdf", make_pdf(["Refunds take 30 days.", "Returns."]), "application/pdf"
    )
    at.run()
    at.text_input(key="new_title").input(title)
    at.text_input(key="new_tags").input("policy, hr")
    at.button(key="process_new").click().run()
    assert_no_exception(at)
    assert "Ingested · 100 %" in rendered(at)
    assert [bar.value for bar in at.main.get("progress")] == [100]
    assert "Ready: version 1 is searchable." in rendered(at)
    # the new document in the panel: its title, version, status and tags
    at.run()
    row = next(line for line in rendered(at).splitlines() if "`policy`" in line and "`hr`" in line)
    assert ":green-badge[succeeded]" in row and "version 1" in row
    assert f"**{title}**" in rendered(at)


# --- documents panel ---------------------------------------------------------------------------


def test_the_documents_panel_shows_versions_takes_a_new_one_and_deletes_and_restores(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key()
    title = f"Runbook {uuid.uuid4().hex[:6]}"
    document_id = add_document(demo_api, key, "# Runbook\n\nRestart the node.", title=title, tags="ops")[
        "document_id"
    ]
    at = open_documents(make_demo(key))
    at.toggle(key=f"versions_{document_id}").set_value(True).run()
    (table,) = at.dataframe
    assert list(table.value["version"]) == [1]

    at.get("file_uploader")[1].upload(
        "runbook.md", b"# Runbook\n\nRestart the node, then the pod.", "text/markdown"
    )
    at.run()
    at.button(key=f"process_{document_id}").click().run()
    assert_no_exception(at)
    assert "Ready: version 2 is searchable." in rendered(at)
    at.run()
    assert sorted(at.dataframe[0].value["version"]) == [1, 2]

    at.button(key=f"delete_{document_id}").click().run()
    assert_no_exception(at)
    assert f"**{title}**" not in rendered(at)
    at.toggle(key="show_deleted").set_value(True).run()
    assert f"**{title}**" in rendered(at) and ":gray-badge[deleted]" in rendered(at)
    at.button(key=f"restore_{document_id}").click().run()
    assert_no_exception(at)
    listed = httpx.get(demo_api.url + f"/api/v1/docs/{document_id}", headers=headers(key), timeout=10)
    assert listed.status_code == 200 and listed.json()["deleted_at"] is None


def test_the_documents_panel_shows_and_edits_a_documents_groups(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key("admin")  # an admin keeps seeing the document whatever its groups
    title = f"Salaries {uuid.uuid4().hex[:6]}"
    document_id = add_document(demo_api, key, "# Salaries\n\nBands.", title=title)["document_id"]
    at = open_documents(make_demo(key))
    assert "Visible to: everyone in the tenant" in rendered(at)

    at.text_input(key=f"groups_{document_id}").input("hr, finance")
    at.button(key=f"save_groups_{document_id}").click().run()
    assert_no_exception(at)
    shown = httpx.get(demo_api.url + f"/api/v1/docs/{document_id}", headers=headers(key), timeout=10)
    assert shown.json()["access"] == {"groups": ["finance", "hr"], "principals": []}
    at.run()
    assert "Visible to: group finance, group hr (and admins)" in rendered(at)
    reader = httpx.get(
        demo_api.url + f"/api/v1/docs/{document_id}", headers=headers(demo_api.new_key("reader")), timeout=10
    )
    assert reader.status_code == 404

    at.text_input(key=f"groups_{document_id}").input("not a group!")
    at.button(key=f"save_groups_{document_id}").click().run()
    assert "invalid_access" in rendered(at) or "does not match" in rendered(at)


# --- chat --------------------------------------------------------------------------------------


def test_an_answer_streams_in_with_its_sources_and_a_caption(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    text, question, word = unique_fact()
    title = f"Vault guide {word}"
    add_document(demo_api, key, text, title=title, tags="security")
    fake.configure("openai", text=f"The code word is {word} [1].")
    at = ask(make_demo(key), question)

    user, assistant = at.chat_message
    assert (user.name, user.markdown[0].value) == ("user", question)
    assert assistant.markdown[0].value == f"The code word is {word} [1]."
    caption = assistant.caption[0].value
    assert caption.startswith("openai · ") and " ms · cache miss" in caption
    (sources,) = assistant.expander
    assert sources.label.startswith("Sources (") and "1 cited)" in sources.label
    first = sources.markdown[0].value
    assert f"**[1] {title}**" in first
    assert "page 1 · version 1 · tags: security · relevance " in first
    assert re.search(r"· relevance \d{1,3}% ·", first)  # a percentage a person reads, not a fused score
    assert first.endswith(":green[:material/check_circle: **cited**]")
    passage = sources.caption[0].value
    assert word in passage  # the snippet, highlighted after where it sits in its page
    span = re.match(r"characters (\d+) to (\d+) of page 1: :orange-background\[", passage)
    assert span is not None and word in text[int(span[1]) : int(span[2])]
    assert fake.stats()["openai"]["stream_requests"] == 1  # the answer was streamed


def test_the_conversation_survives_a_reload_and_new_conversation_resets_it(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    text, question, word = unique_fact()
    add_document(demo_api, key, text)
    fake.configure("openai", text=f"It is {word} [1].")
    at = ask(make_demo(key), question)
    session_id = at.query_params["session"]
    assert uuid.UUID(session_id)

    reloaded = make_demo(key, session=session_id)  # a new browser session on the same URL
    reloaded.run()
    assert_no_exception(reloaded)
    assert [m.markdown[0].value for m in reloaded.chat_message] == [question, f"It is {word} [1]."]
    assert reloaded.chat_message[1].expander[0].label.endswith(", 1 cited)")  # marked as it was live

    reloaded.button(key="new_conversation").click().run()
    assert_no_exception(reloaded)
    assert not reloaded.chat_message
    assert reloaded.query_params["session"] != session_id
    gone = httpx.get(
        demo_api.url + f"/api/v1/sessions/{session_id}/messages", headers=headers(key), timeout=10
    )
    assert gone.status_code == 404


def test_a_stream_that_breaks_shows_its_error_in_place(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    text, question, _ = unique_fact()
    add_document(demo_api, key, text)
    fake.configure("openai", mode="cut", text="one two three four five six", cut_after_tokens=2)
    at = ask(make_demo(key), question)
    (assistant,) = assistant_messages(at)
    assert assistant.markdown[0].value.startswith("one")
    assert assistant.error[0].value.startswith("The answer stopped: ")


def test_the_model_list_marks_what_the_server_cannot_use_and_sends_the_choice(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    text, question, word = unique_fact()
    add_document(demo_api, key, text)
    at = make_demo(key)
    at.run()
    assert at.selectbox(key="model").options == [
        "Auto (fallback chain)",
        "Gemini · not offered by this server",
        "Llama 3 (Groq) · unavailable",
        "ChatGPT (OpenAI)",
        "Local (GPT4All) · not offered by this server",
    ]
    at.selectbox(key="model").set_value("Llama 3 (Groq)").run()
    assert "Llama 3 (Groq) is unavailable here (GROQ_API_KEY is not set)" in at.sidebar.warning[0].value
    ask(at, question)
    assert "unknown_model" in assistant_messages(at)[-1].error[0].value

    fake.configure("openai", text=f"Answer {word} [1].")
    at.selectbox(key="model").set_value("ChatGPT (OpenAI)").run()
    ask(at, question)
    assert assistant_messages(at)[-1].caption[0].value.startswith("openai · ")


def test_the_sliders_take_their_bounds_from_the_api_and_are_sent(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    text, question, _ = unique_fact()
    add_document(demo_api, key, text)
    at = make_demo(key)
    at.run()
    bounds = limits(demo_api, key)["chat"]
    temperature, max_tokens = at.slider(key="temperature"), at.slider(key="max_tokens")
    assert (temperature.min, temperature.max) == (
        bounds["temperature"]["minimum"],
        bounds["temperature"]["maximum"],
    )
    assert (max_tokens.min, max_tokens.max) == (
        bounds["max_tokens"]["minimum"],
        bounds["max_tokens"]["maximum"],
    )
    assert max_tokens.value == bounds["max_tokens"]["default"]
    temperature.set_value(0.7)
    max_tokens.set_value(300)
    ask(at, question)
    sent = fake.stats()["openai"]["last_request"]
    assert (sent["temperature"], sent["max_tokens"]) == (0.7, 300)


# --- rate limits -------------------------------------------------------------------------------


def test_the_rate_limit_sidebar_warns_under_20_percent_and_a_429_counts_down(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key()
    at = make_demo(key)
    at.run()
    assert f"Chat requests: {CHAT_PER_MINUTE}/{CHAT_PER_MINUTE} left · resets in " in sidebar_text(at)
    assert not at.sidebar.warning

    leave = 3  # under 20 % of 20
    for _ in range(CHAT_PER_MINUTE - leave):
        asked = httpx.post(
            demo_api.url + "/api/v1/chat", json={"question": "anything?"}, headers=headers(key), timeout=30
        )
        assert asked.status_code == 200, asked.text
    at.run()
    assert f"Chat requests: {leave}/{CHAT_PER_MINUTE} left · resets in " in sidebar_text(at)
    assert f"Only {leave} of {CHAT_PER_MINUTE} chat requests left" in at.sidebar.warning[0].value

    for _ in range(leave):
        httpx.post(
            demo_api.url + "/api/v1/chat", json={"question": "more?"}, headers=headers(key), timeout=30
        )
    ask(at, "One more?")
    assert "(rate_limited)" in assistant_messages(at)[-1].error[0].value
    countdown = next(w.value for w in at.warning if "you can send again in" in w.value)
    seconds = int(countdown.split("**")[1].split(" ")[0])
    assert 1 <= seconds <= 60
    assert at.chat_input[0].proto.disabled, "no sending until the budget is back"


def test_the_sidebar_shows_the_callers_token_budget_and_what_an_answer_used(
    make_demo: MakeDemo, demo_api: DemoApi
) -> None:
    key = demo_api.new_key()
    at = make_demo(key)
    at.run()
    full = f"{KEY_TOKENS_PER_DAY:,} tokens"
    assert f"This key, tokens today: {full} of {full} left · resets " in sidebar_text(at)
    text, question, _ = unique_fact()
    add_document(demo_api, key, text)
    asked = httpx.post(
        demo_api.url + "/api/v1/chat", json={"question": question}, headers=headers(key), timeout=60
    )
    assert asked.status_code == 200 and asked.json()["provider"] == "openai", asked.text
    at.run()
    usage = httpx.get(demo_api.url + "/api/v1/usage", headers=headers(key), timeout=10).json()
    (budget,) = usage["budgets"]
    assert budget["spent"] > 0 and budget["remaining"] < KEY_TOKENS_PER_DAY
    assert f"This key, tokens today: {budget['remaining']:,} tokens of {full} left" in sidebar_text(at)


# --- bring your own key ------------------------------------------------------------------------


def test_a_pasted_provider_key_lives_in_the_session_and_answers_that_request(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    own = f"gsk-demo-own-{uuid.uuid4().hex}"
    text, question, word = unique_fact()
    add_document(demo_api, key, text)
    fake.configure("groq", text=f"Groq says {word} [1].")
    at = make_demo(key)
    at.run()
    at.text_input(key="own_key_groq").input(own).run()
    assert "Llama 3 (Groq) · your key" in at.selectbox(key="model").options
    at.selectbox(key="model").set_value("Llama 3 (Groq)").run()
    ask(at, question)

    (assistant,) = assistant_messages(at)
    assert assistant.caption[0].value.startswith("groq · ") and assistant.caption[0].value.endswith(
        "your key"
    )
    assert fake.stats()["groq"]["authorization"] == f"Bearer {own}"
    assert own not in str(dict(at.query_params))
    assert own not in demo_api.server.log()

    at.sidebar.button[-1].click().run()  # Forget my keys
    assert at.text_input(key="own_key_groq").value == ""
    assert "Llama 3 (Groq) · unavailable" in at.selectbox(key="model").options


def test_a_refused_provider_key_is_reported_in_place(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    own = f"sk-demo-refused-{uuid.uuid4().hex}"
    text, question, _ = unique_fact()
    add_document(demo_api, key, text)
    fake.configure("openai", reject_keys=[own])
    at = make_demo(key)
    at.run()
    at.text_input(key="own_key_openai").input(own).run()
    ask(at, question)
    error = assistant_messages(at)[-1].error[0].value
    assert "provider_key_rejected" in error and "X-Provider-Key-Openai" in error
    assert own not in rendered(at) and own not in demo_api.server.log()


# --- safe rendering ----------------------------------------------------------------------------


def test_untrusted_text_renders_without_html_or_remote_images(
    make_demo: MakeDemo, demo_api: DemoApi, fake: FakeLLMServer
) -> None:
    key = demo_api.new_key()
    _, question, word = unique_fact()
    beacon = f"http://127.0.0.1:{free_port()}/beacon?q=secret"
    planted = f"# Vault\n\nThe vault code word is {word}. ![x]({beacon}) <img src='{beacon}'>"
    add_document(demo_api, key, planted, title=f"<img src='{beacon}'> Vault")
    fake.configure("openai", text=f"It is {word} ![leak]({beacon}) <script>alert(1)</script> [1].")
    at = ask(make_demo(key), question)
    page = rendered(at)
    assert word in page
    assert "<img" not in page and "<script" not in page
    assert f"]({beacon}" not in page  # no image or link markdown pointing anywhere
    assert "[image: leak]" in page
