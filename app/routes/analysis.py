"""POST /analyze: what the model saw in a photo and the mapping ``/correct`` would apply, as JSON, no pixels.

A thumbnail is enough: the model reads a 64 px copy, so a 256 px upload gives a mobile app the mapping to apply to
the full photo on the device (docs/api.md).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Security, UploadFile

from app.codec import ACCEPTED_NAMES
from app.deps import GateDep, MetricsDep, ModelDep, SettingsDep, WhiteBalanceDep, bearer_key
from app.facts import facts
from app.pipeline import Options, Upload
from app.routes.correction import read_photo, unless_client_leaves

router = APIRouter()


@router.post(
    "/analyze",
    tags=["correction"],
    dependencies=[Security(bearer_key)],
    openapi_extra={
        "requestBody": {
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/*", "application/octet-stream")
            }
        }
    },
    responses={
        401: {"description": "API keys are configured and the request has no valid Bearer key"},
        413: {"description": "Upload or image over the configured limits"},
        415: {"description": "Not a supported image"},
        422: {"description": "Empty, missing or corrupt upload, or a bad parameter"},
        503: {"description": "Model loading, queue full or GPU out of memory; see Retry-After"},
        504: {"description": "Not done within the request timeout"},
    },
)
async def analyze(
    model: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: GateDep,
    wb: WhiteBalanceDep,
    request: Request,
    file: Annotated[UploadFile | None, File(description=f"The photo or a thumbnail of it ({ACCEPTED_NAMES})")] = None,
    strength: Annotated[float, Query(ge=0, le=1, description="0: unchanged, 1: full")] = 1.0,
) -> dict:
    """The scene light the model estimated (xy, CCT, Duv), its cast probability, the dead zone's decision, and the
    3x3 linear-sRGB mapping ``/correct`` applies with the same parameters."""
    deadline = time.monotonic() + settings.request_timeout_s
    data, _ = await read_photo(request, file, settings)
    upload = Upload(
        model, data, Options(None, strength=strength, kelvin=wb.kelvin, tint=wb.tint), request.app.state.limits
    )
    result = await unless_client_leaves(request, gate.run(upload, deadline))
    metrics.record_estimate(result.correction.illuminant.cct, result.correction.dead_zone_decision)
    return facts(result.correction, wb)
