"""POST /correct: the photo in, the corrected photo out.

The route reads the upload, hands an ``Upload`` to the gate (``CorrectionGate.run``: a worker thread runs
``app.pipeline``), races it against the client's disconnect, and records the stage times. Errors are raised, not
mapped: ``app.errors`` answers them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.responses import Response

from app.codec import ACCEPTED_NAMES, FORMATS, OutputFormat
from app.deps import AdaptationDep, FormatDep, GateDep, MetricsDep, ModelDep, SettingsDep, WhiteBalanceDep, bearer_key
from app.errors import ClientGone
from app.facts import FACT_HEADERS, fact_headers
from app.pipeline import Options, Upload
from app.settings import Settings

T = TypeVar("T")

router = APIRouter()

RAW_OR_MULTIPART = (
    "send the photo as the multipart field 'file', or as the raw request body with Content-Type image/* "
    "or application/octet-stream"
)

#: The request body of an upload route in the OpenAPI schema: besides the multipart form, the photo as the raw body.
PHOTO_BODY = {
    "requestBody": {
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/*", "application/octet-stream")
        }
    }
}
#: The errors an upload route answers (``app.errors``), as the OpenAPI schema describes them.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "API keys are configured and the request has no valid Bearer key"},
    413: {"description": "Upload or image over the configured limits"},
    415: {"description": "Not a supported image"},
    422: {"description": "Empty, missing or corrupt upload, or a bad parameter"},
    503: {"description": "Model loading, queue full or GPU out of memory; see Retry-After"},
    504: {"description": "Not done within the request timeout"},
}


@router.post(
    "/correct",
    tags=["correction"],
    response_class=Response,
    dependencies=[Security(bearer_key)],
    openapi_extra=PHOTO_BODY,
    responses={
        **UPLOAD_ERRORS,
        200: {
            "content": {f.media_type: {} for f in FORMATS.values()},
            "description": "The corrected photo, same size and orientation-corrected; PNG by default",
            "headers": {
                h: {"description": "What the model saw and did (docs/api.md)", "schema": {"type": "string"}}
                for h in FACT_HEADERS
            },
        },
        422: {
            "description": "Empty, missing or corrupt upload, a bad parameter, or a photo too wide or "
            "tall for the asked format (JPEG 65,535 px, WebP 16,383 px per side)"
        },
    },
)
async def correct(
    model: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: GateDep,
    wb: WhiteBalanceDep,
    adaptation: AdaptationDep,
    fmt: FormatDep,
    request: Request,
    file: Annotated[
        UploadFile | None,
        File(description=f"The photo ({ACCEPTED_NAMES}); or send it as the raw body with Content-Type image/*"),
    ] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality")] = None,
    strength: Annotated[float, Query(ge=0, le=1, description="0: unchanged, 1: full")] = 1.0,
) -> Response:
    """Correct the white balance of an uploaded photo; returns it at the same size (PNG unless asked), with what the
    model saw in the ``X-WB-*`` headers. ``temperature``/``preset`` and ``tint`` render it at a chosen light."""
    deadline = time.monotonic() + settings.request_timeout_s
    data, filename = await read_photo(request, file, settings)
    options = Options(fmt, quality or settings.default_quality, strength, wb.kelvin, wb.tint, adaptation)
    result = await unless_client_leaves(
        request, gate.run(Upload(model, data, options, request.app.state.limits), deadline)
    )
    metrics.record(result.stages, result.megapixels, result.inference_seconds)
    metrics.record_estimate(result.correction.illuminant.cct, result.correction.dead_zone_decision, adaptation)
    headers = {
        "Vary": "Accept",
        "Content-Disposition": f'inline; filename="{output_filename(filename, fmt)}"',
        **fact_headers(result.correction, wb),
    }
    return Response(result.body, media_type=fmt.media_type, headers=headers)


async def read_photo(request: Request, file: UploadFile | None, settings: Settings) -> tuple[bytes, str | None]:
    """The uploaded photo's bytes and file name: the multipart field ``file``, else an image/* raw body."""
    if file is not None:
        data, filename = await file.read(settings.max_upload_bytes + 1), file.filename
    elif raw_body_type(request.headers.get("content-type")):
        data, filename = await request.body(), None  # BodySizeLimit bounds what is read
    elif media_type(request.headers.get("content-type")) == "multipart/form-data":
        raise HTTPException(422, await missing_file_field(request))
    else:
        raise HTTPException(422, RAW_OR_MULTIPART)
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload too large; the limit is {settings.max_upload_bytes} bytes")
    return data, filename


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


async def missing_file_field(request: Request) -> str:
    """Why a multipart body gave no field ``file``: it names others, or no part ended (its closing boundary, or
    the end of the part, never came)."""
    fields = sorted(set((await request.form()).keys()))  # parsed already: the form FastAPI read
    if fields:
        return f"no multipart field 'file' (got {', '.join(map(repr, fields[:10]))}); {RAW_OR_MULTIPART}"
    return (
        "the multipart body holds no complete part: it ended before the closing boundary "
        f"(--boundary--) of its field 'file', or has no part at all; {RAW_OR_MULTIPART}"
    )


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type, lower case, without parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def raw_body_type(content_type: str | None) -> bool:
    """Whether a request's Content-Type announces a photo as its raw body (mobile SDKs send it so)."""
    media = media_type(content_type)
    return media.startswith("image/") or media == "application/octet-stream"


def output_filename(upload_name: str | None, fmt: OutputFormat) -> str:
    """``<original stem>-wb.<ext>``, ASCII letters, digits, ``.``, ``_`` and ``-`` only (else ``photo``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(upload_name or "").stem).strip("._") or "photo"
    return f"{stem[:100]}-wb{fmt.suffixes[0]}"
