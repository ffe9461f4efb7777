"""HTTP request metrics (``http_requests_total``, ``http_request_duration_seconds``,
``http_request_duration_highr_seconds``), recorded by the edge layer once per request for every
backend: one timing, taken by the layer that already times the access line, instead of a
middleware of its own."""

from __future__ import annotations

from starlette.types import Scope

# Where a layer that refuses a request before the router (authentication) leaves its route template.
ROUTE_TEMPLATE_STATE_KEY = "route_template"


def route_template(scope: Scope) -> str | None:
    """The template of the route that served the request (``/api/v1/documents/{document_id}``,
    never the raw path), or None when no route did."""
    route = getattr(scope.get("route"), "path", None)
    if route is None:
        state = scope.get("state")
        route = state.get(ROUTE_TEMPLATE_STATE_KEY) if state else None
    return route


def record_http_request(scope: Scope, status: int, duration_s: float) -> None:
    """Called by the edge layer (``app.api.middleware``) once per request; a no-op before the
    lifespan has built the resources."""
    resources = getattr(getattr(scope.get("app"), "state", None), "resources", None)
    telemetry = getattr(resources, "telemetry", None)
    if telemetry is None:
        return
    telemetry.metrics.http_request(str(scope.get("method", "")), route_template(scope), status, duration_s)
