"""Corrections of grayscale photos (8 or 16 bits): the matrix's effect on neutral pixels.

A grayscale pixel is the neutral linear colour ``(y, y, y)``; a linear-RGB
matrix ``M`` maps it to ``y * (M @ 1)``, whose Rec. 709 luminance is
``y * gain`` with ``gain = LUMA_709 @ M @ 1``. So a grayscale photo stays
grayscale and gets the exposure change the correction implies, at its own
bit depth, with no colour invented.
"""

from __future__ import annotations

import numpy as np

from model.colour import LUMA_709, linear_to_srgb, srgb_to_linear

CHUNK_PIXELS = 1 << 20


def gray_gain(matrix: np.ndarray) -> float:
    """Luminance gain ``LUMA_709 @ M @ (1, 1, 1)`` of a 3x3 linear-RGB matrix on neutral pixels."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {m.shape}")
    return float(np.asarray(LUMA_709) @ m @ np.ones(3))


def apply_gray_gain(gray: np.ndarray, gain: float, chunk_pixels: int = CHUNK_PIXELS) -> np.ndarray:
    """Scale a uint8 or uint16 ``(H, W)`` sRGB-encoded grayscale image by ``gain`` in linear light.

    Same dtype out; values clipped to the dtype's range. ``gain == 1`` returns an exact copy.
    """
    if gray.ndim != 2 or gray.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 (H, W) array, got {gray.dtype} {gray.shape}")
    if gain == 1.0:
        return gray.copy()
    top = float(np.iinfo(gray.dtype).max)
    flat = gray.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, chunk_pixels):
        block = srgb_to_linear(flat[start : start + chunk_pixels].astype(np.float32) / top)
        out[start : start + chunk_pixels] = np.round(linear_to_srgb(block * np.float32(gain)) * top).astype(gray.dtype)
    return out.reshape(gray.shape)
