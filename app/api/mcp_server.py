"""The MCP server at ``/mcp``: the service's documents and answers as tools for MCP clients.

Streamable HTTP in stateless mode with JSON responses (no server-side MCP sessions, so any
worker can answer any request). ``AuthenticateFirstMiddleware`` authenticates every request to
``/mcp`` from its headers (``X-API-Key`` or ``Authorization: Bearer``) before the body is read and
leaves the principal in the request's scope state; each tool reads it from there, so every query
is scoped to ``principal.tenant_id`` exactly as the REST API's are.

Every tool is charged to the chat budgets (the tenant's and the principal's, as ``/api/v1/chat``
is), besides the per-IP budget the middleware charges. Nothing here publishes MCP events, so
``subscriptions/listen`` is not served and GET (the standalone event stream) is 405; should a
response still turn into an event stream, ``BoundedMCPEndpoint`` makes it take one of the
principal's ``MAX_STREAMS_PER_PRINCIPAL`` slots and ends it after ``MCP_STREAM_MAX_S``.

``mount_mcp(app)`` adds the route and returns the server; the app's lifespan runs
``server.session_manager.run()`` (the task group the SDK serves requests in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import structlog
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import PRINCIPAL_STATE_KEY
from app.api.chat import MAX_QUESTION_CHARS
from app.api.deps import resources_of
from app.auth.principal import Principal, Role
from app.chat.types import ChatInput
from app.documents.service import DocumentService
from app.errors import DATABASE_UNAVAILABLE_ERRORS, AppError, problem_for_exception
from app.limits.budgets import Reservation
from app.limits.enforcement import charge_chat, principal_identity
from app.limits.errors import TooManyStreamsError
from app.limits.streams import StreamSlots
from app.memory.service import SessionId
from app.rag.query import RetrievalFilters, RetrievalMode, RetrievalQuery
from app.rag.rerank import rerank_stage, retrieval_depth
from app.rag.retrieval import retrieve
from app.rag.sources import readable_relevance
from app.resources import Resources
from app.security.text import PlainText

logger = structlog.get_logger(__name__)

MCP_PATH = "/mcp"
MAX_TOP_K = 20
MAX_LISTED_DOCUMENTS = 200

INSTRUCTIONS = (
    "Search and ask questions about the documents of your tenant. `search_documents` returns "
    "ranked passages; `ask` answers with numbered sources; `list_documents` lists documents."
)

Query = Annotated[PlainText, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]
Tag = Annotated[PlainText, Field(min_length=1, max_length=64)]


# --- results ----------------------------------------------------------------------------------


class Passage(BaseModel):
    document_id: str
    title: str
    version: int
    page: int
    score: float
    text: str
    tags: list[str]
    ocr: bool = False
    relevance: float | None = None  # cosine similarity to the query, 0 to 1
    start: int | None = None  # the passage's character span in the page's text
    end: int | None = None


class SearchResult(BaseModel):
    passages: list[Passage]


class AnswerSource(BaseModel):
    number: int
    document_id: str
    title: str
    version: int
    page: int
    score: float
    snippet: str
    cited: bool
    ocr: bool = False
    relevance: float | None = None  # cosine similarity to the question, 0 to 1
    start: int | None = None  # the passage's character span in the page's text
    end: int | None = None


class AskResult(BaseModel):
    answer: str
    sources: list[AnswerSource]
    session_id: str | None
    provider: str
    model: str
    cached: bool
    degraded: bool
    trace_id: str


class DocumentSummary(BaseModel):
    id: str
    title: str
    path: str | None
    author: str | None
    tags: list[str]
    current_version: int | None
    updated_at: str


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    total: int


# --- the caller -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    request: Request
    principal: Principal
    resources: Resources
    reservation: Reservation | None = None  # the ask tool's tokens on the token budgets


async def _charged_call(ctx: Context[Any, Any], app: FastAPI, *, answers: bool = False) -> _Call:
    """The HTTP request this tool call arrived in, its authenticated principal, and the app's
    resources (set by the lifespan, so read per call), once the call is charged to the chat
    budgets (``rate_limited`` when one is used up)."""
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ToolError("this server only serves tools over HTTP")
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if not isinstance(principal, Principal):  # the middleware authenticates every /mcp request
        raise ToolError("not authenticated")
    if not principal.role.allows(Role.reader):
        raise ToolError("this tool needs the reader role")
    resources = resources_of(app)
    limiter = resources.limiter
    # A call that may be answered by a provider also reserves its worst case on the token budgets.
    budgets = limiter.token_budgets if answers else None
    reservation = await charge_chat(request, limiter, principal, token_budgets=budgets)
    return _Call(request, principal, resources, reservation)


@contextmanager
def _reported() -> Iterator[None]:
    """An anticipated failure reaches the model as the REST API's problem code and detail.
    Anything else propagates: the SDK answers "Error executing tool" and logs the traceback."""
    try:
        yield
    except AppError as exc:
        raise ToolError(f"{exc.code}: {exc.detail}") from exc
    except DATABASE_UNAVAILABLE_ERRORS as exc:
        raise ToolError(
            "database_unavailable: the database is unreachable or restarting; retry shortly"
        ) from exc


# --- tools --------------------------------------------------------------------------------------


async def _search(call: _Call, query: str, top_k: int, tags: list[str] | None) -> SearchResult:
    resources = call.resources
    settings = resources.settings
    mode = RetrievalMode(settings.retrieval_mode)
    vector = None
    if mode is not RetrievalMode.text:
        vector = await resources.embedder.embed_query(query)
    async with resources.session_factory() as db:
        chunks = await retrieve(
            db,
            RetrievalQuery(
                tenant_id=call.principal.tenant_id,
                text=query,
                vector=vector,
                top_k=retrieval_depth(resources.reranker, top_k, settings.reranker_candidates),
                mode=mode,
                filters=RetrievalFilters(tags=tuple(tags or ())),
                vector_weight=settings.retrieval_vector_weight,
                text_weight=settings.retrieval_text_weight,
                ef_search=settings.hnsw_ef_search,
                min_similarity=settings.retrieval_min_similarity,
            ),
        )
    chunks = await rerank_stage(resources.reranker, query, chunks, top_k, resources.telemetry)
    return SearchResult(
        passages=[
            Passage(
                document_id=str(c.document_id),
                title=c.title,
                version=c.version,
                page=c.page,
                score=c.score,
                text=c.text,
                tags=list(c.tags),
                ocr=c.ocr,
                relevance=readable_relevance(c.similarity),
                start=c.start,
                end=c.end,
            )
            for c in chunks
        ]
    )


async def _ask(call: _Call, question: str, session_id: SessionId | None) -> AskResult:
    resources = call.resources
    settings = resources.settings
    chat_input = ChatInput(  # as app.api.chat._to_input builds it for a body with defaults
        question=question.strip(),
        session_id=session_id,
        mode=RetrievalMode(settings.retrieval_mode),
        vector_weight=settings.retrieval_vector_weight,
        text_weight=settings.retrieval_text_weight,
        reservation=call.reservation,
    )
    answer = await resources.chat.answer(call.principal, chat_input)  # settles or releases it
    return AskResult(
        answer=answer.answer,
        sources=[
            AnswerSource(
                number=s.number,
                document_id=s.document_id,
                title=s.title,
                version=s.version,
                page=s.page,
                score=s.score,
                snippet=s.snippet,
                cited=s.cited,
                ocr=s.ocr,
                relevance=s.relevance,
                start=s.start,
                end=s.end,
            )
            for s in answer.sources
        ],
        session_id=answer.session_id,
        provider=answer.provider,
        model=answer.model,
        cached=answer.cached,
        degraded=answer.degraded,
        trace_id=answer.trace_id,
    )


async def _list(call: _Call, tag: str | None) -> DocumentList:
    resources = call.resources
    async with resources.session_factory() as session:
        page = await DocumentService(session, resources.settings).list_documents(
            call.principal.tenant_id,
            tag=tag,
            text_query=None,
            include_deleted=False,
            limit=MAX_LISTED_DOCUMENTS,
            offset=0,
        )
    return DocumentList(
        documents=[
            DocumentSummary(
                id=str(d.id),
                title=d.title,
                path=d.path,
                author=d.author,
                tags=list(d.tags),
                current_version=d.current_version,
                updated_at=d.updated_at.isoformat(),
            )
            for d in page.items
        ],
        total=page.total,
    )


def create_mcp_server(app: FastAPI) -> MCPServer:
    """A fresh server whose tools serve ``app``'s resources (one per app: tests build many)."""
    # No subscriptions: nothing publishes events, and each listen stream would stay open forever.
    server: MCPServer = MCPServer(
        name="rag-chat", instructions=INSTRUCTIONS, version=app.version, subscriptions=False
    )

    @server.tool(
        description="Search the tenant's documents; returns the best-matching passages with "
        "document id, title, version, page, score and text."
    )
    async def search_documents(
        query: Query,
        ctx: Context[Any, Any],
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 5,
        tags: Annotated[list[Tag] | None, Field(max_length=20)] = None,
    ) -> SearchResult:
        if not query.strip():
            raise ToolError("invalid_query: the query is empty")
        with _reported():
            return await _search(await _charged_call(ctx, app), query.strip(), top_k, tags)

    @server.tool(
        description="Ask a question about the tenant's documents; returns the answer with its "
        "numbered sources. Pass the returned session_id again to continue a conversation."
    )
    async def ask(question: Query, ctx: Context[Any, Any], session_id: SessionId | None = None) -> AskResult:
        if not question.strip():
            raise ToolError("invalid_question: the question is empty")
        with _reported():
            return await _ask(await _charged_call(ctx, app, answers=True), question, session_id)

    @server.tool(description="List the tenant's documents (newest first, up to 200), optionally by tag.")
    async def list_documents(ctx: Context[Any, Any], tag: Tag | None = None) -> DocumentList:
        with _reported():
            return await _list(await _charged_call(ctx, app), tag)

    return server


