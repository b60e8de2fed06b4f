"""Metrics of the evaluation protocol against reference values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab

import model.training.metrics as M
from tests.conftest import shared_data

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula:
# implementation notes, supplementary test data, and mathematical
# observations", Table 1: (Lab1, Lab2, expected dE00). Pair numbers 1, 2, 3, 4,
# 7, 13, 17, 18, 19, 20, 25, 26, 34.
SHARMA = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_sharma_ciede2000_reference_through_skimage():
    lab1 = np.array([p[0] for p in SHARMA])
    lab2 = np.array([p[1] for p in SHARMA])
    expected = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(deltaE_ciede2000(lab1, lab2), expected, atol=1e-4)
    np.testing.assert_allclose(deltaE_ciede2000(lab2, lab1), expected, atol=1e-4)  # symmetric


def _img(rgb, shape=(4, 5)):
    return np.broadcast_to(np.array(rgb, np.uint8), (*shape, 3)).copy()


def test_mse_hand_computed():
    a, b = _img((10, 20, 30)), _img((13, 16, 30))
    assert M.mse(a, b, np.ones((4, 5), bool)) == pytest.approx((9 + 16 + 0) / 3)
    assert M.mse(a, a) == 0.0


def test_mse_ignores_masked_pixels():
    a, b = _img((10, 20, 30)), _img((10, 20, 30))
    b[0, 0] = (255, 255, 255)  # huge error, masked out
    mask = np.ones((4, 5), bool)
    mask[0, 0] = False
    assert M.mse(a, b, mask) == 0.0
    assert M.mse(a, b) == pytest.approx(((245**2 + 235**2 + 225**2) / 3) / 20)


def test_mae_hand_computed():
    a, b = _img((100, 0, 0), (1, 4)), _img((100, 100, 0), (1, 4))
    assert M.mae(a, b) == pytest.approx(45.0)
    a[0, 1] = (0, 0, 0)  # a zero vector counts as 0 degrees (published convention)
    assert M.mae(a, b) == pytest.approx(45.0 * 3 / 4)
    c = _img((0, 0, 200), (1, 4))
    assert M.mae(_img((200, 0, 0), (1, 4)), c) == pytest.approx(90.0)
    assert M.mae(b, b * 2) == pytest.approx(0.0, abs=1e-5)  # scale-invariant


def test_delta_e76_black_white_is_100():
    assert M.delta_e76(_img((255, 255, 255)), _img((0, 0, 0))) == pytest.approx(100.0, abs=1e-3)
    assert M.delta_e2000(_img((255, 255, 255)), _img((255, 255, 255))) == 0.0


def test_delta_e_match_whole_image_skimage(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    mask = rng.random((37, 53)) > 0.2
    la, lb = rgb2lab(a), rgb2lab(b)
    ref00 = deltaE_ciede2000(lb, la)[mask].mean()
    ref76 = deltaE_cie76(lb, la)[mask].mean()
    monkeypatch.setattr(M, "CHUNK_PIXELS", 97)  # many chunks, same answer
    got = M.all_metrics(a, b, mask)
    assert got["de2000"] == pytest.approx(ref00, rel=1e-9)
    assert got["de76"] == pytest.approx(ref76, rel=1e-9)
    assert got["mse"] == pytest.approx(((a.astype(float) - b) ** 2)[mask].mean(), rel=1e-9)
    assert got["de2000"] == pytest.approx(M.delta_e2000(a, b, mask), rel=1e-12)


def test_bad_inputs_raise():
    a = _img((1, 2, 3))
    with pytest.raises(ValueError, match="same shape"):
        M.mse(a, a[:2])
    with pytest.raises(ValueError, match="uint8"):
        M.mse(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError, match="no pixels"):
        M.mse(a, a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="mask shape"):
        M.mse(a, a, np.ones((5, 4), bool))


def test_summarise_quartiles():
    assert M.summarise([1, 2, 3, 4]) == {"mean": 2.5, "q1": 1.75, "median": 2.5, "q3": 3.25}
    with pytest.raises(ValueError):
        M.summarise([])


def test_summarise_reproduces_published_deepwb_summary():
    path = shared_data("deepwb_set2_per_image.json")  # Deep WB's published per-image results
    data = json.loads(path.read_text())
    s = M.summarise(data["DeltaE2000"])
    quartiles = (round(s["mean"], 2), round(s["q1"], 2), round(s["median"], 2), round(s["q3"], 2))
    assert quartiles == (4.90, 3.13, 4.35, 6.08)
    s = M.summarise(data["MSE"])
    assert round(s["mean"], 2) == 124.97 and round(s["median"], 2) == 76.32


def test_colourfulness_is_zero_for_gray_and_matches_hasler_suesstrunk():
    from model.training.metrics import colourfulness

    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    assert colourfulness(gray) == 0.0
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    r, g, b = (img[..., k].astype(np.float64).ravel() for k in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b  # Hasler & Suesstrunk 2003, eq. 3, written out
    expected = np.sqrt(np.std(rg) ** 2 + np.std(yb) ** 2) + 0.3 * np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2)
    assert abs(colourfulness(img) - expected) < 1e-9
    halfway = ((img.astype(np.float64) + gray) / 2).round().astype(np.uint8)  # halfway to a gray image
    assert colourfulness(halfway) < colourfulness(img)
    mask = np.zeros((32, 32), bool)
    mask[:8] = True
    assert abs(colourfulness(img, mask) - colourfulness(img[:8])) < 1e-9


def test_clipped_or_crushed_and_hue_error():
    from model.training.metrics import clipped_or_crushed, hue_error

    img = np.array([[[250, 10, 10], [3, 100, 100], [100, 100, 100]]], np.uint8)
    np.testing.assert_array_equal(clipped_or_crushed(img), [[True, True, False]])
    orange = np.full((4, 4, 3), (230, 120, 30), np.uint8)
    assert hue_error(orange, orange) == 0.0
    pink = np.full((4, 4, 3), (230, 100, 150), np.uint8)
    assert hue_error(pink, orange) > 30  # orange turned pink: a large hue error
    gray = np.full((4, 4, 3), 128, np.uint8)
    assert np.isnan(hue_error(orange, gray))  # no chromatic truth: nothing to score


def test_colour_ratio_is_one_for_the_same_image_and_zero_for_gray():
    from model.training.metrics import colour_ratio

    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = np.repeat(img[..., :1], 3, axis=2)
    assert colour_ratio(img, img) == 1.0 and colour_ratio(gray, img) == 0.0
