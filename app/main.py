"""App factory, lifespan and routes of the wbvae service."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.batcher import ModelBatcher, batching_wanted
from app.docs import install_docs
from app.formats import DEFAULT_FORMAT, FORMATS, OutputFormat, OutputTooLarge, format_for_media_type, output_format
from app.gate import Busy, CorrectionGate, DeadlineExceeded
from app.imaging import ACCEPTED_NAMES, CorruptImage, ImageTooLarge, UnsupportedImage
from app.metrics import Metrics
from app.middleware import CLIENT_CLOSED_REQUEST, BodySizeLimit, RequestMetrics, UploadBudget
from app.pipeline import Limits, Options, correct_upload
from app.security import ApiKeyGuard, SecurityHeaders, install_cors
from app.settings import Settings
from app.web import install_web
from model.corrector import Corrector, DeviceUnavailable

log = logging.getLogger("wbvae")
T = TypeVar("T")

ERRORS = {UnsupportedImage: 415, CorruptImage: 422, ImageTooLarge: 413, OutputTooLarge: 422}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_corrector(request: Request) -> Corrector:
    """The loaded, warmed-up Corrector; 503 until then."""
    if not request.app.state.ready:
        raise HTTPException(503, "model is loading; retry shortly", headers={"Retry-After": "5"})
    return request.app.state.corrector


# Documents the key in the OpenAPI schema (Swagger UI's Authorize button); ApiKeyGuard has already
# checked it, before the body was read.
bearer_key = HTTPBearer(auto_error=False, description="An API key from WBVAE_API_KEYS (when keys are configured)")


def get_output_format(
    request: Request,
    fmt: Annotated[
        str | None,
        Query(
            alias="format",
            description=f"Output format: {', '.join(FORMATS)} (aliases such as jpg accepted, any case); "
            f"overrides the Accept header. Default {DEFAULT_FORMAT}.",
        ),
    ] = None,
) -> OutputFormat:
    """The ``format`` query parameter, else the best supported type in Accept, else the default (PNG)."""
    if fmt:
        try:
            return output_format(fmt)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    ranked = []
    for i, item in enumerate((request.headers.get("accept") or "").split(",")):
        media, *params = [p.strip() for p in item.split(";")]
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            weight = float(q)
        except ValueError:
            continue
        accepted = format_for_media_type(media)
        if accepted is not None and weight > 0:
            ranked.append((-weight, i, accepted.name))
    return FORMATS[min(ranked)[2] if ranked else DEFAULT_FORMAT]


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CorrectorDep = Annotated[Corrector, Depends(get_corrector)]
FormatDep = Annotated[OutputFormat, Depends(get_output_format)]

router = APIRouter()


@router.get("/livez", tags=["health"])
async def livez() -> dict:
    """Liveness: the process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/healthz", tags=["health"])
