"""Raw renders from real captures (model/training/raw_renderer.py): fast, CPU only, needs shared/data/raw-thumbs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from model.colour import srgb_to_linear
from model.training.emulator import _output_lut
from model.training.raw_renderer import (
    DEFAULT_RAW_DIR,
    HELDOUT_CAMERAS,
    Look,
    RawRenderConfig,
    RawRenderer,
    angular_error,
    load_raw_cameras,
    pair_rng,
    split_cameras,
)
from model.training.raw_report import raw_baseline_estimates
from tests.conftest import require, shared_data

if "WBVAE_RAW_THUMBS" in os.environ:
    require(
        DEFAULT_RAW_DIR / "camera_matrices.json", str(DEFAULT_RAW_DIR), "WBVAE_RAW_THUMBS names a raw-thumbs folder"
    )
else:
    shared_data("raw-thumbs/camera_matrices.json")

# Small packs, one of them shared by two cameras, plus the phone module (estimated matrix).
CAMERAS = ("Canon EOS 600D", "Nikon D40", "Sony IMX135")
PLAIN = {"relight_rate": 0.0, "augment": False}


@pytest.fixture(scope="module")
def cameras():
    return load_raw_cameras(DEFAULT_RAW_DIR, cameras=CAMERAS)


def _renderer(cameras, **kw) -> RawRenderer:
    return RawRenderer(cameras, RawRenderConfig(**kw))


def _indices(renderer: RawRenderer, n: int) -> list[int]:
    """``n`` captures spread over all cameras."""
    return [int(i) for i in np.linspace(0, len(renderer) - 1, n)]


def test_load_cameras(cameras):
    assert [c.name for c in cameras] == sorted(CAMERAS, key=[c.name for c in cameras].index)
    assert {c.name for c in cameras} == set(CAMERAS)
    for c in cameras:
        assert c.images.dtype == np.float16 and c.images.shape[1:] == (64, 64, 3)
        assert c.labels.shape == (len(c), 3) and len(c.names) == len(c)
        np.testing.assert_allclose(c.labels.sum(1), 1.0, atol=1e-3)
        np.testing.assert_allclose(c.ccm.sum(1), 1.0, atol=1e-6)  # white stays white
        assert c.matrix_estimated == (c.name == "Sony IMX135")
    d40 = next(c for c in cameras if c.name == "Nikon D40")
    assert len(d40) == 117 and all(str(n).startswith("NikonD40_") for n in d40.names)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="raw thumbnails not found"):
        load_raw_cameras(tmp_path / "nowhere")


def test_render_shapes_and_info(cameras):
    r = _renderer(cameras)
    assert len(r) == sum(len(c) for c in cameras)
    inp, gt, info = r.render(5, pair_rng(0, 0, 5))
    assert inp.shape == gt.shape == (64, 64, 3) and inp.dtype == gt.dtype == np.uint8
    for key in ("preset", "preset_kelvin", "true_kelvin", "camera", "style", "is_cast", "cast_matrix", "gains"):
        assert key in info
    assert np.asarray(info["cast_matrix"]).shape == (3, 3)
    with pytest.raises(IndexError):
        r.render(len(r), pair_rng(0, 0, 0))


def test_neutral_as_pair_is_identical(cameras):
    r = _renderer(cameras, neutral_rate=1.0, style_probs={"AS": 1.0})
    for i in _indices(r, 12):
        inp, gt, info = r.render(i, pair_rng(1, 0, i))
        assert info["preset"] == "G" and not info["is_cast"]
        np.testing.assert_array_equal(info["cast_matrix"], np.eye(3))
        assert np.array_equal(inp, gt)


def test_deterministic_given_seed(cameras):
    r = _renderer(cameras)
    for i in _indices(r, 6):
        a = r.render(i, pair_rng(3, 2, i))
        b = r.render(i, pair_rng(3, 2, i))
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
        assert a[2]["preset"] == b[2]["preset"] and a[2]["true_kelvin"] == b[2]["true_kelvin"]
    outs = {r.render(7, pair_rng(seed, 0, 7))[0].tobytes() for seed in range(6)}
    assert len(outs) > 1


def _cast_angle(img: np.ndarray) -> float:
    """Angle (deg) of the mean linear colour of bright, unclipped pixels from gray."""
    lin = srgb_to_linear(img.reshape(-1, 3) / 255.0)
    ok = (img.reshape(-1, 3).max(1) < 250) & (lin.sum(1) > np.percentile(lin.sum(1), 50))
    return float(angular_error(lin[ok].mean(0), np.ones(3)))


def test_ground_truth_is_more_neutral_than_the_input(cameras):
    # Dividing by the measured light white-balances: on average the scene's bright
    # pixels are nearer gray in the ground truth than under a wrong preset.
    r = _renderer(cameras, neutral_rate=0.0, small_cast_rate=0.0, style_probs={"AS": 1.0}, **PLAIN)
    gt_angles, in_angles = [], []
    for i in _indices(r, 50):
        inp, gt, _ = r.render(i, pair_rng(0, 0, i))
        gt_angles.append(_cast_angle(gt))
        in_angles.append(_cast_angle(inp))
    gt_angles, in_angles = np.array(gt_angles), np.array(in_angles)
    assert gt_angles.mean() < 0.6 * in_angles.mean()
    assert (gt_angles < in_angles).mean() > 0.6


def test_sensor_clipped_pixels_are_white(cameras):
    r = _renderer(cameras, overexposure_rate=1.0, overexposure_clip=(0.1, 0.2), **PLAIN)
    seen = 0
    for i in _indices(r, 20):
        inp, gt, info = r.render(i, pair_rng(0, 0, i))
        cam = next(c for c in cameras if c.name == info["camera"])
        raw = cam.images[list(cam.names).index(info["name"])].astype(np.float32)
        exposed = np.minimum(raw * info["raw_scale"], 1.0)
        blown = (exposed >= 1.0).all(-1)
        seen += int(blown.sum())
        assert (inp[blown] == 255).all() and (gt[blown] == 255).all()
    assert seen > 100


def test_locus_fits_the_labels_and_presets_order(cameras):
    for c in cameras:
        assert np.median(c.locus.distance_deg(c.labels)) < 1.0, c.name
        # Warmer lights are redder (higher R/B) in camera RGB along the locus.
        warm, cold = c.locus.light(1e6 / 2850), c.locus.light(1e6 / 6500)
        assert warm[0] / warm[2] > 1.5 * cold[0] / cold[2]
    # The same capture under a tungsten preset comes out bluer than under daylight.
    kw = {"neutral_rate": 0.0, "small_cast_rate": 0.0, "style_probs": {"AS": 1.0}, **PLAIN}
    rt = _renderer(cameras, preset_probs={"T": 1.0}, **kw)
    rd = _renderer(cameras, preset_probs={"D": 1.0}, **kw)
    for i in _indices(rt, 10):
        t_img = srgb_to_linear(rt.render(i, pair_rng(0, 0, i))[0] / 255.0).reshape(-1, 3).mean(0)
        d_img = srgb_to_linear(rd.render(i, pair_rng(0, 0, i))[0] / 255.0).reshape(-1, 3).mean(0)
        assert t_img[2] / t_img[0] > d_img[2] / d_img[0]


def test_cast_matrix_maps_ground_truth_to_input(cameras):
    r = _renderer(
        cameras,
        neutral_rate=0.0,
        style_probs={"AS": 1.0},
        exposure_range=(0.04, 0.04),
        overexposure_rate=0.0,
        compress_gamut=False,  # the gamut mapping and the roll-off bend colours: the matrix holds without them
        shoulder=0.0,
        in_camera_rate=0.0,
        **PLAIN,
    )
    contrast, lift = r._gt_params[1:]
    lut = _output_lut(contrast, lift)
    x = np.arange(lut.size) / (lut.size - 1)
    inverse = np.array([x[lut == v].mean() if (lut == v).any() else np.nan for v in range(256)])
    for i in _indices(r, 8):
        inp, gt, info = r.render(i, pair_rng(0, 0, i))
        a, b = inp.reshape(-1, 3), gt.reshape(-1, 3)
        ok = (a.min(1) > 2) & (b.min(1) > 2) & (a.max(1) < 250) & (b.max(1) < 250)
        assert ok.sum() > 500
        lin_in, lin_gt = inverse[a[ok]].mean(0), inverse[b[ok]].mean(0)
        np.testing.assert_allclose(info["cast_matrix"] @ lin_gt, lin_in, rtol=0.05)


def test_render_balanced_is_the_plain_ground_truth(cameras):
    r = _renderer(
        cameras,
        exposure_range=(0.15, 0.15),
        overexposure_rate=0.0,
        highlight_share=0.0,
        flare=(0, 0),
        in_camera_rate=0.0,
        **PLAIN,
    )
    for i in _indices(r, 5):
        _, gt, _ = r.render(i, pair_rng(0, 0, i))
        assert np.array_equal(r.render_balanced(i), gt)


def test_augmentation_crops_and_flips(cameras):
    r = _renderer(cameras, neutral_rate=1.0, style_probs={"AS": 1.0}, relight_rate=0.0)
    crops = [r.render(3, pair_rng(s, 0, 3))[2] for s in range(10)]
    assert all(0.6 * 64 <= info["crop"][2] <= 64 for info in crops)
    assert {info["flip"] for info in crops} == {True, False}


def test_relighting_covers_warm_light(cameras):
    r = _renderer(cameras, relight_rate=1.0, relight_daylight_rate=0.0)
    kelvins = np.array([r.render(i, pair_rng(0, 0, i))[2]["true_kelvin"] for i in _indices(r, 200)])
    assert kelvins.min() >= 2290 and kelvins.max() <= 8010
    assert (kelvins < 3000).mean() > 0.2


def test_split_cameras_keeps_heldout_out_of_train(cameras):
    train, held = split_cameras(cameras)
    assert {c.name for c in held} == set(HELDOUT_CAMERAS) & set(CAMERAS)
    assert not {c.name for c in train} & set(HELDOUT_CAMERAS)
    assert len(train) + len(held) == len(cameras)


def test_angular_error():
    assert angular_error(np.array([0.3, 0.5, 0.2]), np.array([0.3, 0.5, 0.2])) == 0.0
    assert angular_error(np.array([0.3, 0.5, 0.2]), np.array([0.6, 1.0, 0.4])) == 0.0
    np.testing.assert_allclose(angular_error(np.array([1.0, 0, 0]), np.array([0, 1.0, 0])), 90.0)
    assert angular_error(np.ones((4, 3)), np.ones(3)).shape == (4,)


def test_gray_world_error_on_a_pack(cameras):
    cam = next(c for c in cameras if c.name == "Canon EOS 600D")
    est = {k: [] for k in ("gray_world", "shades_of_gray", "white_patch", "white_patch_p99", "gray_edge")}
    for img in cam.images:
        for k, v in raw_baseline_estimates(img.astype(np.float32)).items():
            est[k].append(v)
    errors = {k: np.median(angular_error(np.array(v), cam.labels)) for k, v in est.items()}
    assert 1.0 <= errors["gray_world"] <= 6.0  # README: medians 2.5-4.3 degrees per set
    for k, e in errors.items():
        assert e < 10.0, (k, e)


def test_looks_keep_grays_gray_and_turn_colours():
    look = Look(hue=((0.1, -0.05), (0.05, 0.02)), sat_harmonics=((0.1, 0.0), (0.0, -0.1)), sat=0.2, knee=1.2)
    grays = np.repeat(np.linspace(0, 1, 11, dtype=np.float32)[:, None], 3, axis=1)
    np.testing.assert_allclose(look.apply(grays), grays, atol=1e-5)
    colours = np.array([[0.5, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.2]], dtype=np.float32)
    out = look.apply(colours)
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - colours).max() > 0.02  # a look changes colours ...
    luma = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    np.testing.assert_allclose(out @ luma, colours @ luma, atol=1e-3)  # ... and keeps their luminance


def test_in_camera_pairs_share_one_look(cameras):
    ic = _renderer(cameras, in_camera_rate=1.0, **PLAIN)
    acr = _renderer(cameras, in_camera_rate=0.0, **PLAIN)
    for i in _indices(ic, 8):
        inp, gt, info = ic.render(i, pair_rng(2, 0, i))
        assert info["pipeline"] == "in-camera" and info["style"] == "IC"
        a_inp, a_gt, a_info = acr.render(i, pair_rng(2, 0, i))
        assert a_info["pipeline"] == "acr" and a_info["preset"] == info["preset"]  # the same draws otherwise
        if not info["is_cast"]:
            assert np.array_equal(inp, gt)
    # Rate 0 renders what the renderer rendered before looks existed (its draws come last).
    plain = RawRenderer(cameras, RawRenderConfig(**PLAIN, in_camera_rate=0.0))
    for i in _indices(acr, 4):
        assert acr.render(i, pair_rng(5, 1, i))[0].tobytes() == plain.render(i, pair_rng(5, 1, i))[0].tobytes()


def test_in_camera_renders_need_more_than_a_diagonal(cameras):
    """The fitted 3x3 between an in-camera pair's images is further from diagonal than an ACR-like one's."""
    from model.training.raw_report import family_numbers

    def numbers(rate):
        r = _renderer(cameras, in_camera_rate=rate, neutral_rate=0.0, small_cast_rate=0.0, **PLAIN)
        return family_numbers([(*r.render(i, pair_rng(0, 0, i))[:2], np.ones((64, 64), bool)) for i in _indices(r, 30)])

    ic, acr = numbers(1.0), numbers(0.0)
    assert ic["off_diagonal_mass"] > acr["off_diagonal_mass"]
    assert ic["complex_eigenvalues"] > acr["complex_eigenvalues"]
    assert ic["3x3"] < ic["diagonal"]


def test_daylight_share_of_relit_scenes(cameras):
    r = _renderer(cameras, relight_rate=1.0, relight_daylight_rate=0.6)
    kelvins = np.array([r.render(i, pair_rng(0, 0, i))[2]["true_kelvin"] for i in _indices(r, 200)])
    assert kelvins.min() >= 2290 and kelvins.max() <= 8010
    assert 0.55 < (kelvins >= 4490).mean() < 0.85  # 0.6 daylight + the full range's own daylight part


def test_defaults_expose_like_real_photos(cameras):
    """Realism (issue "Keep the colour"): at the defaults that train the model, at most 2 % of the pixels
    of input or truth are clipped or crushed on average (the real pairs: 0-0.4 %), hard frames labelled."""
    from model.training.metrics import clipped_or_crushed

    r = _renderer(cameras, neutral_rate=0.0)
    shares, hard = [], []
    for i in _indices(r, 200):
        inp, gt, info = r.render(i, pair_rng(0, 0, i))
        lit = gt.max(2) > 0  # the masked chart is not a photo's pixel
        shares.append((clipped_or_crushed(inp) | clipped_or_crushed(gt))[lit].mean())
        hard.append(info["hard"])
    assert np.mean(shares) <= 0.02, np.mean(shares)
    assert 0 < np.mean(hard) <= 0.05  # a small, labelled share of overexposed frames
    easy = [s for s, h in zip(shares, hard) if not h]
    assert np.percentile(easy, 90) < 0.06


def test_compress_gamut_keeps_hue_and_luminance_and_lifts_crushed_channels():
    from model.colour import LUMA_709
    from model.training.raw_renderer import compress_gamut

    rng = np.random.default_rng(0)
    inside = rng.uniform(0.2, 0.6, (500, 3)).astype(np.float32)
    np.testing.assert_array_equal(compress_gamut(inside), inside)  # in gamut, far from its edge: untouched
    vivid = np.array([[0.9, 0.1, -0.05], [-0.02, 0.3, 0.6], [0.5, 0.5, -0.2]], np.float32)
    out = compress_gamut(vivid)
    luma = np.asarray(LUMA_709, np.float32)
    np.testing.assert_allclose(out @ luma, vivid @ luma, rtol=1e-5)  # luminance kept
    y = (vivid @ luma)[:, None]
    direction = (vivid - y) / np.linalg.norm(vivid - y, axis=1, keepdims=True)
    np.testing.assert_allclose((out - y) / np.linalg.norm(out - y, axis=1, keepdims=True), direction, atol=1e-5)
    assert (out.min(1) >= 0.1 * y[:, 0] * 0.999).all()  # every channel above (1 - limit) Y: nothing crushed


def test_roll_off_is_continuous_monotone_and_keeps_white_white():
    from model.training.raw_renderer import roll_off

    x = np.linspace(0, 3, 30001, dtype=np.float32)
    y = roll_off(x, 0.5, 2.5)
    np.testing.assert_array_equal(y[x <= 0.5], x[x <= 0.5])  # below the shoulder: untouched
    assert (np.diff(y) >= 0).all() and y.max() == 1.0 and y[np.searchsorted(x, 2.5)] == 1.0  # white lands on 1
    assert (y[(x > 0.5) & (x < 2.4)] < 1.0).all()  # nothing below white is clipped
    slope = np.diff(y) / np.diff(x)
    assert abs(slope[np.searchsorted(x, 0.5)] - 1.0) < 1e-2  # no kink where the roll-off begins
    np.testing.assert_array_equal(roll_off(x, 0.5, 1.0), x)  # no push: nothing to roll off
