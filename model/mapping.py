"""Full-resolution application (and least-squares estimation) of a linear-RGB 3x3 correction.

``apply_matrix`` maps every pixel of a uint8 sRGB photo through
sRGB -> linear (256-entry table) -> 3x3 matrix -> sRGB (65,536-entry table).
The first two steps are folded into three small tables, one per input
channel: ``T_k[v] = M[:, k] * linear(v) * 65535`` (256 rows of 3 floats), so a
pixel's table index is ``(T_0[r] + T_1[g]) + T_2[b]`` (float32, in that order).
The CPU path goes further (``_tables``, cached per matrix): the first sum is a
65,536-row table indexed by the pixel's ``r, g`` bytes read as one little-endian
uint16, so a pixel costs two row gathers and one add. Rows are padded to 4 floats
(16-byte rows gather several times faster than 12-byte ones in ``np.take``); the
padding lane counts channels at or above ``HIGHLIGHT_START``, which finds the
highlight pixels for free. The padded sums are packed back to 3 floats with
overlapping 16-byte stores, then rounded, and the encode gather's ``mode="clip"``
clamps the indices (``clip(rint(x)) == rint(clip(x))`` for integer bounds), so
the result is bit-identical to gather, add, clip, rint, encode. The work goes in
chunks of ``CHUNK_PIXELS`` with preallocated buffers (about ``CHUNK_PIXELS`` x 70
bytes, ~2 MB: cache-sized), so extra memory is bounded whatever the photo's size;
only the uint8 output is allocated per call.

The result equals the plain "decode table, float32 matmul, round, encode
table" computation except where the float32 sum lands within rounding of a
half level of the 65,536-level table (about one pixel in a million, off by one
8-bit level at most). The identity matrix is bit-exact: ``T_k`` is then zero
off the diagonal and the sum is the single table entry.

**Highlights stay as the camera rendered them.** A pixel whose three channels are near 255 was
clipped (or nearly) by the camera, which renders clipped light white; the matrix would tint it
(a blown sky cream-yellow, a bulb filament cyan). Such pixels get only the correction's exposure
change, the matrix's gain on neutral colours ``g = LUMA_709 @ M @ 1`` (as grayscale photos do),
blended in smoothly by the darkest channel from ``HIGHLIGHT_START`` to ``HIGHLIGHT_FULL``:

    out = (1 - h) * (M @ x) + h * g * x,    h = smoothstep((min(R, G, B) - START) / (FULL - START))

so there is no seam, neutral highlights stay neutral, and the identity matrix stays bit-exact.

``apply_matrix_torch`` is the same maths on a torch tensor on any device (the
GPU path); it agrees with ``apply_matrix`` bit for bit on the CPU.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from model.colour import LUMA_709, linear_to_srgb, srgb_to_linear

CHUNK_PIXELS = 1 << 15
OUT_LEVELS = 65535

_DECODE64 = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0).astype(np.float64)
_DECODE = torch.from_numpy(_DECODE64.astype(np.float32))
_ENCODE_NP = np.round(linear_to_srgb(np.arange(OUT_LEVELS + 1, dtype=np.float64) / OUT_LEVELS) * 255.0).astype(np.uint8)
_ENCODE = torch.from_numpy(_ENCODE_NP)

HIGHLIGHT_START = 225  # uint8 value of a pixel's darkest channel where highlight protection begins ...
HIGHLIGHT_FULL = 250  # ... and where it is complete


def _highlight_weights() -> np.ndarray:
    """(256,) float32 ``h`` by the darkest channel's value: 0 below START, smoothstep up to 1 at FULL."""
    t = np.clip((np.arange(256, dtype=np.float64) - HIGHLIGHT_START) / (HIGHLIGHT_FULL - HIGHLIGHT_START), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


_HIGHLIGHT = _highlight_weights()
_HIGHLIGHT_T = torch.from_numpy(_HIGHLIGHT)


def _matrix(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().to("cpu", torch.float32).numpy()
    m = np.asarray(matrix, dtype=np.float32)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {tuple(m.shape)}")
    return m


def channel_tables(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3, 256, 3) float32: ``[k, v, c] = M[c, k] * linear(v) * OUT_LEVELS`` (input channel k, value v)."""
    m = _matrix(matrix).astype(np.float64)
    return (m.T[:, None, :] * _DECODE64[None, :, None] * OUT_LEVELS).astype(np.float32)


def neutral_table(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """(256,) float32: ``g * linear(v) * OUT_LEVELS`` with ``g = LUMA_709 @ M @ 1`` (the highlights' mapping)."""
    m = _matrix(matrix).astype(np.float64)
    gain = float(np.asarray(LUMA_709, dtype=np.float64) @ m @ np.ones(3))
    return (gain * _DECODE64 * OUT_LEVELS).astype(np.float32)


_HOT = (np.arange(256) >= HIGHLIGHT_START).astype(np.float32)  # padding lane: 1 where a channel is hot
_ALL_HOT = int(np.float32(3.0).view(np.uint32))  # the lane's bits when all three channels are
_EXACT_BOUND = 2.0**60  # |table sums| below this: rint then an int64 cast is exact, no float clip needed


def _overlapping_stores_in_order() -> bool:
    """Whether NumPy copies 16-byte items into a buffer where they overlap (12 bytes apart) front to back, as
    the packing in ``apply_matrix`` needs (10x faster than a strided 12-byte copy); checked once at import, so
    a NumPy that copies otherwise gets the plain copy, not wrong colours."""
    rows = np.arange(4 * 1024, dtype=np.float32).reshape(-1, 4)
    packed = np.empty(3 * len(rows) + 1, np.float32)
    stores = np.ndarray((len(rows),), np.complex128, buffer=packed, strides=(12,))
    np.copyto(stores, rows.view(np.complex128).reshape(-1))
    return bool(np.array_equal(packed[:-1].reshape(-1, 3), rows[:, :3]))


_OVERLAPPING_STORES_IN_ORDER = _overlapping_stores_in_order()


@functools.lru_cache(maxsize=8)  # ~1 MB each
def _tables(key: bytes, protect_highlights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """``apply_matrix``'s read-only tables for the float32 matrix with bytes ``key``.

    ``pair``: (65536, 4) float32, row ``r + 256 g`` = ``T_0[r] + T_1[g]``, lane 3 = hot(r) + hot(g);
    ``last``: (256, 4) float32, row ``b`` = ``T_2[b]``, lane 3 = hot(b); ``neutral_table`` (or None);
    whether every sum is finite and small enough to skip the float clip.
    """
    m = np.frombuffer(key, np.float32).reshape(3, 3)
    t0, t1, t2 = channel_tables(m)
    pair = np.zeros((256, 256, 4), np.float32)  # [g, r]
    np.add(t1[:, None, :], t0[None, :, :], out=pair[:, :, :3])  # float32 sums: commutative, so == T_0[r] + T_1[g]
    pair[:, :, 3] = _HOT[:, None] + _HOT[None, :]
    last = np.zeros((256, 4), np.float32)
    last[:, :3] = t2
    last[:, 3] = _HOT
    neutral = neutral_table(m) if protect_highlights else None
    with np.errstate(invalid="ignore", over="ignore"):
        parts = [np.abs(t.astype(np.float64)).max() for t in (t0, t1, t2)]
        bound = float(sum(parts)) if neutral is None else max(float(sum(parts)), float(np.abs(neutral).max()))
    exact = bool(np.isfinite(bound) and bound < _EXACT_BOUND)
    for arr in (pair, last, neutral):
        if arr is not None:
            arr.flags.writeable = False
    return pair.reshape(65536, 4), last, neutral, exact


def apply_matrix(
    img: np.ndarray,
    matrix: np.ndarray | torch.Tensor,
    chunk_pixels: int = CHUNK_PIXELS,
    protect_highlights: bool = True,
) -> np.ndarray:
    """Apply a 3x3 linear-RGB matrix to a uint8 ``(..., 3)`` sRGB image; returns a new uint8 array.

    ``protect_highlights``: near-white pixels get the exposure change only (module docstring).
    """
    if img.ndim < 2 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    pair, last, neutral, exact = _tables(_matrix(matrix).tobytes(), protect_highlights)
    src = img.reshape(-1, 3)  # a view when img is contiguous; strided inputs work too
    total = src.shape[0]
    out = np.empty((total, 3), dtype=np.uint8)
    n = min(chunk_pixels, total)
    work = np.empty((2, n, 4), np.float32)  # padded sums and addends; later the encode indices
    acc4, tmp4 = work
    idx = work.reshape(-1).view(np.intp)[: 3 * n].reshape(n, 3)
    packed = np.empty(3 * n + 1, np.float32)  # (n, 3) sums, + 1 for the last overlapping store
    acc3 = packed[: 3 * n].reshape(n, 3)
    stores = np.ndarray((n,), np.complex128, buffer=packed, strides=(12,))  # 16-byte items 12 bytes apart
    rg_idx = np.empty(n, np.intp)
    b_idx = np.empty(n, np.intp)
    for start in range(0, total, chunk_pixels):
        block = np.ascontiguousarray(src[start : start + chunk_pixels])
        k = block.shape[0]
        a4, t4, a, i = acc4[:k], tmp4[:k], acc3[:k], idx[:k]
        np.copyto(rg_idx[:k], np.ndarray((k,), "<u2", buffer=block, strides=(3,)))  # r + 256 g
        np.copyto(b_idx[:k], block[:, 2])
        np.take(pair, rg_idx[:k], axis=0, out=a4, mode="wrap")  # indices in range: no checks
        np.take(last, b_idx[:k], axis=0, out=t4, mode="wrap")
        a4 += t4
        if _OVERLAPPING_STORES_IN_ORDER:  # each store's 4th float is overwritten by the next store
            np.copyto(stores[:k], a4.view(np.complex128).reshape(k))
        else:
            np.copyto(a, a4[:, :3])
        if neutral is not None:
            lane = a4.view(np.uint32)[:, 3]  # 0, 1, 2 or 3 (float32) hot channels
            if lane.max() == _ALL_HOT:
                hot = np.flatnonzero(lane == _ALL_HOT)
                bh = block[hot]
                h = _HIGHLIGHT[np.minimum(np.minimum(bh[:, 0], bh[:, 1]), bh[:, 2])][:, None]
                ah = a[hot]
                a[hot] = ah + h * (neutral[bh] - ah)
        if not exact:
            np.clip(a, 0.0, OUT_LEVELS, out=a)
        np.rint(a, out=a)
        np.copyto(i, a, casting="unsafe")  # exact: integral values, |x| < 2**60
        np.take(_ENCODE_NP, i, out=out[start : start + k], mode="clip")  # clamps to [0, 65535]
    return out.reshape(img.shape)


def apply_matrix_torch(
    img: torch.Tensor, matrix: np.ndarray | torch.Tensor, chunk_pixels: int = 1 << 22, protect_highlights: bool = True
) -> torch.Tensor:
    """``apply_matrix`` on a uint8 ``(H, W, 3)`` tensor on any device (CUDA: the GPU path); same values."""
    if img.ndim < 2 or img.shape[-1] != 3 or img.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) tensor, got {img.dtype} {tuple(img.shape)}")
    dev = img.device
    tables = torch.from_numpy(channel_tables(matrix)).to(dev).reshape(768, 3)  # rows k*256 + v
    encode = _ENCODE.to(dev)
    neutral = torch.from_numpy(neutral_table(matrix)).to(dev) if protect_highlights else None
    weights = _HIGHLIGHT_T.to(dev)
    offsets = torch.tensor([0, 256, 512], dtype=torch.int32, device=dev)
    src = img.reshape(-1, 3)
    out = torch.empty_like(src)
    for start in range(0, src.shape[0], chunk_pixels):
        rows = (src[start : start + chunk_pixels].to(torch.int32) + offsets).long()  # (k, 3)
        parts = tables[rows]  # (k, 3 in, 3 out)
        a = parts[:, 0] + parts[:, 1] + parts[:, 2]  # same order as NumPy
        if neutral is not None:
            block = src[start : start + chunk_pixels]
            darkest = block.amin(dim=1).long()
            hot = torch.nonzero(darkest >= HIGHLIGHT_START).squeeze(1)
            ah = a[hot]
            a[hot] = ah + weights[darkest[hot]][:, None] * (neutral[block[hot].long()] - ah)
        out[start : start + chunk_pixels] = encode[a.clamp_(0.0, OUT_LEVELS).round_().long()]
    return out.reshape(img.shape)


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
