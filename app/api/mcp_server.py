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

import structlog
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from starlette.requests import Request
from starlette.routing import Route

from app.api.asking import admit
from app.api.auth import PRINCIPAL_STATE_KEY
from app.api.chat import MAX_QUESTION_CHARS
from app.api.deps import resources_of
from app.api.mcp_results import AskResult, DocumentList, DocumentSummary, Passage, SearchResult
from app.api.mcp_streams import BoundedMCPEndpoint
from app.auth.access import AccessSet
from app.auth.principal import Principal, Role
from app.chat.request import AskRequest
from app.documents.service import DocumentService
from app.errors import DATABASE_UNAVAILABLE_ERRORS, AppError
from app.limits.enforcement import charge_chat
from app.memory.service import SessionId
from app.rag.query import RetrievalFilters
from app.resources import Resources
from app.security.text import PlainText

__all__ = ["BoundedMCPEndpoint", "create_mcp_server", "mount_mcp"]

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


# --- the caller -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    request: Request
    principal: Principal
    resources: Resources


def _call(ctx: Context[Any, Any], app: FastAPI) -> _Call:
    """The HTTP request this tool call arrived in, its authenticated principal, and the app's
    resources (set by the lifespan, so read per call)."""
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ToolError("this server only serves tools over HTTP")
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if not isinstance(principal, Principal):  # the middleware authenticates every /mcp request
        raise ToolError("not authenticated")
    if not principal.role.allows(Role.reader):
        raise ToolError("this tool needs the reader role")
    return _Call(request, principal, resources_of(app))


async def _charged(call: _Call) -> _Call:
    """``call`` once charged to the chat budgets (``rate_limited`` when one is used up). The ask
    tool is charged by the pipeline's entry instead (``app.api.asking.admit``), with its tokens."""
    await charge_chat(call.request, call.resources.limiter, call.principal)
    return call


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
    """The chat pipeline's retrieval stage alone, with the settings' retrieval defaults."""
    resources = call.resources
    ask = AskRequest(question=query, top_k=top_k, filters=RetrievalFilters(tags=tuple(tags or ())))
    async with resources.session_factory() as db:
        chunks = await resources.chat.retrieval.search(db, call.principal, ask.resolve(resources.settings))
    return SearchResult(passages=[Passage.of(c) for c in chunks])


async def _ask(call: _Call, question: str, session_id: SessionId | None) -> AskResult:
    resources = call.resources
    admitted = await admit(
        call.request,
        resources.limiter,
        call.principal,
        resources.chat,
        resources.settings,
        AskRequest(question=question, session_id=session_id),
    )
    return AskResult.of(await admitted.service.answer(call.principal, admitted.chat))  # settles


async def _list(call: _Call, tag: str | None) -> DocumentList:
    resources = call.resources
    async with resources.session_factory() as session:
        service = DocumentService(session, resources.settings, access=AccessSet.of(call.principal))
        page = await service.list_documents(
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
            return await _search(await _charged(_call(ctx, app)), query.strip(), top_k, tags)

    @server.tool(
        description="Ask a question about the tenant's documents; returns the answer with its "
        "numbered sources. Pass the returned session_id again to continue a conversation."
    )
    async def ask(question: Query, ctx: Context[Any, Any], session_id: SessionId | None = None) -> AskResult:
        if not question.strip():
            raise ToolError("invalid_question: the question is empty")
        with _reported():
            return await _ask(_call(ctx, app), question, session_id)

    @server.tool(description="List the tenant's documents (newest first, up to 200), optionally by tag.")
    async def list_documents(ctx: Context[Any, Any], tag: Tag | None = None) -> DocumentList:
        with _reported():
            return await _list(await _charged(_call(ctx, app)), tag)

    return server


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
