"""The routes' dependencies: what the lifespan built (settings, metrics, the gate, the model), and the output format
a request asks for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPBearer

from app.batcher import ModelBatcher
from app.codec import DEFAULT_FORMAT, FORMATS, OutputFormat, format_for_media_type, output_format
from app.facts import WhiteBalance
from app.gate import CorrectionGate
from app.metrics import Metrics
from app.settings import Settings
from model.corrector import ADAPTATIONS, KELVIN_RANGE, PRESETS, TINT_RANGE, Corrector


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_gate(request: Request) -> CorrectionGate:
    return request.app.state.gate


def get_corrector(request: Request) -> Corrector:
    """The loaded, warmed-up Corrector; 503 until then."""
    if not request.app.state.ready:
        raise HTTPException(503, "model is loading; retry shortly", headers={"Retry-After": "5"})
    return request.app.state.corrector


def get_model(request: Request, corrector: Annotated[Corrector, Depends(get_corrector)]) -> Corrector | ModelBatcher:
    """Where a correction's estimate comes from: the batcher when batching is on, else the Corrector itself."""
    return request.app.state.batcher or corrector


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


def get_white_balance(
    temperature: Annotated[
        float | None,
        Query(
            ge=KELVIN_RANGE[0],
            le=KELVIN_RANGE[1],
            description="Render the corrected photo as a camera set to this white balance would, in kelvin "
            "(lower: bluer). Default: the neutral correction.",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        Query(
            description="A named white balance instead of temperature: "
            + ", ".join(f"{k} ({v:g} K)" for k, v in PRESETS.items())
        ),
    ] = None,
    tint: Annotated[
        float,
        Query(
            ge=TINT_RANGE[0],
            le=TINT_RANGE[1],
            description="Green (-) to magenta (+), in photo editors' units (1/3000 Duv); with temperature or preset, "
            "or alone (around the neutral output).",
        ),
    ] = 0.0,
) -> WhiteBalance:
    """``temperature`` or ``preset`` (not both), and ``tint``; 422 with a detail otherwise."""
    if temperature is not None and preset is not None:
        raise HTTPException(422, "give temperature or preset, not both")
    if preset is not None:
        kelvin = PRESETS.get(preset.strip().lower())
        if kelvin is None:
            raise HTTPException(422, f"unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
        temperature = kelvin
    return WhiteBalance(temperature, tint)


def get_adaptation(
    adaptation: Annotated[
        str,
        Query(
            description="full: the light's white to neutral (default); natural: incomplete adaptation, as the eye "
            "does, keeping a warm light's mood (D from Smet et al. 2017; docs/api.md)"
        ),
    ] = "full",
) -> str:
    """``adaptation``: one of ``ADAPTATIONS`` (any case); 422 with a detail otherwise."""
    value = adaptation.strip().lower()
    if value not in ADAPTATIONS:
        raise HTTPException(422, f"unknown adaptation {adaptation!r}; expected one of: {', '.join(ADAPTATIONS)}")
    return value


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
GateDep = Annotated[CorrectionGate, Depends(get_gate)]
CorrectorDep = Annotated[Corrector, Depends(get_corrector)]
ModelDep = Annotated[Corrector | ModelBatcher, Depends(get_model)]
FormatDep = Annotated[OutputFormat, Depends(get_output_format)]
WhiteBalanceDep = Annotated[WhiteBalance, Depends(get_white_balance)]
AdaptationDep = Annotated[str, Depends(get_adaptation)]
