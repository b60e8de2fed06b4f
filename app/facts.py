"""What a correction did, for callers: the JSON of ``POST /analyze`` and the ``X-WB-*`` headers of ``/correct``.

Both say the same: the scene light the model estimated (xy, CCT, Duv), its cast probability, the dead zone's
decision, and the mapping applied (a 3x3 matrix on linear sRGB, with highlight protection) at the asked strength
and white balance.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.corrector import HIGHLIGHT_FULL, HIGHLIGHT_START, Correction

MAPPING_SPACE = "linear sRGB (IEC 61966-2-1 transfer function decoded), D65 white, channels R, G, B"

#: Response headers carrying the facts; browser apps on other origins may read them (CORS ``expose_headers``).
FACT_HEADERS = (
    "X-WB-Illuminant-xy",
    "X-WB-Illuminant-CCT",
    "X-WB-Illuminant-Duv",
    "X-WB-Cast-Probability",
    "X-WB-Dead-Zone",
    "X-WB-Matrix",
    "X-WB-Temperature",
    "X-WB-Tint",
    "X-WB-Adaptation",
    "X-WB-Degree",
)


@dataclass(frozen=True)
class WhiteBalance:
    """The white balance a request asks the photo to be rendered at (``kelvin`` None: the neutral output)."""

    kelvin: float | None = None
    tint: float = 0.0


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def facts(correction: Correction, wb: WhiteBalance) -> dict:
    """The JSON of ``POST /analyze`` for ``correction`` as applied (its strength and render)."""
    light = correction.illuminant
    return {
        "illuminant": {
            "xy": None if light.xy is None else [round(v, 5) for v in light.xy],
            "cct": _round(light.cct, 1),
            "duv": _round(light.duv, 5),
        },
        "cast_probability": round(correction.cast_probability, 4),
        "dead_zone": {
            "decision": correction.dead_zone_decision,
            "white_distance": _round(correction.white_distance, 5),
            "threshold": correction.dead_zone,
            "kept": round(correction.dead_zone_kept, 4),
        },
        "mapping": {
            "space": MAPPING_SPACE,
            "matrix": correction.applied_matrix.astype(float).tolist(),
            "strength": correction.strength,
            "temperature": wb.kelvin,
            "tint": wb.tint,
            "adaptation": correction.adaptation,
            "degree": round(correction.degree, 4),
            "highlights": {"start": HIGHLIGHT_START, "full": HIGHLIGHT_FULL, "gain": correction.highlight_gain},
        },
    }


def fact_headers(correction: Correction, wb: WhiteBalance) -> dict[str, str]:
    """``FACT_HEADERS`` for ``correction`` (``none`` where a value is absent)."""
    f = facts(correction, wb)
    light, mapping = f["illuminant"], f["mapping"]

    def text(value) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return {
        "X-WB-Illuminant-xy": "none" if light["xy"] is None else ",".join(f"{v:.5f}" for v in light["xy"]),
        "X-WB-Illuminant-CCT": text(light["cct"]),
        "X-WB-Illuminant-Duv": text(light["duv"]),
        "X-WB-Cast-Probability": text(f["cast_probability"]),
        "X-WB-Dead-Zone": f["dead_zone"]["decision"],
        "X-WB-Matrix": ",".join(repr(v) for row in mapping["matrix"] for v in row),
        "X-WB-Temperature": text(mapping["temperature"]),
        "X-WB-Tint": text(mapping["tint"]),
        "X-WB-Adaptation": mapping["adaptation"],
        "X-WB-Degree": text(float(mapping["degree"])),
    }
