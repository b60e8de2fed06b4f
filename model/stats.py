"""Content-independent cues: statistical illuminant estimates and a log-chroma histogram.

Computed on a copy of the photo whose long side is at most ``STATS_SIZE`` px,
with a mask of pixels that were clipped in the original (block maximum), so a
12-megapixel photo and its training crops yield comparable statistics.
Everything here is NumPy on ``(H, W, 3)`` arrays; the same function serves
training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from model.colour import LUMA_709, srgb_to_linear

STATS_SIZE = 256  # long side of the statistics copy
THUMBNAIL_SIZE = 256  # long side of the first copy: a client's thumbnail made the same way is analysed the same
THUMB_SIZE = 64  # the VAE's input
CLIP_LEVEL = 250  # uint8 value from which a channel counts as clipped
DARK_LUMA = 0.01  # linear luminance under which a pixel is too noisy to trust
HIST_BINS = 16
HIST_RANGE = 1.5  # log-chroma histogram covers [-1.5, 1.5]
CHROMA_BINS = 32  # the illuminant network's histograms: 32 x 32 bins ...
CHROMA_RANGE = 1.6  # ... of 0.1 over log(G/R), log(G/B) in [-1.6, 1.6]
ESTIMATORS = ("gray_world", "shades_of_gray", "white_patch", "gray_edge", "bright_pixels")
NUM_ESTIMATES = len(ESTIMATORS)
CUE_DIM = 2 * NUM_ESTIMATES + HIST_BINS * HIST_BINS + 3

_LUMA = np.asarray(LUMA_709, dtype=np.float32)
_SRGB_TO_LINEAR_LUT = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


@dataclass
class Analysis:
    """What the model needs from one photo."""

    thumb: np.ndarray  # (3, THUMB_SIZE, THUMB_SIZE) float32 sRGB in [0, 1]
    cues: np.ndarray  # (CUE_DIM,) float32
    log_gains: np.ndarray  # (NUM_ESTIMATES, 3) float32, log of luminance-preserving gains
    chroma: np.ndarray  # (2, CHROMA_BINS, CHROMA_BINS) float32: pixel and edge log-chroma histograms


def downsample(img: np.ndarray, max_side: int = STATS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Box-downsample a uint8 ``(H, W, 3)`` photo by an integer factor.

    Returns the small uint8 copy (long side <= ``max_side``) and a boolean clip
    mask marking blocks in which any pixel had a channel >= ``CLIP_LEVEL``.
    The copy is Pillow's C reduce over the cropped box (no cropped copy of the
    photo); the mask is a per-pixel channel maximum (two uint8 ``np.maximum``
    passes, no reduction over a strided axis) thresholded and OR-ed over
    blocks, in strips of ~4 MB: memory stays near the small copy.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    f = max(1, -(-max(h, w) // max_side))
    hs, ws = max(1, h // f), max(1, w // f)
    if f == 1:
        return img, np.asarray((img >= CLIP_LEVEL).any(axis=2))
    if min(h, w) < f:  # a sliver (e.g. 100000 x 1): plain resize, clip mask from the result
        small = np.asarray(Image.fromarray(img).resize((ws, hs), Image.Resampling.BOX))
        return small, np.asarray((small >= CLIP_LEVEL).any(axis=2))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(img)).reduce(f, box=(0, 0, ws * f, hs * f)))
    crop = img[: hs * f, : ws * f]
    clipped = np.empty((hs, ws), dtype=bool)
    step = max(1, (1 << 22) // (ws * f * f * 3))  # block rows per strip: ~4 MB of pixels
    for r0 in range(0, hs, step):  # strips: bounded temporaries
        strip = crop[r0 * f : (r0 + step) * f]
        peak = np.maximum(np.maximum(strip[..., 0], strip[..., 1]), strip[..., 2])  # (rows, cols) uint8
        hot = peak >= CLIP_LEVEL
        clipped[r0 : r0 + step] = hot.reshape(hot.shape[0] // f, f, ws, f).any(axis=(1, 3))
    return small, clipped


def _log_gains(e: np.ndarray) -> np.ndarray:
    """Gains that map illuminant ``e`` (linear RGB) to gray of the same luminance."""
    e = np.maximum(e, 1e-6)
    return np.log(float(e @ _LUMA) / e).astype(np.float32)


def edge_magnitudes(lin: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, 3) per-channel |dx| + |dy| of a linear image at pixels whose neighbours are all valid."""
    gy = np.abs(np.diff(lin, axis=0))[:, :-1]
    gx = np.abs(np.diff(lin, axis=1))[:-1]
    edge_valid = valid[:-1, :-1] & valid[1:, :-1] & valid[:-1, 1:]
    return (gx + gy)[edge_valid]


