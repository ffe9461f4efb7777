"""Liveness and readiness probes (root paths, no credentials)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ReadinessDep
from app.errors import problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies reachable and schema at head")
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    report = await readiness.check()
    if report.ready:
        return JSONResponse({"status": "ready", "checks": report.checks})
    return problem_response(
        status=503,
        code="not_ready",
        title="Service not ready",
        detail="not ready: " + ", ".join(report.failing) + " down",
        extra={"checks": report.checks},
    )
