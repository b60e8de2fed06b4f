"""The served chromatic adaptation is the one closest to real cameras' own white-balance renders."""

import numpy as np
import pytest

from model.training.raw_renderer import load_raw_cameras
from model.training.temperature_report import TRANSFORMS, camera_render, distances
from model.whitebalance import CAT_TRANSFORM, REFERENCE_KELVIN
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def cameras():
    return load_raw_cameras(shared_data("raw-thumbs"))


def test_a_camera_at_the_reference_temperature_renders_the_neutral_output(cameras):
    for camera in cameras:
        np.testing.assert_allclose(camera_render(camera, REFERENCE_KELVIN), np.eye(3), atol=1e-9)


def test_the_served_transform_is_the_closest_to_the_cameras_at_every_temperature(cameras):
    table = distances(cameras, colours=200)
    assert CAT_TRANSFORM in TRANSFORMS and len(cameras) >= 12
    for kelvin in table[CAT_TRANSFORM]:
        best = min(TRANSFORMS, key=lambda t: table[t][kelvin])
        assert best == CAT_TRANSFORM, (kelvin, {t: round(table[t][kelvin], 2) for t in TRANSFORMS})
    assert table[CAT_TRANSFORM][2850] < 0.8 * table["Bradford"][2850]
