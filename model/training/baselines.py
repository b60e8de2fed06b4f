"""Statistical white-balance baselines: gray world, white patch, shades of gray.

Each baseline estimates the illuminant ``e`` (an RGB triple in linear sRGB)
from the image and applies a diagonal (von Kries) correction ``diag(k / e)``
in linear sRGB: the illuminant maps to the neutral ``(k, k, k)``. The scale
``k`` keeps the illuminant's brightness so exposure barely changes:

- ``preserve="mean"`` (default): ``k = mean(e)``, the mean of its channels;
- ``preserve="luminance"``: ``k = Y(e)`` with Rec. 709 weights.

Measured on ``shared/data/real-pairs`` (mean dE2000, chart excluded), the
default reproduces the reference numbers of ``shared/data/README.md`` (gray
world 6.03, white patch 5.37, shades of gray 5.26) to within 0.03; the
Rec. 709 luminance variant scores 6.35 / 5.66 / 5.56 there (the ground truths
are slightly brighter than that variant leaves the images; dE2000 counts
lightness), so it is available but not the default.

Estimates ignore pixels that are clipped (any channel >= :data:`CLIP_LEVEL`)
or near-black (every channel <= :data:`DARK_LEVEL`, which also drops blacked-
out colour charts). All statistics are computed from per-channel 256-bin
histograms and the correction is applied through per-channel 256-entry lookup
tables (a diagonal map acts on each channel alone), so a 12-megapixel photo
takes a fraction of a second and little memory.

Estimators (van de Weijer & Gevers' framework; Finlayson & Trezzi 2004 for
shades of gray):

- gray world: mean of each channel (Minkowski p = 1);
- shades of gray: Minkowski p-norm, p = 6;
- white patch: the 99th percentile of each channel (robust max-RGB).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.colour import LUMA_709, linear_to_srgb, srgb_to_linear

__all__ = [
    "CLIP_LEVEL",
    "DARK_LEVEL",
    "valid_pixels",
    "channel_histograms",
    "estimate_gray_world",
    "estimate_shades_of_gray",
    "estimate_white_patch",
    "gains_for_illuminant",
    "apply_gains",
    "gray_world",
    "white_patch",
    "shades_of_gray",
    "identity",
    "BASELINES",
]

CLIP_LEVEL = 250  # a pixel with any channel >= this (0..255) is treated as clipped
DARK_LEVEL = 5  # a pixel with every channel <= this is treated as near-black

# Linear value of each 8-bit sRGB code.
_LUT_LINEAR = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float64)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {img.shape} dtype {img.dtype}")
    return img


def valid_pixels(img: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 pixels usable for illuminant estimation.

    Falls back to all non-black pixels (then all pixels) when the exclusions
    would leave nothing.
    """
    img = _check_image(img)
    flat = img.reshape(-1, 3)
    hi = flat.max(axis=1)
    keep = (hi < CLIP_LEVEL) & (hi > DARK_LEVEL)
    if not keep.any():
        keep = hi > 0
    if not keep.any():
        return flat
    return flat[keep]


def channel_histograms(img: np.ndarray) -> np.ndarray:
    """``(3, 256)`` counts of each code value per channel over :func:`valid_pixels`."""
    px = valid_pixels(img)
    return np.stack([np.bincount(px[:, c], minlength=256) for c in range(3)]).astype(np.float64)


def estimate_shades_of_gray(img: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Illuminant (linear RGB, shape (3,)) as the Minkowski p-norm mean of each channel."""
    h = channel_histograms(img)
    n = h.sum(axis=1)
    return (h @ (_LUT_LINEAR**p) / n) ** (1.0 / p)


def estimate_gray_world(img: np.ndarray) -> np.ndarray:
    """Illuminant (linear RGB, shape (3,)) as the mean of each channel."""
    return estimate_shades_of_gray(img, p=1.0)


def estimate_white_patch(img: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Illuminant (linear RGB, shape (3,)) as a high percentile of each channel."""
    h = channel_histograms(img)
    out = np.empty(3)
    for c in range(3):
        cdf = np.cumsum(h[c]) / h[c].sum()
        code = int(np.searchsorted(cdf, percentile / 100.0, side="left"))
        out[c] = _LUT_LINEAR[min(code, 255)]
    return out


def gains_for_illuminant(e: np.ndarray, preserve: str = "mean") -> np.ndarray:
    """Diagonal gains ``k / e`` mapping illuminant ``e`` (linear RGB) to a neutral.

    ``preserve="mean"``: ``k`` is the mean of ``e``'s channels; ``"luminance"``:
    ``k = Y(e)`` (Rec. 709), the neutral has the illuminant's luminance.
    """
    e = np.maximum(np.asarray(e, dtype=np.float64), 1e-6)
    if preserve == "mean":
        k = float(e.mean())
    elif preserve == "luminance":
        k = float(np.dot(LUMA_709, e))
    else:
        raise ValueError(f"preserve must be 'mean' or 'luminance', got {preserve!r}")
    return k / e


def apply_gains(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Apply per-channel gains in linear sRGB to a uint8 sRGB image (clips at white)."""
    img = _check_image(img)
    lin = _LUT_LINEAR[None, :] * np.asarray(gains, dtype=np.float64)[:, None]  # (3, 256)
    tables = np.round(linear_to_srgb(lin) * 255.0).clip(0, 255).astype(np.uint8)  # (3, 256)
    out = np.empty_like(img)
    for c in range(3):
        out[..., c] = tables[c][img[..., c]]
    return out


def _diagonal(estimator: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def correct(img: np.ndarray) -> np.ndarray:
        return apply_gains(img, gains_for_illuminant(estimator(img)))

    correct.__name__ = estimator.__name__.replace("estimate_", "")
    correct.__doc__ = f"Diagonal correction in linear sRGB from :func:`{estimator.__name__}`."
    return correct


gray_world = _diagonal(estimate_gray_world)
white_patch = _diagonal(estimate_white_patch)
shades_of_gray = _diagonal(estimate_shades_of_gray)


def identity(img: np.ndarray) -> np.ndarray:
    """No correction (returns a copy)."""
    return _check_image(img).copy()


#: Baseline name -> corrector ``uint8 (H, W, 3) -> uint8 (H, W, 3)``.
BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": identity,
    "gray world": gray_world,
    "white patch": white_patch,
    "shades of gray": shades_of_gray,
}
