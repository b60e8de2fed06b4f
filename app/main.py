"""The app factory and its lifespan: one ``Corrector`` loaded, warmed up, and shared by the routes."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.batcher import ModelBatcher, batching_wanted
from app.errors import install_error_handlers
from app.facts import FACT_HEADERS
from app.gate import CorrectionGate
from app.metrics import Metrics
from app.pipeline import Limits
from app.routes import analysis, correction, health, pages
from app.server import (
    AnswerBudget,
    ApiKeyGuard,
    BodySizeLimit,
    HeadAsGet,
    RequestMetrics,
    SecurityHeaders,
    SingleQueryValues,
    UnsentAnswers,
    UploadBudget,
    install_cors,
)
from app.settings import MULTIPART_SLACK_BYTES, Settings
from app.storage import TempStorage
from model.corrector import Corrector, DeviceUnavailable

log = logging.getLogger("wbvae")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service: its state, routes, error handlers and middleware. The lifespan loads the model."""
    settings = settings or Settings()
    app = FastAPI(
        title="wbvae",
        version="0.1.0",
        lifespan=lifespan,
        description="White-balance correction: upload a photo, get it back with whites white.",
        docs_url=None,  # served from packaged assets by app.routes.pages, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.limits = Limits(
        max_pixels=settings.max_pixels,
        strip_gps=settings.strip_gps,
        png_compress_level=settings.png_compress_level,
        encode_threads=settings.encode_threads,
    )
    app.state.corrector = app.state.batcher = app.state.gate = None
    app.state.ready = False
    app.state.storage = TempStorage(settings.max_upload_bytes + MULTIPART_SLACK_BYTES)
    app.state.startup_error = None  # why the lifespan could not start the service, in one line
    for routes in (correction, analysis, health, pages):
        app.include_router(routes.router)
    pages.mount_assets(app)
    install_error_handlers(app)
    # Outermost last: metrics and the request id see every answer, CORS headers reach the 401s,
    # and a request without a valid key is refused before UploadBudget counts it or a route reads its body.
    app.add_middleware(HeadAsGet)
    app.add_middleware(SingleQueryValues)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        UploadBudget,
        max_bytes=settings.max_body_bytes_in_flight,
        window_s=settings.body_rate_window_s,
        retry_after_s=settings.retry_after_s,
        metrics=app.state.metrics,
    )
    app.state.unsent_answers = UnsentAnswers()  # counted by the HTTP server (app.server.protocol)
    app.add_middleware(
        AnswerBudget,
        max_bytes=settings.max_unsent_answer_bytes,
        unsent=app.state.unsent_answers,
        retry_after_s=settings.retry_after_s,
        metrics=app.state.metrics,
    )
    app.add_middleware(ApiKeyGuard, keys=settings.api_key_list)
    install_cors(app, settings.cors_origin_list, FACT_HEADERS)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Load the Corrector, start the gate (and the batcher), warm up in the background; undo it all at shutdown."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    try:
        corrector = await load_corrector(settings)
    except (ValueError, DeviceUnavailable) as exc:  # a bad checkpoint or device: one line, the process exits 3
        log.error("cannot start: %s", exc)
        app.state.startup_error = str(exc)
        raise
    app.state.corrector = corrector
    corrector.limit_cpu_threads()  # once per process; the CLI sizes its own thread pool
    metrics.model_info.info({"checkpoint": corrector.checkpoint_id, "device": str(corrector.device)})
    log.info("loaded %s on %s", corrector.checkpoint_id, corrector.device)
    if batching_wanted(settings.batch, corrector.device):
        app.state.batcher = ModelBatcher(corrector, settings.batch_max_size, settings.batch_max_wait_ms / 1000, metrics)
    gate = app.state.gate = CorrectionGate(settings.max_concurrent_corrections, settings.max_queued_corrections)
    metrics.in_flight.set_function(lambda: gate.running)
    metrics.oldest_running.set_function(gate.oldest_running_s)
    metrics.queued.set_function(lambda: gate.waiting)
    if corrector.device.type == "cuda":
        metrics.watch_gpu_memory(corrector.device)
    warm_task = asyncio.create_task(warm_up(app, corrector))
    try:
        yield
    finally:
        warm_task.cancel()
        app.state.ready = False
        metrics.model_ready.set(0)
        gate.shutdown()
        if app.state.batcher is not None:
            app.state.batcher.close()


async def load_corrector(settings: Settings) -> Corrector:
    """The configured checkpoint on the configured device, loaded off the event loop; ``ValueError`` (naming the
    checkpoint) or ``DeviceUnavailable`` if it cannot be."""
    device = None if settings.device == "auto" else settings.device
    return await asyncio.to_thread(Corrector.from_checkpoint, settings.checkpoint, device, settings.gpu_mapping)


async def warm_up(app: FastAPI, corrector: Corrector) -> None:
    """Run one small photo through the model, then declare the service ready."""
    await asyncio.to_thread(corrector.warm_up)
    app.state.ready = True
    app.state.metrics.model_ready.set(1)
    log.info("model warmed up; ready")
