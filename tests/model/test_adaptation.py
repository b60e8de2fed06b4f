"""Issue #29: ``adaptation="natural"``, incomplete adaptation under warm light (model.whitebalance, Correction).

Unit tests of the maths (D from Smet et al. 2017, the corresponding white from Zhai & Luo 2018's two-step CAT in
colour-science), ``full`` bit for bit today's output on the wild photos, and the measured tests: on renders under
2300-3500 K lights and on the warm-lit wild photos the neutral surfaces keep the warmth the model predicts, and
under 5000 K or more ``natural`` and ``full`` differ by at most 1 dE2000.
"""

import numpy as np
import pytest
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from model.colour import linear_to_srgb, srgb_to_linear
from model.corrector import Correction, Corrector
from model.mapping import apply_matrix
from model.whitebalance import (
    SRGB,
    colour,
    corresponding_white,
    degree_of_adaptation,
    natural_matrix,
    planckian_xy,
    temperature_matrix,
)
from tests.conftest import wild

#: The warmth kept, in CIE 1976 u'v', as the issue asks.
UV_TOLERANCE = 0.005
WARM_WILD = (
    "Flickr_Davis_Doherty_CC_BY_2.0.jpg",
    "Pexels_dot_com_Isadora_Menezes.jpg",
    "Pexels_dot_com_Buenosia_Carol.jpg",
)
ALL_WILD = (*WARM_WILD, "Flickr_Christopher_Schmidt_CC_BY_2.0.jpg", "Flickr_Dave--Out_and_about_CC_BY-NC_2.0.jpg")


def uv_prime(rgb_linear) -> np.ndarray:
    return np.asarray(colour.xy_to_Luv_uv(colour.XYZ_to_xy(SRGB.matrix_RGB_to_XYZ @ np.asarray(rgb_linear))))


def light_rgb(kelvin: float) -> np.ndarray:
    rgb = SRGB.matrix_XYZ_to_RGB @ colour.xy_to_XYZ(planckian_xy(kelvin))
    return rgb / rgb.max()


@pytest.fixture(scope="module")
def corrector() -> Corrector:
    return Corrector.from_checkpoint()


def load(name: str) -> np.ndarray:
    with Image.open(wild(name)) as im:
        return np.asarray(im.convert("RGB"))[::2, ::2].copy()  # a quarter of the pixels: the same estimate's maths


