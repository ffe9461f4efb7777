"""OpenAI's chat-completions wire over aiohttp: what the OpenAI and Groq adapters send and
read. The SDKs cost more CPU per call than the HTTP exchange itself (request transforms over
every message, a pydantic object per stream chunk), on the event loop of every uncached answer;
this module sends the same JSON body and reads the same server-sent events
(``make benchmark-router`` prints the per-call cost of both). aiohttp rather than httpx: a
streamed answer from the fake costs about a third of httpx's client CPU (0.33 against 0.9 to 1.0 ms
per call), the largest single part of an uncached answer's provider step.

One connection pool per endpoint: the operator's key and callers' own keys share it (the key
travels as a header of each request, never in the pool). Nothing here retries: the policy does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from app.llm.classify import body_message, from_status
from app.llm.errors import MalformedResponse, ProviderError, ServerError

# The openai SDK's own pool size; the policy's concurrency bound (*_MAX_CONCURRENCY) is the one
# that holds.
MAX_CONNECTIONS = 1000
ERROR_TEXT_CHARS = 500  # of a non-JSON error body, quoted in the error message
DONE = b"[DONE]"


def open_pool(connect_timeout_s: float, total_timeout_s: float) -> aiohttp.ClientSession:
    """A connection pool for one endpoint, on the running event loop; its timeouts are the
    backstop behind the policy's, as httpx's were: ``connect_timeout_s`` to connect, and
    ``total_timeout_s`` for any one read (a stream may last longer as long as bytes come). Like
    httpx it takes an egress proxy from ``HTTPS_PROXY`` / ``HTTP_PROXY`` (``NO_PROXY`` exempts)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=total_timeout_s),
        trust_env=True,
    )


def status_error(status: int, content: bytes, headers: Mapping[str, str]) -> ProviderError:
    """The typed error for an HTTP error answer, from the provider's own message when the body is
    OpenAI's ``{"error": {"message", "code"}}``."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = None
    text = content.decode("utf-8", "replace")[:ERROR_TEXT_CHARS]
    fallback = f"HTTP {status}: {text}".strip()
    return from_status(status, body_message(body, fallback), headers)


def event_json(data: bytes) -> Any:
    """One event's JSON; an event that is an error object (a provider failing mid-stream, as the
    SDKs raise it) is a ``ServerError``."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise MalformedResponse(f"a stream event is not JSON: {data[:80]!r}") from exc
    if isinstance(value, dict) and value.get("error"):
        raise ServerError(body_message(value, "the provider failed mid-stream"))
    return value


def _field_value(line: bytes) -> bytes | None:
    """The value of a ``data:`` line, else None (comments, ``event:``, ``id:``, ``retry:``)."""
    if not line.startswith(b"data:"):
        return None
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """The JSON of each server-sent event until ``data: [DONE]`` or the end of the body. An event
    the body ends inside (no blank line after it) is dropped, as the SSE spec and the SDKs do."""
    buffer = b""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:  # CRLF or CR line ends; a CR that may be half of a CRLF waits
            held = buffer.endswith(b"\r")
            buffer = buffer[:-1] if held else buffer
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line:
                value = _field_value(line)
                if value is not None:
                    data.append(value)
                continue
            if not data:
                continue
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            data = []
            if payload == DONE:
                return
            yield event_json(payload)


@dataclass(frozen=True)
class ChatWire:
    """``POST …/chat/completions`` on ``pool`` with one key."""

    pool: aiohttp.ClientSession
    url: str
    headers: Mapping[str, str]

    @classmethod
    def of(cls, pool: aiohttp.ClientSession, url: str, api_key: str) -> ChatWire:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        return cls(pool, url, headers)

    def _post(self, body: Mapping[str, Any]) -> Any:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        # No redirects, as with httpx: a key is never sent on to another host.
        return self.pool.post(self.url, data=content, headers=self.headers, allow_redirects=False)

    async def complete(self, body: Mapping[str, Any]) -> Any:
        """The JSON answer to a non-streamed request."""
        async with self._post(body) as response:
            content = await response.read()
            if response.status >= 400:
                raise status_error(response.status, content, response.headers)
            try:
                return json.loads(content)
            except ValueError as exc:
                kind = response.headers.get("content-type", "no content type")
                raise MalformedResponse(f"the answer is not JSON ({kind}): {exc}") from exc

    async def events(self, body: Mapping[str, Any]) -> AsyncGenerator[Any, None]:
        """The events of a streamed request. An error status raises before the first event; the
        body after ``[DONE]`` is read to its end, so the connection goes back to the pool (one
        left unread is closed instead)."""
        async with self._post(body) as response:
            if response.status >= 400:
                raise status_error(response.status, await response.read(), response.headers)
            chunks = response.content.iter_any()
            async for event in sse_events(chunks):
                yield event
            async for _ in chunks:
                pass
