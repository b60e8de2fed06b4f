"""Plain errors inside, HTTP at the edge: one table from each exception a correction may raise to its answer.

``install_error_handlers`` registers one FastAPI exception handler per row; a route raises and never maps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.batcher import BatcherClosed
from app.codec import CorruptImage, ImageTooLarge, OutputTooLarge, UnsupportedImage
from app.gate import Busy, DeadlineExceeded
from app.server import CLIENT_CLOSED_REQUEST
from app.storage import storage_full

log = logging.getLogger("wbvae")


@dataclass(frozen=True)
class ErrorAnswer:
    """How one exception is answered: its status, its detail (the exception's text unless given), whether it asks the
    client to retry later, and the reason it is counted under in ``wbvae_rejected_total`` (if any)."""

    status: int
    detail: Callable[[Request, Exception], str] = lambda _, exc: str(exc)
    retry: bool = False
    rejected: str | None = None
    then: Callable[[], None] | None = None  # run after counting it (GPU out of memory: empty the cache)


class ClientGone(Exception):
    """The client disconnected before its correction was done (answered 499, which nobody reads)."""


def _free_gpu_memory() -> None:
    log.warning("GPU out of memory; cache emptied, request refused")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


ERRORS: dict[type[Exception], ErrorAnswer] = {
    UnsupportedImage: ErrorAnswer(415),
    CorruptImage: ErrorAnswer(422),
    ImageTooLarge: ErrorAnswer(413),
    OutputTooLarge: ErrorAnswer(422),
    Busy: ErrorAnswer(
        503, lambda *_: "busy: all correction slots and queue places are taken; retry later", True, "queue_full"
    ),
    DeadlineExceeded: ErrorAnswer(
        504, lambda request, _: f"not done within {request.app.state.settings.request_timeout_s:g} s", False, "timeout"
    ),
    BatcherClosed: ErrorAnswer(503, lambda *_: "the service is shutting down; retry", True, "shutting_down"),
    torch.OutOfMemoryError: ErrorAnswer(
        503, lambda *_: "GPU out of memory; retry later or send a smaller photo", True, "gpu_oom", _free_gpu_memory
    ),
}
"""Exception -> answer. ``ClientGone`` is not here: nobody reads its answer (``client_gone``, below)."""


def install_error_handlers(app: FastAPI) -> None:
    """One exception handler per row of ``ERRORS``, the quiet 499 for a client that left, and the server's own
    fault for a body that could not be stored."""
    for exc_type, answer in ERRORS.items():
        app.add_exception_handler(exc_type, _handler(answer))
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(StarletteHTTPException, body_not_stored)


async def body_not_stored(request: Request, exc: Exception) -> Response:
    """FastAPI answers any failure to read a form as 400 "error parsing the body"; one that failed for want of
    temporary space is the server's fault: 503 with Retry-After, logged, and ``/readyz`` reports it."""
    cause = exc.__cause__
    if not isinstance(cause, OSError) or not storage_full(cause):
        return await http_exception_handler(request, exc)  # type: ignore[arg-type]
    request.app.state.storage.failed(cause)
    request.app.state.metrics.rejected.labels("disk_full").inc()
    detail = "the server's temporary storage is full; retry later (a raw image/* body needs none)"
    headers = {"Retry-After": str(request.app.state.settings.retry_after_s)}
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


def _handler(answer: ErrorAnswer):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if answer.rejected is not None:
            request.app.state.metrics.rejected.labels(answer.rejected).inc()
        if answer.then is not None:
            answer.then()
        headers = {"Retry-After": str(request.app.state.settings.retry_after_s)} if answer.retry else None
        return JSONResponse({"detail": answer.detail(request, exc)}, status_code=answer.status, headers=headers)

    return handle


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client disconnected before its correction was done: the access log and the metrics read this answer."""
    request.app.state.metrics.rejected.labels("client_gone").inc()
    log.info("client disconnected; correction dropped")
    return Response(status_code=CLIENT_CLOSED_REQUEST)
