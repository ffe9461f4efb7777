"""``GET /metrics``: the Prometheus scrape endpoint (root path, no credentials, like the probes).

Under gunicorn it aggregates every worker (multiprocess mode). With a push-based backend
(Datadog, OpenTelemetry) or none, there is nothing to scrape: 404.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import TelemetryDep
from app.errors import NotFoundError

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics of all workers", response_class=Response)
async def metrics(telemetry: TelemetryDep) -> Response:
    payload = telemetry.metrics.backend.exposition()
    if payload is None:
        raise NotFoundError(f"metrics are pushed to {telemetry.metrics.backend.name}, not scraped")
    body, content_type = payload
    return Response(content=body, media_type=content_type)
