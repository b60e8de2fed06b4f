"""POST /analyze: what the model saw in a photo and the mapping ``/correct`` would apply, as JSON, no pixels.

A thumbnail is enough: the model reads a photo only through its 256 px thumbnail (``model.stats.thumbnail``), so a
mobile app that sends that thumbnail gets the photo's own mapping to apply on the device (docs/api.md).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Security, UploadFile

from app.codec import ACCEPTED_NAMES
from app.deps import AdaptationDep, GateDep, MetricsDep, ModelDep, SettingsDep, WhiteBalanceDep, bearer_key
from app.facts import facts
from app.pipeline import Options, Upload
from app.routes.correction import PHOTO_BODY, UPLOAD_ERRORS, read_photo, unless_client_leaves

router = APIRouter()


@router.post(
    "/analyze",
    tags=["correction"],
    dependencies=[Security(bearer_key)],
    openapi_extra=PHOTO_BODY,
    responses=UPLOAD_ERRORS,
)
async def analyze(
    model: ModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: GateDep,
    wb: WhiteBalanceDep,
    adaptation: AdaptationDep,
    request: Request,
    file: Annotated[UploadFile | None, File(description=f"The photo or a thumbnail of it ({ACCEPTED_NAMES})")] = None,
    strength: Annotated[float, Query(ge=0, le=1, description="0: unchanged, 1: full")] = 1.0,
) -> dict:
    """The scene light the model estimated (xy, CCT, Duv), its cast probability, the dead zone's decision, and the
    3x3 linear-sRGB mapping ``/correct`` applies with the same parameters."""
    deadline = time.monotonic() + settings.request_timeout_s
    data, _ = await read_photo(request, file, settings)
    upload = Upload(
        model,
        data,
        Options(None, strength=strength, kelvin=wb.kelvin, tint=wb.tint, adaptation=adaptation),
        request.app.state.limits,
    )
    result = await unless_client_leaves(request, gate.run(upload, deadline))
    metrics.record_estimate(result.correction.illuminant.cct, result.correction.dead_zone_decision, adaptation)
    return facts(result.correction, wb)