def _is_event_stream(message: Message) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in message.get("headers", ())
    )


class _StreamBound:
    """One request's ``send``, watched: when the response starts as an event stream it takes a
    stream slot (or answers 429 ``too_many_streams`` instead and cancels the handler) and gets a
    deadline; whatever happens, ``finish`` ends the response and gives the slot back."""

    def __init__(
        self,
        scope: Scope,
        send: Send,
        slots: StreamSlots,
        identity: str,
        max_s: float,
        cancel: anyio.CancelScope,
    ) -> None:
        self._scope, self._send, self._slots, self._identity = scope, send, slots, identity
        self._max_s, self._cancel = max_s, cancel
        self._slot: str | None = None
        self.streaming = self.ended = False

    async def send(self, message: Message) -> None:
        if self.ended:
            return
        if message["type"] == "http.response.start" and _is_event_stream(message):
            try:
                self._slot = await self._slots.acquire(self._identity)
            except TooManyStreamsError as exc:
                await self._refuse(exc)
                return
            self.streaming = True
            self._cancel.deadline = anyio.current_time() + self._max_s
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)

    async def _refuse(self, exc: TooManyStreamsError) -> None:
        response = await problem_for_exception(Request(self._scope), exc)
        assert response is not None  # an AppError always has its problem response
        self.ended = True
        self._cancel.cancel()
        await response(self._scope, _no_body, self._send)

    async def finish(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self.streaming and not self.ended:
                    logger.info("mcp_stream_ended_at_deadline", max_s=self._max_s)
                    self.ended = True
                    await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client has gone already
                pass
            finally:
                await self._slots.release(self._identity, self._slot)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class BoundedMCPEndpoint:
    """The SDK's handler, served to POST only (GET would open the standalone event stream, which
    never ends and has nothing to carry here: 405, as the MCP spec allows). A response that turns
    into an event stream takes one of the principal's ``MAX_STREAMS_PER_PRINCIPAL`` slots (shared
    with the chat streams) and ends after ``MCP_STREAM_MAX_S``."""

    def __init__(self, handler: ASGIApp) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        principal = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
        if not isinstance(principal, Principal):  # the middleware authenticates every /mcp request
            await self._handler(scope, receive, send)
            return
        resources = resources_of(scope["app"])
        with anyio.CancelScope() as cancel:
            bound = _StreamBound(
                scope,
                send,
                resources.stream_slots,
                principal_identity(principal),
                resources.settings.mcp_stream_max_s,
                cancel,
            )
            try:
                await self._handler(scope, receive, bound.send)
            finally:
                await bound.finish()


def mount_mcp(app: FastAPI) -> MCPServer:
    """Serve a new MCP server at ``/mcp`` (exactly that path, POST only). The caller runs
    ``server.session_manager.run()`` in the app's lifespan."""
    server = create_mcp_server(app)
    # Builds the session manager; the Starlette app it returns is not used (its lifespan would
    # not run when mounted), only the ASGI handler of the manager.
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        # API keys, not cookies or the network position, authenticate: a DNS-rebound browser has
        # no key to send. Host/Origin checks would also refuse every deployment's public host.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app.router.routes.append(
        Route(
            MCP_PATH,
            endpoint=BoundedMCPEndpoint(StreamableHTTPASGIApp(server.session_manager)),
            include_in_schema=False,
        )
    )
    return server
