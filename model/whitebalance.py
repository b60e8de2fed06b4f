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

**Incomplete adaptation (``adaptation="natural"``).** The eye does not fully adapt to a warm light: a candle-lit
face or a tungsten-lit room stays warm to the people in it. The degree of adaptation D is taken from a published
model of D as a function of the adapting light's chromaticity, Smet, Zhai, Luo & Hanselaer (2017), "Study of
chromatic adaptation using memory color matches, Part II: colored illuminants", Opt. Express 25(7), 8350-8365,
doi:10.1364/OE.25.008350 (``degree_of_adaptation``: a bivariate Gaussian in log MacLeod-Boynton coordinates of
Hunt-Pointer-Estevez cones, their parameters ``SMET2017_D_PARAMETERS``). The later studies of neutral-white matches
the issue names (Zhai & Luo 2018, Opt. Express 26(6) 7724; Wei & Chen 2019, Opt. Express 27(6) 9276; Chen & Wei,
CIC 27, 2019) report D lower under 2700-3500 K lights and rising with luminance, but no closed-form D(CCT) with
parameters could be found here; Smet 2017 is the closest published relation with its parameters (same group as
Zhai & Luo, the same finding: D falls as the light departs from daylight toward warm). Its one free parameter,
``Dmax``, is set to 1 (``SMET2017_D_MAX``): the published 0.6539 is the maximum measured in that experiment's dark
surround, which the model's authors note is probably too low for ordinary viewing; with 1, a light of the peak's
chromaticity (near D65) is adapted to fully, so daylight photos come out as ``full`` does.

The white the eye keeps is Zhai & Luo (2018)'s two-step CAT (``colour.adaptation.chromatic_adaptation_Zhai2018``,
CAT02, baseline illuminant E) from the estimated light (degree D) to D65 (degree D of D65): the light's own white
seen under it, as its corresponding colour under D65 (``corresponding_white``). ``natural_matrix`` renders the
neutral output so that its white lands there, the same von Kries render as ``temperature_matrix``::

    N = XYZ_to_sRGB @ CAT(D65 -> corresponding white, luminance 1) @ sRGB_to_XYZ
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
    "ADAPTATIONS",
    "KELVIN_RANGE",
    "PRESETS",
    "REFERENCE_KELVIN",
    "TINT_RANGE",
    "TINT_PER_DUV",
    "Illuminant",
    "adaptation_matrix",
    "corresponding_white",
    "degree_of_adaptation",
    "illuminant_of",
    "natural_matrix",
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


#: How far the output adapts to the estimated light: ``full`` (to neutral: the model's correction as trained) or
#: ``natural`` (incompletely, as the eye does: ``natural_matrix``).
ADAPTATIONS = ("full", "natural")
#: Smet et al. (2017)'s D model: Hunt-Pointer-Estevez cones (the matrix normalised to illuminant E, with which the
#: parameters were derived), and the parameters of the Gaussian in (ln r, ln b), r = L/(L+M), b = S/(L+M):
#: covariance [[p0, p4], [p4, p1]], mean (p2, p3), exponent p5 (as published; luxpy's ``cat.smet2017_D``).
SMET2017_HPE = np.array([[0.38971, 0.68898, -0.07868], [-0.22981, 1.18340, 0.04641], [0.0, 0.0, 1.0]])
SMET2017_D_PARAMETERS = 1.0e7 * np.array(
    [
        0.021081326530436,
        4.751255762876845,
        -0.000000071025181,
        -0.000000063627042,
        -0.146952821492957,
        3.117390441655821,
    ]
)
#: ``Dmax``: 1, not the 0.6539 measured in the experiment's dark surround (module docstring).
SMET2017_D_MAX = 1.0
D65_XYZ = colour.xy_to_XYZ(SRGB.whitepoint)


def degree_of_adaptation(xy) -> float:
    """D in [0, 1] for a light of CIE 1931 ``xy`` (Smet et al. 2017; the model was fitted on 10-degree data, the
    2-degree chromaticity is used as is): about 0.53 at 2850 K, 0.75 at 3500 K, 0.97 at 5000 K, 1.0 near D65."""
    p = SMET2017_D_PARAMETERS
    lms = SMET2017_HPE @ colour.xy_to_XYZ(np.asarray(xy, np.float64))
    if not np.all(lms > 0):
        raise ValueError(f"no cone response for a light at xy {tuple(xy)}")
    x = np.log([lms[0] / (lms[0] + lms[1]), lms[2] / (lms[0] + lms[1])]) - p[2:4]
    inverse = np.linalg.inv(np.array([[p[0], p[4]], [p[4], p[1]]]))
    return float(np.clip(SMET2017_D_MAX * np.exp(-0.5 * x @ inverse @ x) ** p[5], 0.0, 1.0))


def corresponding_white(xy) -> np.ndarray:
    """CIE 1931 xy of the colour under D65 that looks as the white of a light at ``xy`` looks to an observer
    adapted to it to the degree ``degree_of_adaptation`` (Zhai & Luo 2018's two-step CAT, CAT02, baseline E)."""
    white = colour.xy_to_XYZ(np.asarray(xy, np.float64)) * 100
    seen = colour.adaptation.chromatic_adaptation_Zhai2018(
        white,
        white,
        D65_XYZ * 100,
        D_b=degree_of_adaptation(xy),
        D_d=degree_of_adaptation(SRGB.whitepoint),
        XYZ_wo=np.array([100.0, 100.0, 100.0]),
        transform="CAT02",
    )
    return np.asarray(colour.XYZ_to_xy(seen), np.float64)


@lru_cache(maxsize=1024)
def _natural_matrix(x: float, y: float) -> np.ndarray:
    target = colour.xy_to_XYZ(corresponding_white((x, y)))
    cat = colour.adaptation.matrix_chromatic_adaptation_VonKries(D65_XYZ, target, transform=CAT_TRANSFORM)
    m = SRGB.matrix_XYZ_to_RGB @ cat @ SRGB.matrix_RGB_to_XYZ
    m.flags.writeable = False
    return m


def natural_matrix(xy) -> np.ndarray:
    """(3, 3) linear sRGB, read-only: renders a neutral output so that its white (luminance kept) lands on the
    ``corresponding_white`` of a light at ``xy``; applied after the full correction it keeps the light's mood."""
    return _natural_matrix(round(float(xy[0]), 6), round(float(xy[1]), 6))