async def healthz() -> dict:
    """Alias of /livez."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    responses={503: {"description": "Model not loaded or not warmed up yet, or every slot stuck past the timeout"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up; 503 before, and while every correction slot is
    held by work running past the request timeout (no new photo could be served in time)."""
    if not request.app.state.ready:
        return JSONResponse({"status": "loading", "detail": "model is not loaded yet"}, status_code=503)
    settings: Settings = request.app.state.settings
    if request.app.state.gate.stuck(settings.request_timeout_s):
        detail = f"every correction slot is held by work running over {settings.request_timeout_s:g} s"
        return JSONResponse({"status": "stuck", "detail": detail}, status_code=503)
    corrector: Corrector = request.app.state.corrector
    return JSONResponse({"status": "ready", "checkpoint": corrector.checkpoint_id, "device": str(corrector.device)})


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/correct",
    tags=["correction"],
    response_class=Response,
    dependencies=[Security(bearer_key)],
    openapi_extra={  # besides the multipart form: the photo as the raw body
        "requestBody": {
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/*", "application/octet-stream")
            }
        }
    },
    responses={
        200: {
            "content": {f.media_type: {} for f in FORMATS.values()},
            "description": "The corrected photo, same size and orientation-corrected; PNG by default",
        },
        401: {"description": "API keys are configured and the request has no valid Bearer key"},
        413: {"description": "Upload or image over the configured limits"},
        415: {"description": "Not a supported image"},
        422: {
            "description": "Empty, missing or corrupt upload, a bad parameter, or a photo too wide or "
            "tall for the asked format (JPEG 65,535 px, WebP 16,383 px per side)"
        },
        503: {"description": "Model loading, queue full or GPU out of memory; see Retry-After"},
        504: {"description": "Not done within the request timeout"},
    },
)
async def correct(
    corrector: CorrectorDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    fmt: FormatDep,
    request: Request,
    file: Annotated[
        UploadFile | None,
        File(description=f"The photo ({ACCEPTED_NAMES}); or send it as the raw body with Content-Type image/*"),
    ] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality")] = None,
    strength: Annotated[float, Query(ge=0, le=1, description="0: unchanged, 1: full")] = 1.0,
) -> Response:
    """Correct the white balance of an uploaded photo; returns it at the same size (PNG unless asked)."""
    deadline = time.monotonic() + settings.request_timeout_s
    if file is not None:
        data, filename = await file.read(settings.max_upload_bytes + 1), file.filename
    elif raw_body_type(request.headers.get("content-type")):
        data, filename = await request.body(), None  # BodySizeLimit bounds what is read
    else:
        raise HTTPException(422, RAW_OR_MULTIPART)
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload too large; the limit is {settings.max_upload_bytes} bytes")
    options = Options(fmt, quality or settings.default_quality, strength)
    retry = {"Retry-After": str(settings.retry_after_s)}
    abandoned = threading.Event()  # set when nobody waits any more: the work stops at its next stage
    work = request.app.state.gate.run(
        correct_upload,
        corrector,
        data,
        options,
        request.app.state.limits,
        request.app.state.batcher,
        abandoned,
        deadline=deadline,
    )
    try:
        result = await unless_client_leaves(request, work)
    except ClientGone:
        abandoned.set()
        metrics.rejected.labels("client_gone").inc()
        log.info("client disconnected; correction dropped")
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it; the access log and metrics do
    except Busy:
        metrics.rejected.labels("queue_full").inc()
        raise HTTPException(
            503, "busy: all correction slots and queue places are taken; retry later", headers=retry
        ) from None
    except DeadlineExceeded:
        abandoned.set()
        metrics.rejected.labels("timeout").inc()
        raise HTTPException(504, f"not done within {settings.request_timeout_s:g} s") from None
    except torch.OutOfMemoryError:
        metrics.rejected.labels("gpu_oom").inc()
        log.warning("GPU out of memory; cache emptied, request refused")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise HTTPException(503, "GPU out of memory; retry later or send a smaller photo", headers=retry) from None
    except tuple(ERRORS) as exc:
        raise HTTPException(ERRORS[type(exc)], str(exc)) from None
    metrics.record(result.stages, result.megapixels, result.inference_seconds)
    headers = {"Vary": "Accept", "Content-Disposition": f'inline; filename="{output_filename(filename, fmt)}"'}
    return Response(result.body, media_type=fmt.media_type, headers=headers)


class ClientGone(Exception):
    """The client disconnected before its correction was done."""


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it (``ClientGone``) as soon as the client disconnects. The body has been
    read by now, so the next ASGI message is the disconnect, or nothing until the response is sent."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        gone = not task.done()
        if gone:
            task.cancel()
            # Its outcome is nobody's now: cancelled, or (when the cancel came too late, Python 3.11's wait_for
            # swallows it) Abandoned or any error of the work; retrieved here so that asyncio logs no traceback.
            task.add_done_callback(_ignore_outcome)
    if gone:
        raise ClientGone()
    return task.result()


def _ignore_outcome(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


RAW_OR_MULTIPART = (
    "send the photo as the multipart field 'file', or as the raw request body with Content-Type image/* "
    "or application/octet-stream"
)


def raw_body_type(content_type: str | None) -> bool:
    """Whether a request's Content-Type announces a photo as its raw body (mobile SDKs send it so)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media.startswith("image/") or media == "application/octet-stream"


def output_filename(upload_name: str | None, fmt: OutputFormat) -> str:
    """``<original stem>-wb.<ext>``, ASCII letters, digits, ``.``, ``_`` and ``-`` only (else ``photo``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(upload_name or "").stem).strip("._") or "photo"
    return f"{stem[:100]}-wb{fmt.suffixes[0]}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. The lifespan loads one Corrector, then warms it up in the background."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        device = None if settings.device == "auto" else settings.device
        try:
            corrector = await asyncio.to_thread(
                Corrector.from_checkpoint, settings.checkpoint, device, settings.gpu_mapping
            )
        except DeviceUnavailable as exc:  # never ready: the process exits instead of serving on the wrong device
            log.error("cannot start: %s", exc)
            raise
        app.state.corrector = corrector
        corrector.limit_cpu_threads()  # once per process; the CLI sizes its own thread pool
        metrics.model_info.info({"checkpoint": corrector.checkpoint_id, "device": str(corrector.device)})
        log.info("loaded %s on %s", corrector.checkpoint_id, corrector.device)

        async def warm_up():
            await asyncio.to_thread(corrector.warm_up)
            app.state.ready = True
            metrics.model_ready.set(1)
            log.info("model warmed up; ready")

        if batching_wanted(settings.batch, corrector.device):
            app.state.batcher = ModelBatcher(
                corrector, settings.batch_max_size, settings.batch_max_wait_ms / 1000, metrics
            )
        gate = app.state.gate = CorrectionGate(settings.max_concurrent_corrections, settings.max_queued_corrections)
        metrics.in_flight.set_function(lambda: gate.running)
        metrics.oldest_running.set_function(gate.oldest_running_s)
        metrics.queued.set_function(lambda: gate.waiting)
        if corrector.device.type == "cuda":
            metrics.watch_gpu_memory(corrector.device)
        warm_task = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            warm_task.cancel()
            app.state.ready = False
            metrics.model_ready.set(0)
            gate.shutdown()
            if app.state.batcher is not None:
                app.state.batcher.close()

    app = FastAPI(
        title="wbvae",
        version="0.1.0",
        lifespan=lifespan,
        description="White-balance correction: upload a photo, get it back with whites white.",
        docs_url=None,  # served from packaged assets by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limits = Limits(
        max_pixels=settings.max_pixels,
        strip_gps=settings.strip_gps,
        png_compress_level=settings.png_compress_level,
        encode_threads=settings.encode_threads,
    )
    app.state.corrector = None
    app.state.batcher = None
    app.state.ready = False
    app.include_router(router)
    install_web(app)  # the page at / and its /static assets
    install_docs(app)
    # Outermost last: metrics and the request id see every answer, CORS headers reach the 401s,
    # and a request without a valid key is refused before UploadBudget counts it or a route reads its body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        UploadBudget,
        max_bytes=settings.max_body_bytes_in_flight,
        per_request_bytes=settings.max_upload_bytes,
        retry_after_s=settings.retry_after_s,
        metrics=metrics,
    )
    app.add_middleware(ApiKeyGuard, keys=settings.api_key_list)
    install_cors(app, settings.cors_origin_list)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
