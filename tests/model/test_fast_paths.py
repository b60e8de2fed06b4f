"""The fast mapping and downsample paths agree with plain reference implementations."""

import numpy as np
import torch

from model.colour import LUMA_709, linear_to_srgb, srgb_to_linear
from model.mapping import HIGHLIGHT_FULL, HIGHLIGHT_START, apply_matrix, apply_matrix_torch
from model.stats import CLIP_LEVEL, downsample

KNOWN = np.array([[1.15, 0.06, -0.02], [0.03, 0.97, 0.01], [-0.01, 0.05, 0.72]], dtype=np.float32)


def reference_apply(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The plain computation: linearise, float64 matmul, blend highlights toward the neutral gain, clip,
    65,536-level round, re-encode."""
    px = img.reshape(-1, 3)
    x = srgb_to_linear(px.astype(np.float64) / 255.0)
    m = np.asarray(m, np.float64)
    t = np.clip((px.min(1).astype(np.float64) - HIGHLIGHT_START) / (HIGHLIGHT_FULL - HIGHLIGHT_START), 0, 1)
    h = (t * t * (3 - 2 * t))[:, None]
    lin = (1 - h) * (x @ m.T) + h * (np.asarray(LUMA_709) @ m @ np.ones(3)) * x
    levels = np.round(np.clip(lin, 0, 1) * 65535) / 65535
    return np.round(linear_to_srgb(levels) * 255).astype(np.uint8).reshape(img.shape)


def test_apply_matches_the_plain_computation_within_one_level():
    img = np.random.default_rng(3).integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    for m in (KNOWN, np.diag([2.5, 1.0, 0.3]), np.array([[0.9, 0.3, -0.4], [-0.2, 1.1, 0.2], [0.5, -0.6, 1.4]])):
        got, want = apply_matrix(img, m).astype(int), reference_apply(img, m).astype(int)
        assert np.abs(got - want).max() <= 1
        assert (got != want).mean() < 1e-3


def test_apply_accepts_strided_inputs_and_tensors():
    img = np.random.default_rng(4).integers(0, 256, size=(64, 90, 3), dtype=np.uint8)
    strided = img[:, ::2]
    assert np.array_equal(apply_matrix(strided, KNOWN), apply_matrix(np.ascontiguousarray(strided), KNOWN))
    assert np.array_equal(apply_matrix(img, torch.from_numpy(KNOWN)), apply_matrix(img, KNOWN))


def test_torch_path_equals_numpy_path():
    img = np.random.default_rng(5).integers(0, 256, size=(123, 77, 3), dtype=np.uint8)
    for m in (KNOWN, np.eye(3)):
        got = apply_matrix_torch(torch.from_numpy(img), m, chunk_pixels=1000).numpy()
        assert np.array_equal(got, apply_matrix(img, m))
    assert np.array_equal(apply_matrix_torch(torch.from_numpy(img), np.eye(3)).numpy(), img)


def reference_downsample(img: np.ndarray, max_side: int = 256):
    """Block mean (rounded) and block max of channels >= CLIP_LEVEL, the obvious way."""
    h, w = img.shape[:2]
    f = max(1, -(-max(h, w) // max_side))
    hs, ws = h // f, w // f
    blocks = img[: hs * f, : ws * f].reshape(hs, f, ws, f, 3)
    return blocks, (blocks.max(axis=(1, 3)) >= CLIP_LEVEL).any(axis=-1)


def test_downsample_clip_mask_matches_block_max():
    rng = np.random.default_rng(6)
    for shape in ((1000, 1500, 3), (777, 513, 3), (300, 2000, 3)):
        img = rng.integers(0, CLIP_LEVEL, size=shape, dtype=np.uint8)
        hot = rng.random(shape[:2]) < 2e-4
        img[hot, rng.integers(0, 3)] = 255
        small, clipped = downsample(img)
        blocks, want = reference_downsample(img)
        assert np.array_equal(clipped, want) and want.any()
        mean = blocks.astype(np.float64).mean(axis=(1, 3))
        assert np.abs(small.astype(float) - mean).max() <= 0.5 + 1e-9  # Pillow's reduce: a rounded box mean