def illuminant_estimates(lin: np.ndarray, valid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(NUM_ESTIMATES, 3) linear-RGB illuminant estimates, in ``ESTIMATORS`` order."""
    px = lin[valid]
    if len(px) < 16:
        return np.ones((NUM_ESTIMATES, 3), dtype=np.float32)
    gray_world = px.mean(0)
    sog = (px.astype(np.float64) ** 6).mean(0) ** (1 / 6)
    white_patch = np.percentile(px, 99, axis=0)
    gray_edge = (edges.astype(np.float64) ** 6).mean(0) ** (1 / 6) if len(edges) >= 16 else gray_world
    luma = px @ _LUMA
    bright = px[luma >= np.percentile(luma, 97)].mean(0)
    return np.stack([gray_world, sog, white_patch, gray_edge, bright]).astype(np.float32) + 1e-6


def _chroma_histogram(rgb: np.ndarray, luma_weighted: bool = False) -> np.ndarray:
    """Normalised (CHROMA_BINS, CHROMA_BINS) histogram of log(G/R), log(G/B) of linear RGB rows (N, 3).

    A global colour cast translates this histogram, which is what the
    illuminant network (``model.vae.ChromaNet``) exploits. ``luma_weighted``: each
    row counts by its luminance, so bright surfaces (where white is) weigh most.
    """
    hist = np.zeros((CHROMA_BINS, CHROMA_BINS), dtype=np.float32)
    rgb = rgb[(rgb > 1e-4).all(axis=1)]
    if len(rgb):
        logs = np.log(rgb)
        u = np.clip(logs[:, 1] - logs[:, 0], -CHROMA_RANGE, CHROMA_RANGE - 1e-6)
        v = np.clip(logs[:, 1] - logs[:, 2], -CHROMA_RANGE, CHROMA_RANGE - 1e-6)
        scale = CHROMA_BINS / (2 * CHROMA_RANGE)
        idx = ((u + CHROMA_RANGE) * scale).astype(np.int64) * CHROMA_BINS + ((v + CHROMA_RANGE) * scale).astype(
            np.int64
        )
        weights = rgb @ _LUMA if luma_weighted else None
        hist = np.bincount(idx, weights, minlength=CHROMA_BINS**2).astype(np.float32).reshape(CHROMA_BINS, CHROMA_BINS)
        hist /= hist.sum()
    return hist


def chroma_bin_centres() -> np.ndarray:
    """(CHROMA_BINS,) log-chroma value at the centre of each bin."""
    step = 2 * CHROMA_RANGE / CHROMA_BINS
    return (-CHROMA_RANGE + step * (np.arange(CHROMA_BINS) + 0.5)).astype(np.float32)


def _painted_white(small: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """A copy of uint8 ``small`` (H, W, 3) with the pixels under the clip mask (H, W) set to 255."""
    return np.where(clipped[..., None], np.uint8(255), small)


def analyse_small(small: np.ndarray, clipped: np.ndarray, luma_weighted: bool = False) -> Analysis:
    """Cues from a small uint8 copy and its clip mask (see ``downsample``); ``luma_weighted``: the
    pixel histogram for ChromaNet counts pixels by luminance.

    Pixels under the mask count as white (255): a copy whose clipped blocks are painted white marks
    itself, so a client's thumbnail made that way (``docs/api.md``) is analysed exactly like the photo.
    """
    small = _painted_white(small, clipped)
    lin = _SRGB_TO_LINEAR_LUT[small]  # (h, w, 3) float32
    luma = lin @ _LUMA
    valid = ~clipped & (luma > DARK_LUMA)
    edges = edge_magnitudes(lin, valid)
    est = illuminant_estimates(lin, valid, edges)
    log_gains = np.stack([_log_gains(e) for e in est])
    est_chroma = np.log(est[:, [0, 2]] / est[:, [1]]).reshape(-1)  # log(R/G), log(B/G)

    px = lin[valid] + 1e-4
    hist = np.zeros((HIST_BINS, HIST_BINS), dtype=np.float32)
    if len(px):
        u = np.log(px[:, 1] / px[:, 0])
        v = np.log(px[:, 1] / px[:, 2])
        hist, _, _ = np.histogram2d(
            np.clip(u, -HIST_RANGE, HIST_RANGE),
            np.clip(v, -HIST_RANGE, HIST_RANGE),
            bins=HIST_BINS,
            range=[[-HIST_RANGE, HIST_RANGE]] * 2,
        )
        hist = np.sqrt(hist / len(px)).astype(np.float32)
    n = luma.size
    extra = np.array([np.log(luma.mean() + 1e-4), clipped.sum() / n, (luma <= DARK_LUMA).sum() / n], dtype=np.float32)
    cues = np.concatenate([est_chroma, hist.reshape(-1), extra]).astype(np.float32)

    chroma = np.stack([_chroma_histogram(lin[valid], luma_weighted), _chroma_histogram(edges, luma_weighted)])

    thumb = np.asarray(
        Image.fromarray(small).resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    thumb = (thumb.astype(np.float32) / 255.0).transpose(2, 0, 1)
    return Analysis(np.ascontiguousarray(thumb), cues, log_gains, chroma)


def thumbnail(img: np.ndarray) -> np.ndarray:
    """The photo's ``THUMBNAIL_SIZE`` copy: ``downsample``'s, with its clipped blocks painted white.

    The analysis reads the photo only through this copy, so this copy (``docs/api.md`` shows it in
    numpy) is analysed exactly like the photo: the clip mask survives as the white it paints.
    """
    return _painted_white(*downsample(img, THUMBNAIL_SIZE))


def analyse(img: np.ndarray, stats_size: int = STATS_SIZE, luma_weighted: bool = False) -> Analysis:
    """Cues for a full-size uint8 ``(H, W, 3)`` photo, computed on a copy of long side ``stats_size``
    made from its ``thumbnail``."""
    return analyse_small(*downsample(thumbnail(img), stats_size), luma_weighted)
