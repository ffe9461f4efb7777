"""The MCP SDK's own client against an app in process (streamable HTTP over an ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from fastapi import FastAPI
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

BASE = "http://testserver"


@asynccontextmanager
async def mcp_session(app: FastAPI, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """The SDK's client over streamable HTTP, its httpx2 client talking to the app in process."""
    transport = httpx2.ASGITransport(app=app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE, headers=headers, timeout=30) as client,
        streamable_http_client(f"{BASE}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content
