"""Health and metrics: liveness, readiness, Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import MetricsDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict:
    """Liveness: the process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/healthz")
async def healthz() -> dict:
    """Alias of /livez."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "Model not loaded or not warmed up yet, every slot stuck past the timeout, or the "
            "temporary directory full"
        }
    },
)
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up; 503 before, and while every correction slot is
    held by work running past the request timeout (no new photo could be served in time), and while the temporary
    directory has had no room for an upload since a write to it failed."""
    state = request.app.state
    if not state.ready:
        return JSONResponse({"status": "loading", "detail": "model is not loaded yet"}, status_code=503)
    if state.gate.stuck(settings.request_timeout_s):
        detail = f"every correction slot is held by work running over {settings.request_timeout_s:g} s"
        return JSONResponse({"status": "stuck", "detail": detail}, status_code=503)
    if state.storage.still_full():
        detail = f"the temporary directory {state.storage.path} is full: multipart uploads over 1 MB get 503"
        return JSONResponse({"status": "storage_full", "detail": detail}, status_code=503)
    corrector = state.corrector
    return JSONResponse({"status": "ready", "checkpoint": corrector.checkpoint_id, "device": str(corrector.device)})


@router.get("/metrics", response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
