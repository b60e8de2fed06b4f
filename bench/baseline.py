"""The pipeline as it was before issue 6 (commit 2667fc0), kept verbatim so ``python -m bench`` can
measure before and after in the same run on the same machine. Not used by the service."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from app.imaging import encode as _encode

from model.mapping import OUT_LEVELS, _DECODE, _ENCODE
from model.stats import CLIP_LEVEL, STATS_SIZE

CHUNK_PIXELS = 1 << 20


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


def downsample(img: np.ndarray, max_side: int = STATS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Box-downsample a uint8 ``(H, W, 3)`` photo by an integer factor.

    Returns the small uint8 copy (long side <= ``max_side``) and a boolean clip
    mask marking blocks in which any pixel had a channel >= ``CLIP_LEVEL``.
    Works on views and Pillow's C reduce: memory stays near the small copy.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    f = max(1, -(-max(h, w) // max_side))
    hs, ws = max(1, h // f), max(1, w // f)
    if f == 1:
        return img, (img >= CLIP_LEVEL).any(axis=2)
    if min(h, w) < f:  # a sliver (e.g. 100000 x 1): plain resize, clip mask from the result
        small = np.asarray(Image.fromarray(img).resize((ws, hs), Image.BOX))
        return small, (small >= CLIP_LEVEL).any(axis=2)
    crop = img[:hs * f, :ws * f]
    small = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).reduce(f))
    clipped = np.zeros((hs, ws), dtype=bool)
    step = max(1, (1 << 22) // (ws * f * f * 3))  # block rows per strip: ~4 MB of pixels
    for r0 in range(0, hs, step):  # strips: bounded temporaries
        strip = crop[r0 * f:(r0 + step) * f]
        blocks = strip.reshape(strip.shape[0] // f, f, ws, f, 3)
        clipped[r0:r0 + step] = (blocks.max(axis=(1, 3)) >= CLIP_LEVEL).any(axis=-1)
    return small, clipped


def decode_rgb(data: bytes) -> np.ndarray:
    """The old decode's pixel path for a plain RGB JPEG: transpose copy, convert copy, array copy."""
    im = Image.open(io.BytesIO(data))
    im.load()
    im = ImageOps.exif_transpose(im)
    return np.asarray(im.convert("RGB"))


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """The old encode: PNG with zlib's default strategy (JPEG unchanged)."""
    return _encode(pixels, None, fmt, compress_level=1, png_strategy=0, png_writer="pillow")
