"""App factory, lifespan and routes of the wbvae service."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.imaging import CorruptImage, ImageTooLarge, UnsupportedImage, decode, encode_png
from app.metrics import Metrics
from app.middleware import BodySizeLimit, RequestMetrics
from app.settings import Settings
from model.corrector import Corrector

log = logging.getLogger("wbvae")

ERRORS = {UnsupportedImage: 415, CorruptImage: 422, ImageTooLarge: 413}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_corrector(request: Request) -> Corrector:
    """The loaded, warmed-up Corrector; 503 until then."""
    if not request.app.state.ready:
        raise HTTPException(503, "model is loading; retry shortly", headers={"Retry-After": "5"})
    return request.app.state.corrector


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CorrectorDep = Annotated[Corrector, Depends(get_corrector)]

router = APIRouter()


@router.get("/livez", tags=["health"])
async def livez() -> dict:
    """Liveness: the process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/healthz", tags=["health"])
async def healthz() -> dict:
    """Alias of /livez."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses={503: {"description": "Model not loaded or not warmed up yet"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up, 503 before."""
    if request.app.state.ready:
        corrector: Corrector = request.app.state.corrector
        return JSONResponse({"status": "ready", "checkpoint": corrector.checkpoint_id,
                             "device": str(corrector.device)})
    return JSONResponse({"status": "loading", "detail": "model is not loaded yet"}, status_code=503)


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/correct", tags=["correction"], response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The corrected photo, same size, as PNG"},
               413: {"description": "Upload or image over the configured limits"},
               415: {"description": "Not a supported image"},
               422: {"description": "Empty, missing or corrupt upload"},
               503: {"description": "Model still loading"}},
)
async def correct(corrector: CorrectorDep, settings: SettingsDep, metrics: MetricsDep, request: Request,
                  file: Annotated[UploadFile, File(description="The photo (JPEG, PNG, WebP, TIFF, BMP)")]) -> Response:
    """Correct the white balance of an uploaded photo; returns a PNG of the same size."""
    data = await file.read(settings.max_upload_bytes + 1)
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload too large; the limit is {settings.max_upload_bytes} bytes")
    async with request.app.state.correction_slots:
        metrics.in_flight.inc()
        try:
            png = await run_in_threadpool(_correct_bytes, corrector, settings, metrics, data)
        except tuple(ERRORS) as exc:
            raise HTTPException(ERRORS[type(exc)], str(exc)) from None
        finally:
            metrics.in_flight.dec()
    return Response(png, media_type="image/png")


def _correct_bytes(corrector: Corrector, settings: Settings, metrics: Metrics, data: bytes) -> bytes:
    image = decode(data, settings.max_pixels)
    start = time.perf_counter()
    rgb = corrector.correct(image.rgb)
    metrics.inference_duration.observe(time.perf_counter() - start)
    return encode_png(rgb, image.alpha, settings.png_compress_level)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. The lifespan loads one Corrector, then warms it up in the background."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        device = None if settings.device == "auto" else settings.device
        corrector = await asyncio.to_thread(Corrector.from_checkpoint, settings.checkpoint, device)
        app.state.corrector = corrector
        metrics.model_info.info({"checkpoint": corrector.checkpoint_id, "device": str(corrector.device)})
        log.info("loaded %s on %s", corrector.checkpoint_id, corrector.device)

        async def warm_up():
            await asyncio.to_thread(corrector.warm_up)
            app.state.ready = True
            metrics.model_ready.set(1)
            log.info("model warmed up; ready")

        warm_task = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            warm_task.cancel()
            app.state.ready = False
            metrics.model_ready.set(0)

    app = FastAPI(title="wbvae", version="0.1.0", lifespan=lifespan,
                  description="White-balance correction: upload a photo, get it back with whites white.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.corrector = None
    app.state.ready = False
    app.state.correction_slots = asyncio.Semaphore(settings.max_concurrent_corrections)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
