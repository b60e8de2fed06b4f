import subprocess
import sys

import numpy as np
import pytest

from model import mapping
from model.mapping import (
    _ENCODE_NP,
    _HIGHLIGHT,
    HIGHLIGHT_START,
    OUT_LEVELS,
    apply_matrix,
    channel_tables,
    fit_matrix,
    neutral_table,
)
from model.stats import CUE_DIM, NUM_ESTIMATES, analyse, downsample
from tests.conftest import REPO, load_rgb, real_pair_file

KNOWN = np.array([[1.15, 0.06, -0.02], [0.03, 0.97, 0.01], [-0.01, 0.05, 0.72]], dtype=np.float32)


def test_identity_is_bit_exact():
    img = np.random.default_rng(1).integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    levels = np.arange(256, dtype=np.uint8)
    every_value = np.stack([levels] * 3, axis=-1)[None]
    assert np.array_equal(apply_matrix(img, np.eye(3)), img)
    assert np.array_equal(apply_matrix(every_value, np.eye(3)), every_value)


def test_known_transform_is_recovered():
    gt = load_rgb(real_pair_file("8D5U5524_G_AS.png"))
    mapped = apply_matrix(gt, KNOWN)
    assert not np.array_equal(mapped, gt)
    assert np.abs(fit_matrix(gt, mapped) - KNOWN).max() < 0.01


def test_chunking_does_not_change_the_result():
    img = np.random.default_rng(2).integers(0, 256, size=(123, 77, 3), dtype=np.uint8)
    assert np.array_equal(apply_matrix(img, KNOWN), apply_matrix(img, KNOWN, chunk_pixels=1000))


def _plain_apply(img: np.ndarray, matrix: np.ndarray, protect_highlights: bool) -> np.ndarray:
    """The reference: gather T_0, T_1, T_2 and add in that order, blend highlights, clip, rint, encode."""
    t0, t1, t2 = channel_tables(matrix)
    px = img.reshape(-1, 3)
    a = t0[px[:, 0]] + t1[px[:, 1]]
    a += t2[px[:, 2]]
    if protect_highlights:
        darkest = px.min(axis=1)
        hot = np.flatnonzero(darkest >= HIGHLIGHT_START)
        ah = a[hot]
        a[hot] = ah + _HIGHLIGHT[darkest[hot]][:, None] * (neutral_table(matrix)[px[hot]] - ah)
    idx = np.rint(np.clip(a, 0.0, OUT_LEVELS)).astype(np.int64)  # NaN: some integer, clipped below
    return np.take(_ENCODE_NP, idx, mode="clip").reshape(img.shape)


@pytest.mark.parametrize(
    "matrix",
    [
        KNOWN,
        np.diag([2.1, 1.0, 0.45]),  # strong cast, clips
        np.array([[1.3, -0.35, -0.12], [-0.2, 1.25, -0.15], [-0.1, -0.4, 1.6]]),  # negative off-diagonals
        np.array([[3.7, 0.5, 0.2], [0.3, 4.2, 0.4], [0.1, 0.6, 5.1]]),  # large gains
        np.array([[80.0, -30.0, 5.0], [-70.0, 100.0, 1.0], [3.0, 2.0, -90.0]]),  # far out of range
        np.array([[np.inf, 0.0, 0.0], [0.0, 1.0, np.nan], [0.0, 0.0, -np.inf]]),  # non-finite: the clipping path
    ],
)
@pytest.mark.parametrize("overlapping_stores", [True, False], ids=["packed-by-overlapping-stores", "plain-copy"])
def test_fast_path_is_bit_exact_with_the_plain_computation(matrix, overlapping_stores, monkeypatch):
    monkeypatch.setattr(mapping, "_OVERLAPPING_STORES_IN_ORDER", overlapping_stores)
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, size=(300, 700, 3), dtype=np.uint8)
    colours[:60] = rng.integers(200, 256, size=(60, 700, 3), dtype=np.uint8)  # plenty of highlights
    m = np.asarray(matrix, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        for protect in (True, False):
            want = _plain_apply(colours, m, protect)
            assert np.array_equal(apply_matrix(colours, m, protect_highlights=protect), want)
            assert np.array_equal(apply_matrix(colours, m, chunk_pixels=999, protect_highlights=protect), want)
            strided = colours[::2, 1::3]  # not contiguous: chunks are copied
            assert np.array_equal(
                apply_matrix(strided, m, protect_highlights=protect), _plain_apply(strided, m, protect)
            )


@pytest.mark.slow
def test_24_megapixel_apply_stays_within_memory_bound():
    """Peak RSS of a fresh process applying a matrix to a 24 MP photo: input + output + < 250 MB."""
    code = (  # the process's own high-water mark: ru_maxrss would carry this (big) test process's over exec
        "import numpy as np\n"
        "from bench.rss import peak_rss_mb\n"
        "from model.mapping import apply_matrix\n"
        "from model.stats import analyse\n"
        "img = np.full((4000, 6000, 3), 128, np.uint8)\n"
        "base = peak_rss_mb()\n"
        "analyse(img)\n"
        "out = apply_matrix(img, np.diag([1.2, 1.0, 0.8]))\n"
        "assert out.shape == img.shape and out.dtype == np.uint8\n"
        "print(int(peak_rss_mb() - base))\n"
    )
    extra_mb = int(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO, text=True
        ).stdout.strip()
    )
    output_mb = 4000 * 6000 * 3 // 2**20  # 68 MB
    assert extra_mb < output_mb + 250, f"applying to 24 MP took {extra_mb} MB beyond the input"


def test_analysis_shapes_and_clip_mask():
    img = np.full((1000, 1500, 3), 100, np.uint8)
    img[:40, :40] = 255
    small, clipped = downsample(img)
    assert max(small.shape[:2]) <= 256 and clipped.shape == small.shape[:2]
    assert clipped[:4, :4].all() and not clipped[20:, 20:].any()
    a = analyse(img)
    assert a.thumb.shape == (3, 64, 64) and a.cues.shape == (CUE_DIM,)
    assert a.log_gains.shape == (NUM_ESTIMATES, 3)
    assert np.abs(a.log_gains).max() < 1e-3  # a gray photo needs no correction


def test_slivers_are_analysable():
    for shape in ((1, 100_000, 3), (3000, 2, 3), (1, 1, 3)):
        a = analyse(np.full(shape, 77, np.uint8))
        assert a.thumb.shape == (3, 64, 64) and np.isfinite(a.cues).all()


def test_clipped_highlights_stay_neutral_and_blend_without_a_seam():
    """A matrix that warms a photo must not tint blown highlights; the blend is smooth in the darkest channel."""
    warm = np.array([[1.25, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.7]], np.float32)
    white = np.full((1, 1, 3), 255, np.uint8)
    out = apply_matrix(white, warm)[0, 0].astype(int)
    assert out.max() - out.min() == 0  # neutral: the exposure change only
    assert not np.array_equal(apply_matrix(white, warm, protect_highlights=False)[0, 0], out)
    ramp = np.stack([np.arange(180, 256), np.arange(180, 256), np.arange(180, 256)], -1).astype(np.uint8)[None]
    red = apply_matrix(ramp, warm)[0, :, 0].astype(int)
    assert np.all(np.abs(np.diff(red)) <= 3)  # no jump where protection sets in
    darker = np.full((1, 1, 3), 150, np.uint8)
    assert np.array_equal(apply_matrix(darker, warm), apply_matrix(darker, warm, protect_highlights=False))
