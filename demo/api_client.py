"""The demo's HTTP client for the RAG chat API: typed errors from its problem+json answers, and
the chat's Server-Sent Events as ``(event, data)`` pairs.

Nothing here touches Streamlit, so tests and scripts can use it on their own."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
CHAT_TIMEOUT = httpx.Timeout(180.0, connect=5.0)  # an answer may take the whole provider budget


@dataclass
class ApiError(Exception):
    """A refused request: the problem's ``code`` and ``detail``, and for a 429 the seconds in
    ``Retry-After``. ``status`` 0 means the API could not be reached at all."""

    status: int
    code: str
    detail: str
    retry_after_s: int | None = None

    def __str__(self) -> str:
        return f"{self.detail} ({self.code})" if self.status else self.detail

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        detail = body.get("detail")
        if not isinstance(detail, str):  # FastAPI's own validation errors carry a list
            detail = json.dumps(detail) if detail else response.reason_phrase
        return cls(
            status=response.status_code,
            code=str(body.get("code") or f"http_{response.status_code}"),
            detail=detail,
            retry_after_s=retry_after(response.headers),
        )


def retry_after(headers: Mapping[str, str]) -> int | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(1, math.ceil(float(value)))
    except ValueError:
        return None


class Api:
    """One API base URL and API key; every call raises ``ApiError`` when refused."""

    def __init__(self, base_url: str, key: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"X-API-Key": key}, timeout=TIMEOUT, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, "unreachable", f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        response = self.request("POST", path, **kwargs)
        return response.json() if response.content else None

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs).json()

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs).json()

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    @contextmanager
    def chat_stream(
        self, body: dict[str, Any], headers: Mapping[str, str]
    ) -> Iterator[Iterator[tuple[str, dict[str, Any]]]]:
        """``POST /api/v1/chat`` with ``stream: true``: yields an iterator of SSE events. A refusal
        before the stream starts (401, 422, 429, …) raises ``ApiError``."""
        try:
            with self._http.stream(
                "POST",
                "/api/v1/chat",
                json={**body, "stream": True},
                headers=dict(headers),
                timeout=CHAT_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.of(response)
                yield sse_events(response.iter_lines())
        except httpx.HTTPError as exc:
            raise ApiError(0, "unreachable", f"the answer stream broke: {exc}") from exc


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` per SSE message; comments (``: keep-alive``) are skipped."""
    event, data = "message", ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            yield event, json.loads(data)
            event, data = "message", ""
    if data:
        yield event, json.loads(data)
