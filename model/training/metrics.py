"""Per-image error metrics of the Rendered WB evaluation protocol (docs/accuracy.md, "Protocol").

Every metric takes ``(corrected, truth, mask)``: two ``(H, W, 3)`` uint8 sRGB
images of the same shape and a ``(H, W)`` bool array, True for the pixels to
score (colour chart / calibration object and pixels that are all-zero in both
images excluded; see :func:`model.training.eval_sets.load_pair`). Each returns one float:

- :func:`mse`: mean over scored pixels and channels of the squared error on
  0..255.
- :func:`mae`: mean angle in degrees between the corrected and true RGB
  vectors; a pixel where either vector is zero scores 0, as in the published
  code (Afifi et al., ``WB_sRGB/evaluation/calc_mae``).
- :func:`delta_e2000` / :func:`delta_e76`: per-pixel colour difference in
  CIELab (D65, 2° observer; scikit-image ``rgb2lab`` then ``deltaE_ciede2000``
  / ``deltaE_cie76``), then the mean.

The published code divides sums over the whole image by (pixel count minus the
chart's area); with the chart blacked out in both images that equals the mean
over the scored pixels used here.

Memory: the scored pixels are processed in chunks of :data:`CHUNK_PIXELS`, so a
12-megapixel image never needs more than a few tens of MB of float64 scratch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab

__all__ = [
    "CHUNK_PIXELS",
    "CLIPPED_LEVEL",
    "CRUSHED_LEVEL",
    "METRICS",
    "all_metrics",
    "clipped_or_crushed",
    "colour_ratio",
    "colourfulness",
    "delta_e2000",
    "delta_e76",
    "hue_error",
    "mae",
    "mse",
    "summarise",
]

CHUNK_PIXELS = 1 << 19  # pixels per chunk (~12 MB per float64 (n, 3) array)


def _check(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    corrected = np.asarray(corrected)
    truth = np.asarray(truth)
    if corrected.shape != truth.shape or corrected.ndim != 3 or corrected.shape[-1] != 3:
        raise ValueError(f"expected two (H, W, 3) images of the same shape, got {corrected.shape} and {truth.shape}")
    if corrected.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {corrected.dtype} and {truth.dtype}")
    if mask is None:
        return np.ones(corrected.shape[:2], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != corrected.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {corrected.shape[:2]}")
    if not mask.any():
        raise ValueError("mask selects no pixels to score")
    return mask


def _chunks(
    corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(a, b)`` uint8 ``(n, 3)`` chunks of the scored pixels."""
    mask = _check(corrected, truth, mask)
    a = corrected[mask]  # (N, 3) uint8
    b = truth[mask]
    for start in range(0, a.shape[0], CHUNK_PIXELS):
        yield a[start : start + CHUNK_PIXELS], b[start : start + CHUNK_PIXELS]


def _sums(corrected, truth, mask, which: tuple[str, ...]) -> dict[str, float]:
    """One chunked pass accumulating the requested metrics' per-pixel sums; returns their means."""
    totals = dict.fromkeys(which, 0.0)
    count = 0
    for a8, b8 in _chunks(corrected, truth, mask):
        count += a8.shape[0]
        a = a8.astype(np.float64)
        b = b8.astype(np.float64)
        if "mse" in totals:
            d = a - b
            totals["mse"] += float(np.sum(d * d)) / 3.0  # per pixel: mean over the 3 channels
        if "mae" in totals:
            # atan2(|a x b|, a . b): exact 0 for parallel integer vectors, unlike arccos of the
            # normalised dot product; 0 where either vector is zero (both terms vanish).
            cross = np.linalg.norm(np.cross(a, b), axis=1)
            totals["mae"] += float(np.degrees(np.arctan2(cross, np.sum(a * b, axis=1))).sum())
        if "de2000" in totals or "de76" in totals:
            lab_a = rgb2lab(a / 255.0, illuminant="D65", observer="2", channel_axis=-1)
            lab_b = rgb2lab(b / 255.0, illuminant="D65", observer="2", channel_axis=-1)
            if "de2000" in totals:
                totals["de2000"] += float(np.sum(deltaE_ciede2000(lab_b, lab_a, channel_axis=-1)))
            if "de76" in totals:
                totals["de76"] += float(np.sum(deltaE_cie76(lab_b, lab_a, channel_axis=-1)))
    return {k: v / count for k, v in totals.items()}


