"""Colour temperature in and out: the illuminant a correction neutralises, and re-rendering to a chosen light.

Chromaticity, CCT, Duv and chromatic adaptation come from ``colour-science`` (Ohno 2013 CCT <-> uv, the von Kries
transform on Hunt-Pointer-Estevez cones, the sRGB primaries); nothing here re-derives them. Every matrix acts on
linear sRGB (D65).

**Re-rendering to K.** The model's neutral output is taken as the photo shot with the white balance set to
``REFERENCE_KELVIN`` (the CCT of D65, tint 0). A camera set to K instead assumes the light was the Planckian
light of K (shifted by ``tint``) and adapts that to white; relative to the neutral output that is the chromatic
adaptation ``CAT_TRANSFORM`` from the light of K to the reference light::

    T_K = XYZ_to_sRGB @ CAT(white of K -> white of REFERENCE_KELVIN) @ sRGB_to_XYZ

Cameras do it with gains on their raw channels; of colour's transforms, von Kries's broad cones come closest
to 15 cameras' own renders at every temperature (``python -m model.training.temperature_report``).

So a setting below the reference makes the photo bluer (a camera set to 3000 K renders daylight blue) and one
above makes it warmer; ``T_REFERENCE_KELVIN`` is the identity. ``tint`` is in the units of photo editors
(Adobe's: 1 unit = 1/3000 Duv): positive tints assume a greener light and so render magenta, negative ones green.
The light of K keeps its luminance (so a 3000 K render of a neutral photo is blue and a little brighter).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from unittest.mock import Mock

import numpy as np


def _import_colour_lean():
    """``colour`` as the serving install has it, without SciPy and Matplotlib: where they are installed (the full
    install) colour would load both at import (about 1 s and 80 MB), for features this module does not use."""
    blocked = [name for name in ("scipy", "matplotlib") if name not in sys.modules]
    before = set(sys.modules)
    try:
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # import fails: colour takes its lean paths
        with warnings.catch_warnings():  # ... and warns that their features are unavailable
            warnings.filterwarnings("ignore", message=r'"(SciPy|Matplotlib)" related API features')
            import colour
    finally:  # drop the blocks and the stand-ins colour registers for what it found absent (scipy, cycler, ...)
        for key in [k for k in sys.modules if k not in before]:
            if sys.modules[key] is None or isinstance(sys.modules[key], Mock):
                del sys.modules[key]
        for name in blocked:
            sys.modules.pop(name, None)
    return colour


colour = _import_colour_lean()

__all__ = [
    "KELVIN_RANGE",
    "PRESETS",
    "REFERENCE_KELVIN",
    "TINT_RANGE",
    "TINT_PER_DUV",
    "Illuminant",
    "adaptation_matrix",
    "illuminant_of",
    "planckian_xy",
    "temperature_matrix",
]

SRGB = colour.models.RGB_COLOURSPACE_sRGB
#: Where a CCT means something: within Ohno 2013's table (1,000-100,000 K) and near the Planckian locus
#: (|Duv| <= 0.05, CIE 015). Outside it ``illuminant_of`` gives no CCT rather than colour's extrapolation.
CCT_DOMAIN = (1000.0, 100000.0)
MAX_ABS_DUV = 0.05
# colour warns on every estimate past the table's end; such estimates get no CCT (above), so the warning is noise.
warnings.filterwarnings(
    "ignore", message="Minimal distance index is on", category=colour.utilities.ColourRuntimeWarning
)
KELVIN_RANGE = (2000.0, 12000.0)
TINT_RANGE = (-150.0, 150.0)
TINT_PER_DUV = 3000.0
#: The chromatic adaptation that renders a white-balance setting: of colour's transforms, the one closest to cameras'
#: own renders (their colour matrix times raw gains; ``python -m model.training.temperature_report``, docs/api.md).
CAT_TRANSFORM = "Von Kries"
#: The Rendered WB dataset's camera presets, in kelvin.
PRESETS = {"tungsten": 2850.0, "fluorescent": 3800.0, "daylight": 5500.0, "cloudy": 6500.0, "shade": 7500.0}


def _cct_duv(xy: np.ndarray) -> tuple[float, float]:
    cct, duv = colour.temperature.uv_to_CCT_Ohno2013(colour.xy_to_UCS_uv(np.asarray(xy, np.float64)))
    return float(cct), float(duv)


#: The CCT of D65, the white of the model's neutral output (about 6504 K).
REFERENCE_KELVIN = round(_cct_duv(SRGB.whitepoint)[0])


def planckian_xy(kelvin: float, tint: float = 0.0) -> np.ndarray:
    """CIE 1931 xy of the Planckian light of ``kelvin``, moved off the locus by ``tint`` (Duv = tint / 3000)."""
    uv = colour.temperature.CCT_to_uv_Ohno2013(np.array([kelvin, tint / TINT_PER_DUV], np.float64))
    return np.asarray(colour.UCS_uv_to_xy(uv), np.float64)


@lru_cache(maxsize=256)
def adaptation_matrix(kelvin: float, tint: float = 0.0, transform: str = CAT_TRANSFORM) -> np.ndarray:
    """(3, 3) linear sRGB, read-only: colour's von Kries-type ``transform`` from the Planckian light of ``kelvin``
    (moved by ``tint``) to that of ``REFERENCE_KELVIN``, no range check (``temperature_matrix`` has one)."""
    source = colour.xy_to_XYZ(planckian_xy(kelvin, tint))
    target = colour.xy_to_XYZ(planckian_xy(REFERENCE_KELVIN))
    cat = colour.adaptation.matrix_chromatic_adaptation_VonKries(source, target, transform=transform)
    m = SRGB.matrix_XYZ_to_RGB @ cat @ SRGB.matrix_RGB_to_XYZ
    m.flags.writeable = False
    return m


def temperature_matrix(kelvin: float, tint: float = 0.0) -> np.ndarray:
    """(3, 3) float64 linear-sRGB matrix rendering the neutral output as a camera set to ``kelvin`` and ``tint``.

    ``ValueError`` outside ``KELVIN_RANGE`` / ``TINT_RANGE``.
    """
    lo, hi = KELVIN_RANGE
    if not (math.isfinite(kelvin) and lo <= kelvin <= hi):
        raise ValueError(f"temperature must lie in [{lo:g}, {hi:g}] K, got {kelvin}")
    if not (math.isfinite(tint) and TINT_RANGE[0] <= tint <= TINT_RANGE[1]):
        raise ValueError(f"tint must lie in [{TINT_RANGE[0]:g}, {TINT_RANGE[1]:g}], got {tint}")
    return adaptation_matrix(float(kelvin), float(tint))


@dataclass(frozen=True)
class Illuminant:
    """A light's chromaticity (CIE 1931 xy), correlated colour temperature (K) and Duv (Ohno 2013)."""

    xy: tuple[float, float] | None  # None (and so CCT and Duv) where the estimate is not a light colour
    # cct is also None where a channel of the estimate is not positive, or off ``CCT_DOMAIN`` / ``MAX_ABS_DUV``
    cct: float | None
    duv: float | None


def illuminant_of(matrix: np.ndarray) -> Illuminant:
    """The light a linear-sRGB correction neutralises: the colour it maps to neutral, ``M^-1 (1, 1, 1)``."""
    rgb = np.linalg.solve(np.asarray(matrix, np.float64), np.ones(3))
    xyz = SRGB.matrix_RGB_to_XYZ @ rgb
    total = float(xyz.sum())
    if not (total > 0 and np.all(np.isfinite(xyz))):
        return Illuminant(None, None, None)
    xy = (float(xyz[0] / total), float(xyz[1] / total))
    if not np.all(rgb > 0):
        return Illuminant(xy, None, None)
    cct, duv = _cct_duv(np.array(xy))
    if CCT_DOMAIN[0] <= cct <= CCT_DOMAIN[1] and abs(duv) <= MAX_ABS_DUV:  # False for NaN too
        return Illuminant(xy, cct, duv)
    return Illuminant(xy, None, None)
