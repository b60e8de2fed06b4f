"""Camera-pipeline emulator and training-content helpers (fast, CPU only)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from model.colour import srgb_to_linear
from model.training.emulator import (
    CAMERAS,
    PRESETS,
    CameraPipelineEmulator,
    EmulatorConfig,
    camera_matrices,
    wb_gains,
)
from model.training.photos import list_source_photos, load_photo, procedural_scene


def _daylight_scene(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(123)
    img = procedural_scene(rng, size)
    img[: size // 4, : size // 4] = 0.7  # a neutral patch
    return img


def test_render_pair_shapes_and_dtypes():
    emu = CameraPipelineEmulator()
    img = _daylight_scene(64)[:40]  # non-square
    inp, gt, info = emu.render_pair(img, np.random.default_rng(0))
    assert inp.shape == gt.shape == (40, 64, 3)
    assert inp.dtype == gt.dtype == np.uint8
    for key in ("preset", "true_kelvin", "preset_kelvin", "camera", "style", "is_cast", "cast_matrix"):
        assert key in info
    assert isinstance(info["preset"], str)
    assert isinstance(info["is_cast"], bool)
    assert np.asarray(info["cast_matrix"]).shape == (3, 3)
    assert info["camera"] in CAMERAS


def test_deterministic_given_seed():
    emu = CameraPipelineEmulator()
    img = _daylight_scene()
    for seed in range(5):
        a = emu.render_pair(img, np.random.default_rng(seed))
        b = emu.render_pair(img, np.random.default_rng(seed))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert a[2]["preset"] == b[2]["preset"] and a[2]["true_kelvin"] == b[2]["true_kelvin"]
    outs = {emu.render_pair(img, np.random.default_rng(s))[0].tobytes() for s in range(6)}
    assert len(outs) > 1


def test_neutral_pair_is_identical():
    emu = CameraPipelineEmulator(EmulatorConfig(neutral_rate=1.0))
    img = _daylight_scene()
    for seed in range(4):
        inp, gt, info = emu.render_pair(img, np.random.default_rng(seed))
        assert not info["is_cast"]
        assert np.array_equal(inp, gt)
        assert np.allclose(info["cast_matrix"], np.eye(3), atol=1e-5)


def test_neutral_rate_is_respected():
    emu = CameraPipelineEmulator(EmulatorConfig(neutral_rate=0.25))
    rng = np.random.default_rng(1)
    n = sum(not emu.sample(rng)["neutral"] for _ in range(2000))
    assert 0.7 < n / 2000 < 0.8


def test_neutral_style_roughly_preserves_the_photo():
    # Correct white balance through the AS style stays close to the photo.
    cfg = EmulatorConfig(neutral_rate=1.0, style_probs={"AS": 1.0})
    img = _daylight_scene()
    _, gt, _ = CameraPipelineEmulator(cfg).render_pair(img, np.random.default_rng(0))
    assert np.abs(gt.astype(np.float32) / 255 - img).mean() < 0.05


@pytest.mark.parametrize("camera", ["Canon EOS 5D Mark III", "Samsung Galaxy S9"])
def test_tungsten_preset_on_daylight_scene_is_bluer(camera):
    cfg = EmulatorConfig(
        neutral_rate=0.0, small_cast_rate=0.0, preset_probs={"T": 1.0}, kelvin_range=(5500.0, 6500.0), cameras=(camera,)
    )
    img = _daylight_scene()
    inp, gt, info = CameraPipelineEmulator(cfg).render_pair(img, np.random.default_rng(3))
    assert info["is_cast"] and info["preset"] == "T"
    assert not np.array_equal(inp, gt)
    li, lg = srgb_to_linear(inp / 255.0), srgb_to_linear(gt / 255.0)
    ratio_in = li[..., 2].mean() / li[..., 0].mean()
    ratio_gt = lg[..., 2].mean() / lg[..., 0].mean()
    assert ratio_in > 1.3 * ratio_gt
    # the cast matrix says the same: white goes blue
    w = np.asarray(info["cast_matrix"]) @ np.ones(3)
    assert w[2] > w[1] > w[0]


def test_shade_preset_on_tungsten_scene_is_warmer():
    cfg = EmulatorConfig(neutral_rate=0.0, small_cast_rate=0.0, preset_probs={"S": 1.0}, kelvin_range=(2600.0, 3000.0))
    img = _daylight_scene()
    inp, gt, _ = CameraPipelineEmulator(cfg).render_pair(img, np.random.default_rng(4))
    li, lg = srgb_to_linear(inp / 255.0), srgb_to_linear(gt / 255.0)
    assert li[..., 0].mean() / li[..., 2].mean() > 1.3 * lg[..., 0].mean() / lg[..., 2].mean()


def test_small_casts_are_smaller():
    img = _daylight_scene(64)

    def mean_diff(rate):
        emu = CameraPipelineEmulator(EmulatorConfig(neutral_rate=0.0, small_cast_rate=rate))
        rng = np.random.default_rng(7)
        d = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b, _ in (emu.render_pair(img, rng) for _ in range(30))]
        return float(np.mean(d))

    assert mean_diff(1.0) < 0.5 * mean_diff(0.0)


def test_gains_follow_the_planckian_locus():
    for cam in CAMERAS:
        warm, cool = wb_gains(cam, 2850), wb_gains(cam, 7500)
        assert warm[1] == pytest.approx(1.0) and cool[1] == pytest.approx(1.0)
        assert warm[2] > cool[2] and warm[0] < cool[0]  # warm light: boost blue
        _, ccm = camera_matrices(cam)
        assert np.allclose(ccm.sum(axis=1), 1.0)  # white stays white
    assert set(PRESETS) == {"T", "F", "D", "C", "S"}


def test_render_speed_256():
    emu = CameraPipelineEmulator()
    img = procedural_scene(np.random.default_rng(0), 256)
    rng = np.random.default_rng(0)
    for _ in range(20):  # warm the look-up-table caches
        emu.render_pair(img, rng)
    t = time.process_time()  # CPU time: what the render costs, not how busy the machine is
    n = 30
    for _ in range(n):
        emu.render_pair(img, rng)
    ms = (time.process_time() - t) / n * 1e3
    assert ms < 25.0, f"{ms:.1f} CPU ms per 256x256 pair"


def test_procedural_scenes_in_range():
    rng = np.random.default_rng(0)
    scenes = [procedural_scene(rng, 64) for _ in range(10)]
    for s in scenes:
        assert s.shape == (64, 64, 3) and s.dtype == np.float32
        assert np.isfinite(s).all() and s.min() >= 0.0 and s.max() <= 1.0
        assert s.std() > 0.02  # not flat
    assert procedural_scene(np.random.default_rng(5), 32).shape == (32, 32, 3)
    a = procedural_scene(np.random.default_rng(9), 48)
    b = procedural_scene(np.random.default_rng(9), 48)
    assert np.array_equal(a, b)


def test_list_and_load_source_photos(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "b_photo.png")
    Image.fromarray(arr).save(tmp_path / "a_photo.jpg", quality=95)
    Image.fromarray(arr[..., 0]).save(tmp_path / "c_gray.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "sub").mkdir()
    photos = list_source_photos(tmp_path)
    assert [p.name for p in photos] == ["a_photo.jpg", "b_photo.png", "c_gray.png"]
    img = load_photo(photos[1])
    assert img.shape == (20, 30, 3) and img.dtype == np.float32
    assert np.allclose(img * 255, arr, atol=0.01)
    assert load_photo(photos[2]).shape == (20, 30, 3)
    assert list_source_photos(tmp_path / "missing") == []
