"""model.whitebalance: the light a correction neutralises, and rendering to a chosen white balance (issue #22).

Reference values come from colour-science itself (the library the module wraps) and from skimage's CIEDE2000.
"""

import subprocess
import sys

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from model.colour import linear_to_srgb
from model.corrector import Correction
from model.mapping import apply_matrix
from model.whitebalance import (
    PRESETS,
    REFERENCE_KELVIN,
    SRGB,
    colour,
    illuminant_of,
    planckian_xy,
    temperature_matrix,
)
from tests.conftest import REPO

#: A gray card rendered at K takes the light of K for white: the colour that comes out neutral lies at K's
#: Planckian chromaticity up to the reference white's own offset from the locus (D65 is 0.0032 Duv above it).
GRAY_CARD_UV_TOLERANCE = 0.0035


def uv(rgb_linear: np.ndarray) -> np.ndarray:
    return colour.xy_to_UCS_uv(colour.XYZ_to_xy(SRGB.matrix_RGB_to_XYZ @ rgb_linear))


def gray_photo(rgb_linear) -> np.ndarray:
    return np.broadcast_to(np.round(linear_to_srgb(np.asarray(rgb_linear)) * 255), (8, 8, 3)).astype(np.uint8)


@pytest.mark.parametrize("kelvin", [2000, 2850, 3000, 4000, 5500, 6500, 7500, 9000, 12000])
def test_a_gray_card_rendered_at_k_takes_the_light_of_k_for_white(kelvin):
    m = temperature_matrix(kelvin)
    white_of_k = np.linalg.solve(m, np.ones(3))  # the input colour the render maps to neutral
    target = colour.xy_to_UCS_uv(planckian_xy(kelvin))
    assert np.linalg.norm(uv(white_of_k) - target) < GRAY_CARD_UV_TOLERANCE
    cct, duv = colour.temperature.uv_to_CCT_Ohno2013(uv(white_of_k))
    assert abs(1e6 / cct - 1e6 / kelvin) < 10 and abs(duv) < GRAY_CARD_UV_TOLERANCE  # within 10 mired
    # and through the 8-bit mapping: a mid-gray card of that colour comes out neutral
    card = gray_photo(0.18 * white_of_k / (white_of_k @ [0.2126, 0.7152, 0.0722]))
    out = apply_matrix(card, m)[0, 0].astype(int)
    assert out.max() - out.min() <= 2, out


def test_the_reference_temperature_is_the_identity_and_6500_k_is_within_1_de2000_of_neutral():
    np.testing.assert_allclose(temperature_matrix(REFERENCE_KELVIN), np.eye(3), atol=2e-4)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    at_6500 = apply_matrix(photo, temperature_matrix(6500))
    assert deltaE_ciede2000(rgb2lab(photo), rgb2lab(at_6500)).mean() < 1.0


def test_3000_k_is_bluer_than_6500_k_and_tint_goes_magenta():
    photo = gray_photo([0.2, 0.2, 0.2])
    warm, cool = (
        apply_matrix(photo, temperature_matrix(3000))[0, 0],
        apply_matrix(photo, temperature_matrix(6500))[0, 0],
    )
    assert int(warm[2]) - int(warm[0]) > int(cool[2]) - int(cool[0]) + 20  # a 3000 K setting renders daylight blue
    magenta = apply_matrix(photo, temperature_matrix(REFERENCE_KELVIN, 30))[0, 0].astype(int)
    green = apply_matrix(photo, temperature_matrix(REFERENCE_KELVIN, -30))[0, 0].astype(int)
    assert magenta[1] < min(magenta[0], magenta[2]) and green[1] > max(green[0], green[2])


def test_the_light_of_k_keeps_its_luminance_and_bad_values_are_refused():
    luma = np.array([0.2126, 0.7152, 0.0722])
    for kelvin in PRESETS.values():
        m = temperature_matrix(kelvin)
        light = np.linalg.solve(m, np.ones(3))
        assert abs(luma @ light - luma @ m @ light) < 1e-3 * (luma @ light)
    for bad in (1999, 12001, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            temperature_matrix(bad)
    with pytest.raises(ValueError, match="tint"):
        temperature_matrix(5000, 151)


def test_illuminant_of_a_correction_is_the_light_it_neutralises():
    light = SRGB.matrix_XYZ_to_RGB @ colour.xy_to_XYZ(planckian_xy(3200))  # a tungsten-ish light
    est = illuminant_of(np.diag(1 / light))
    assert abs(est.cct - 3200) < 5 and abs(est.duv) < 1e-4
    np.testing.assert_allclose(est.xy, planckian_xy(3200), atol=1e-4)  # sRGB matrices given to 4 digits
    assert illuminant_of(np.diag([1.0, 1.0, -1.0])).cct is None


@pytest.mark.filterwarnings("ignore:Minimal distance index")  # pytest drops filters set while it imports
def test_lights_far_from_the_locus_or_past_the_table_get_no_cct():
    past_the_table = illuminant_of(np.diag([3.0, 1.0, 0.3]))  # a deep blue light: colour extrapolates to ~148,000 K
    magenta = illuminant_of(np.diag([1.0, 5.0, 1.0]))  # Duv -0.08
    candle = illuminant_of(np.diag([0.1, 1.0, 10.0]))  # ~1,400 K, on the locus
    assert past_the_table.cct is None and past_the_table.duv is None and past_the_table.xy is not None
    assert magenta.cct is None and magenta.duv is None
    assert 1000 < candle.cct < 2000 and abs(candle.duv) < 0.05


def test_a_light_past_the_table_logs_no_warning_in_a_fresh_process():
    """colour warns "unpredictable results" past its table; the module filters that at import, as a server has it."""
    code = "import numpy as np; from model.whitebalance import illuminant_of; illuminant_of(np.diag([3.0, 1.0, 0.3]))"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr


def test_the_render_composes_into_the_one_matrix_after_the_strength_blend():
    m = np.diag([0.8, 1.0, 1.3]).astype(np.float32)
    c = Correction(m, 0.9).at_strength(0.5).rendered_at(3000)
    blend = 0.5 * np.eye(3) + 0.5 * m
    np.testing.assert_allclose(c.applied_matrix, temperature_matrix(3000) @ blend, rtol=1e-6)
    assert c.rendered_at(None).applied_matrix.tolist() == blend.astype(np.float32).tolist()
    assert Correction(m, 0.9).rendered_at(None).applied_matrix is not None
    np.testing.assert_array_equal(Correction(m, 0.9).applied_matrix, m)  # no render: exactly M, as before