def render(kelvin: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene of matte patches, a third of them neutral (grays), lit by the Planckian light of ``kelvin`` and shot
    with the camera's white balance at D65 (linear sRGB times the light): the 8-bit photo and its neutral mask."""
    rng = np.random.default_rng(seed)
    reflectance = rng.uniform(0.05, 0.8, (12, 16, 3))
    neutral = rng.random((12, 16)) < 0.3
    reflectance[neutral] = rng.uniform(0.15, 0.6, (int(neutral.sum()), 1))
    linear = np.kron(reflectance * light_rgb(kelvin), np.ones((20, 20, 1)))
    return np.round(linear_to_srgb(linear) * 255).astype(np.uint8), np.kron(neutral, np.ones((20, 20))).astype(bool)


def neutral_uv(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return uv_prime(srgb_to_linear(photo[mask].astype(np.float32) / 255).mean(0))


# --- the maths --------------------------------------------------------------------------------------------------


def test_d_falls_under_warm_light_and_is_full_near_daylight():
    """Smet et al. 2017 (Dmax 1): lower under 2700-3500 K lights, about 1 from 5000 K up (values in the docs)."""
    d = {k: degree_of_adaptation(planckian_xy(k)) for k in (2300, 2850, 3500, 5000, 6504, 8000)}
    assert d[2300] < d[2850] < d[3500] < d[5000] < d[6504]
    assert d[2850] == pytest.approx(0.525, abs=0.01) and d[3500] == pytest.approx(0.752, abs=0.01)
    assert min(d[5000], d[6504], d[8000]) > 0.96 and d[6504] > 0.998
    assert degree_of_adaptation(SRGB.whitepoint) > 0.998


def test_the_corresponding_white_lies_between_the_light_and_d65():
    d65 = uv_prime(np.ones(3))
    for kelvin in (2300, 2850, 3500):
        light = np.asarray(colour.xy_to_Luv_uv(planckian_xy(kelvin)))
        kept = np.asarray(colour.xy_to_Luv_uv(corresponding_white(planckian_xy(kelvin))))
        share = np.linalg.norm(kept - d65) / np.linalg.norm(light - d65)
        assert 0.05 < share < 0.8, (kelvin, share)
        assert kept[0] > d65[0] and kept[1] > d65[1]  # warmer than D65: redder and yellower
    np.testing.assert_allclose(natural_matrix(SRGB.whitepoint), np.eye(3), atol=2e-3)


def test_natural_lands_the_estimated_light_on_its_corresponding_white_at_any_strength():
    m = np.linalg.inv(np.diag(light_rgb(2850))).astype(np.float32)  # a correction for a 2850 K light
    c = Correction(m, 0.9)
    n = c.adapted("natural")
    assert c.degree == 1.0 and n.degree == pytest.approx(degree_of_adaptation(c.illuminant.xy))
    out = n.applied_matrix.astype(np.float64) @ light_rgb(2850)
    target = np.asarray(colour.xy_to_Luv_uv(corresponding_white(c.illuminant.xy)))
    assert np.linalg.norm(uv_prime(out) - target) < 1e-5
    half = n.at_strength(0.5).rendered_at(3000)
    blend = 0.5 * np.eye(3) + 0.5 * natural_matrix(c.illuminant.xy) @ m
    np.testing.assert_allclose(half.applied_matrix, temperature_matrix(3000) @ blend, rtol=1e-5, atol=1e-6)
    assert n.at_strength(0).applied_matrix.tolist() == np.eye(3, dtype=np.float32).tolist()
    with pytest.raises(ValueError, match="adaptation must be one of full, natural"):
        c.adapted("partial")


def test_natural_leaves_a_correction_with_no_light_colour_as_full():
    c = Correction(np.diag([3.0, 1.0, 0.2]).astype(np.float32), 0.9)  # far off the locus: no CCT
    assert c.illuminant.cct is None
    assert c.adapted("natural").degree == 1.0
    assert c.adapted("natural").applied_matrix.tolist() == c.applied_matrix.tolist()


# --- full stays what it was -------------------------------------------------------------------------------------


def applied_before_issue_29(c: Correction) -> np.ndarray:
    """``Correction.applied_matrix`` as it was before issue #29 (the reference ``full`` must equal)."""
    if c.strength == 1.0 and c.render is None:
        return np.asarray(c.matrix, dtype=np.float32)
    blend = (1.0 - c.strength) * np.eye(3) + c.strength * np.asarray(c.matrix, dtype=np.float64)
    return (blend if c.render is None else c.render @ blend).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_WILD)
def test_full_is_bit_for_bit_the_output_before_the_option(corrector, name):
    photo = load(name)
    estimate = corrector.estimate(photo)
    for s, kelvin in ((1.0, None), (0.6, None), (1.0, 3000.0), (0.3, 7500.0)):
        before = estimate.at_strength(s).rendered_at(kelvin)
        full = estimate.adapted("full").at_strength(s).rendered_at(kelvin)
        assert full.applied_matrix.tobytes() == applied_before_issue_29(before).tobytes()
    assert np.array_equal(
        corrector.correct(photo, adaptation="full"), apply_matrix(photo, applied_before_issue_29(estimate))
    )


# --- measured ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kelvin", [2300, 2700, 3000, 3500])
@pytest.mark.parametrize("seed", [0, 1])
def test_warm_renders_keep_the_warmth_the_model_predicts(kelvin, seed):
    """The light known (the correction its exact inverse), through the real 8-bit mapping and highlight rule: the
    neutral surfaces of the ``natural`` output lie within 0.005 u'v' of the light's corresponding white (measured
    at most 0.0003)."""
    photo, mask = render(kelvin, seed)
    correction = Correction(np.linalg.inv(np.diag(light_rgb(kelvin))).astype(np.float32), 1.0).adapted("natural")
    target = np.asarray(colour.xy_to_Luv_uv(corresponding_white(planckian_xy(kelvin))))
    assert np.linalg.norm(neutral_uv(correction.map_rows(photo), mask) - target) < UV_TOLERANCE


#: The served model's neutral surfaces under 2300-3500 K renders, ``natural`` from the light's corresponding white,
#: measured 2026-12-07 (docs/api.md): 0.0046-0.0110 u'v' (``full`` misses its own target, D65, by 0.016-0.032: the
#: model under-corrects warm light). ``natural`` must stay at least that much closer to its target than ``full``.
SERVED_WARM_UV = {2300: 0.0102, 2700: 0.0056, 3000: 0.0053, 3500: 0.0110}


def served_full_and_natural(corrector, kelvin: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A render under ``kelvin`` corrected by the served model, ``full`` and ``natural``, with its neutral mask."""
    photo, mask = render(kelvin, seed)
    estimate = corrector.estimate(photo)
    return estimate.map_rows(photo), estimate.adapted("natural").map_rows(photo), mask


@pytest.mark.slow
@pytest.mark.parametrize("kelvin", [2300, 2700, 3000, 3500])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_served_model_keeps_the_warmth_closer_than_full_reaches_neutral(corrector, kelvin, seed):
    full, natural, mask = served_full_and_natural(corrector, kelvin, seed)
    kept = np.linalg.norm(
        neutral_uv(natural, mask) - np.asarray(colour.xy_to_Luv_uv(corresponding_white(planckian_xy(kelvin))))
    )
    neutralised = np.linalg.norm(neutral_uv(full, mask) - uv_prime(np.ones(3)))
    assert kept < neutralised and kept <= SERVED_WARM_UV[kelvin] + 0.001, (kept, neutralised)
    assert neutral_uv(natural, mask)[0] > neutral_uv(full, mask)[0]  # redder than the full correction


@pytest.mark.slow
@pytest.mark.parametrize("name", WARM_WILD)
def test_warm_wild_photos_keep_the_warmth_the_model_predicts(corrector, name):
    """The colour the corrector takes for the light's white (its estimate, as a mid-gray 8-bit patch) comes out of
    the ``natural`` mapping within 0.005 u'v' of the model's corresponding white; the photo is warm-lit."""
    estimate = corrector.estimate(load(name))
    light = estimate.illuminant
    assert light.cct is not None and light.cct < 4000, light
    rgb = SRGB.matrix_XYZ_to_RGB @ colour.xy_to_XYZ(np.asarray(light.xy))
    patch = np.round(linear_to_srgb(0.25 * rgb / rgb.max()) * 255).astype(np.uint8)
    out = estimate.adapted("natural").map_rows(np.broadcast_to(patch, (4, 4, 3)).copy())
    target = np.asarray(colour.xy_to_Luv_uv(corresponding_white(light.xy)))
    assert np.linalg.norm(neutral_uv(out, np.ones((4, 4), bool)) - target) < UV_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("kelvin", [5000, 5500, 6500, 7500])
@pytest.mark.parametrize("seed", [0, 1])
def test_daylight_natural_and_full_differ_by_at_most_1_de2000(corrector, kelvin, seed):
    full, natural, _ = served_full_and_natural(corrector, kelvin, seed)
    assert deltaE_ciede2000(rgb2lab(full), rgb2lab(natural)).mean() <= 1.0
