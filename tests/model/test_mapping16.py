"""Grayscale corrections: luminance gain of a matrix on neutral pixels, applied at 8 or 16 bits."""

import numpy as np
import pytest

from model.colour import linear_to_srgb, srgb_to_linear
from model.mapping import apply_matrix
from model.mapping16 import apply_gray_gain, gray_gain


def test_gain_of_identity_and_of_gains():
    assert gray_gain(np.eye(3)) == pytest.approx(1.0)
    assert gray_gain(np.diag([2.0, 2.0, 2.0])) == pytest.approx(2.0)
    assert gray_gain(np.diag([1.0, 0.0, 0.0])) == pytest.approx(0.2126)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_unit_gain_is_exact_and_other_gains_scale_linear_light(dtype):
    top = np.iinfo(dtype).max
    gray = np.linspace(0, top, 300).astype(dtype).reshape(10, 30)
    assert np.array_equal(apply_gray_gain(gray, 1.0), gray)
    out = apply_gray_gain(gray, 0.5, chunk_pixels=7)
    expected = np.round(linear_to_srgb(srgb_to_linear(gray / top) * 0.5) * top)
    assert out.dtype == dtype and np.abs(out.astype(float) - expected).max() <= 1


def test_matches_the_rgb_mapping_on_neutral_pixels_for_a_neutral_matrix():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    m = np.diag([0.8, 0.8, 0.8])
    rgb = apply_matrix(np.repeat(gray[..., None], 3, axis=2), m)
    assert np.abs(apply_gray_gain(gray, gray_gain(m)).astype(int) - rgb[..., 1]).max() <= 1


def test_rejects_colour_input():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        apply_gray_gain(np.zeros((2, 2, 3), np.uint8), 1.0)