def mse(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over scored pixels and channels, on 0..255."""
    return _sums(corrected, truth, mask, ("mse",))["mse"]


def mae(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean angular error in degrees between corrected and true RGB vectors.

    Pixels where either vector is zero count as 0° (published convention).
    """
    return _sums(corrected, truth, mask, ("mae",))["mae"]


def delta_e2000(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean CIEDE2000 colour difference (kL = kC = kH = 1) over scored pixels."""
    return _sums(corrected, truth, mask, ("de2000",))["de2000"]


def delta_e76(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean CIE76 colour difference (Euclidean distance in Lab) over scored pixels."""
    return _sums(corrected, truth, mask, ("de76",))["de76"]


#: Metric name (as used in CSV columns) -> function.
METRICS = {"mse": mse, "mae": mae, "de2000": delta_e2000, "de76": delta_e76}


def all_metrics(corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """All four metrics of one image, keyed as in :data:`METRICS`."""
    return _sums(corrected, truth, mask, tuple(METRICS))


def summarise(values: Iterable[float]) -> dict[str, float]:
    """Mean, first quartile, median and third quartile over images.

    Quartiles use NumPy's default linear interpolation; on the published Deep
    WB Set 2 errors it agrees with the published MATLAB summary to 0.001.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarise() needs at least one value")
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "q1": float(q1), "median": float(q2), "q3": float(q3)}


# --------------------------------------------------------------------------
# Colour: what a mean error does not see (issue "Keep the colour", docs/accuracy.md).

CLIPPED_LEVEL = 250  # a pixel with a channel at or above this level was clipped ...
CRUSHED_LEVEL = 3  # ... at or below this, crushed


def clipped_or_crushed(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of uint8 ``img`` with a channel at or above ``CLIPPED_LEVEL`` or at or below
    ``CRUSHED_LEVEL`` (their colour is lost: a loss or a fit must not learn from them)."""
    img = np.asarray(img)
    return (img.max(axis=-1) >= CLIPPED_LEVEL) | (img.min(axis=-1) <= CRUSHED_LEVEL)


def colourfulness(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Colourfulness of uint8 sRGB ``img`` (Hasler & Suesstrunk 2003, eq. 3): with ``rg = R - G`` and
    ``yb = (R + G) / 2 - B``, ``sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)`` over ``mask``.
    0 for a gray image; about 30-60 for typical photos."""
    px = np.asarray(img, dtype=np.float64).reshape(-1, 3)
    if mask is not None:
        px = px[np.asarray(mask, dtype=bool).reshape(-1)]
    if len(px) == 0:
        return 0.0
    rg = px[:, 0] - px[:, 1]
    yb = 0.5 * (px[:, 0] + px[:, 1]) - px[:, 2]
    return float(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def colour_ratio(img: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``colourfulness(img) / colourfulness(reference)`` over ``mask``: 1 keeps the reference's colour, 0 is gray."""
    return colourfulness(img, mask) / max(colourfulness(reference, mask), 1e-6)


def hue_error(
    corrected: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None, min_chroma: float = 15.0
) -> float:
    """Mean absolute CIELab hue-angle difference (degrees) over the pixels whose truth is chromatic
    (C*ab >= ``min_chroma``): does orange stay orange. NaN when no pixel is chromatic."""
    valid = _check(corrected, truth, mask)
    total, count = 0.0, 0
    for c, t in _chunks(corrected, truth, valid):
        lab_c, lab_t = rgb2lab(c), rgb2lab(t)
        chromatic = np.hypot(lab_t[:, 1], lab_t[:, 2]) >= min_chroma
        if not chromatic.any():
            continue
        h_c = np.arctan2(lab_c[chromatic, 2], lab_c[chromatic, 1])
        h_t = np.arctan2(lab_t[chromatic, 2], lab_t[chromatic, 1])
        total += float(np.degrees(np.abs(np.angle(np.exp(1j * (h_c - h_t))))).sum())
        count += int(chromatic.sum())
    return total / count if count else float("nan")
