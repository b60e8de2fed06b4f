"""Full-resolution application (and least-squares estimation) of a linear-RGB 3x3 correction.

``apply_matrix`` maps every pixel of a uint8 sRGB photo through
sRGB -> linear (256-entry table) -> 3x3 matrix -> sRGB (65,536-entry table),
in chunks of ``CHUNK_PIXELS`` so peak extra memory is bounded whatever the
photo's size: about ``CHUNK_PIXELS`` x 3 x (4 + 8 + 4) bytes (~50 MB) plus the
uint8 output. The tables make the identity matrix bit-exact.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from model.colour import linear_to_srgb, srgb_to_linear

CHUNK_PIXELS = 1 << 20
OUT_LEVELS = 65535

_DECODE = torch.from_numpy(srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0))
_ENCODE = torch.from_numpy(
    np.round(linear_to_srgb(np.arange(OUT_LEVELS + 1, dtype=np.float64) / OUT_LEVELS) * 255.0).astype(np.uint8))


def apply_matrix(img: np.ndarray, matrix: np.ndarray | torch.Tensor, chunk_pixels: int = CHUNK_PIXELS) -> np.ndarray:
    """Apply a 3x3 linear-RGB matrix to a uint8 ``(H, W, 3)`` sRGB image; returns a new uint8 array."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float32) if not isinstance(matrix, torch.Tensor) else matrix)
    m = m.detach().to("cpu", torch.float32)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {tuple(m.shape)}")
    with warnings.catch_warnings():  # read-only input is fine: it is only read
        warnings.simplefilter("ignore", UserWarning)
        src = torch.from_numpy(np.ascontiguousarray(img)).view(-1, 3)
    out = torch.empty_like(src)
    mt = m.T.contiguous()
    for start in range(0, src.shape[0], chunk_pixels):
        block = _DECODE[src[start:start + chunk_pixels].long()]          # (n, 3) linear
        mapped = (block @ mt).clamp_(0.0, 1.0).mul_(OUT_LEVELS).round_()  # (n, 3) table index
        out[start:start + chunk_pixels] = _ENCODE[mapped.long()]
    return out.view(img.shape).numpy()


def fit_matrix(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Least-squares 3x3 linear-RGB matrix M with ``target ~ M @ source`` (uint8 sRGB images).

    Clipped (any channel 255) and masked-out pixels are ignored.
    """
    s = srgb_to_linear(source.reshape(-1, 3) / 255.0)
    t = srgb_to_linear(target.reshape(-1, 3) / 255.0)
    keep = (source.reshape(-1, 3).max(1) < 255) & (target.reshape(-1, 3).max(1) < 255)
    if mask is not None:
        keep &= mask.reshape(-1)
    if keep.sum() < 3:
        raise ValueError("need at least 3 unclipped pixels to fit a matrix")
    sol, *_ = np.linalg.lstsq(s[keep], t[keep], rcond=None)
    return sol.T.astype(np.float32)
