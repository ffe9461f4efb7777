"""Text that cannot be encoded as UTF-8 (a lone surrogate, which JSON's ``\\ud800`` escape can
carry) is refused like a NUL: a 422 naming the field (a 400 in OpenAI's shape on ``/v1``), in every
text field of every request model, never a 500 from the tokenizer, PostgreSQL or the log."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from app.auth.principal import Role
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration

LONE = "a \ud800 b"
QUESTION = {"role": "user", "content": "How long is the refund window?"}


async def post(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    # json.dumps escapes the surrogate as \ud800, as any JSON client may send it
    content = json.dumps(body).encode("ascii")
    return await client.request(
        method, path, content=content, headers={**headers, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "/api/v1/chat", {"question": LONE}, "invalid_question"),
        ("POST", "/api/v1/chat", {"question": LONE, "stream": True}, "invalid_question"),
        ("POST", "/api/v1/chat", {"question": "q", "model": LONE}, "invalid_model"),
        ("POST", "/api/v1/chat", {"question": "q", "filters": {"tags": [LONE]}}, "invalid_filters"),
        ("POST", "/api/v1/feedback", {"trace_id": "ab" * 16, "score": 1, "comment": LONE}, "invalid_comment"),
        ("POST", "/api/v1/keys", {"role": "reader", "name": LONE}, "invalid_name"),
        ("PATCH", f"/api/v1/docs/{uuid.UUID(int=1)}", {"title": LONE}, "invalid_title"),
        ("PATCH", f"/api/v1/docs/{uuid.UUID(int=1)}", {"tags": ["ok", LONE]}, "invalid_tags"),
    ],
    ids=["question", "question-sse", "model", "tag", "feedback", "key-name", "doc-title", "doc-tag"],
)
async def test_a_lone_surrogate_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    method: str,
    path: str,
    body: dict[str, Any],
    code: str,
) -> None:
    admin = await make_caller(role=Role.admin)
    response = await post(client, method, path, body, admin.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert response.json()["trace_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": LONE}]},
        {"messages": [{"role": "user", "content": LONE}, {"role": "assistant", "content": "x"}, QUESTION]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": LONE}, QUESTION]},
        {"messages": [{"role": "system", "content": LONE}, QUESTION]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
        {"messages": [QUESTION], "user": LONE},
        {"messages": [QUESTION], "metadata": {"note": LONE}},
        {"messages": [QUESTION], "metadata": {LONE: "value"}},
        {"messages": [QUESTION], "model": LONE},
    ],
    ids=[
        "question",
        "history-user",
        "history-assistant",
        "system",
        "content-part",
        "user",
        "metadata-value",
        "metadata-key",
        "model",
    ],
)
async def test_a_lone_surrogate_is_openais_400_on_v1(
    client: httpx.AsyncClient, make_caller: MakeCaller, body: dict[str, Any]
) -> None:
    reader = await make_caller(role=Role.reader)
    response = await post(client, "POST", "/v1/chat/completions", {"model": "rag", **body}, reader.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    param = next(iter(body.keys() - {"messages"}), "messages")
    assert error["code"] == f"invalid_{param}"


async def test_a_lone_surrogate_in_an_mcp_tool_argument_is_a_parse_error_not_a_500(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    """The stateless JSON transport parses JSON-RPC strictly (pydantic-core refuses the escape
    itself): a 400 parse error. A transport that parses with ``json.loads`` reaches the tool's
    argument model, whose ``PlainText`` makes it a tool error naming UTF-8. Never a 500."""
    reader = await make_caller(role=Role.reader)
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "search_documents", "arguments": {"query": LONE}},
    }
    headers = {**reader.headers, "Accept": "application/json, text/event-stream"}
    response = await post(client, "POST", "/mcp", call, headers)
    if response.status_code == 400:
        assert response.json()["error"]["code"] == -32700  # JSON-RPC parse error
    else:
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["isError"] is True
        assert "UTF-8" in " ".join(block["text"] for block in result["content"])
