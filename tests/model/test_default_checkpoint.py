"""The committed default checkpoint on real camera photos (Rendered WB protocol, chart excluded)."""

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from model.corrector import DEFAULT_CHECKPOINT, Corrector


def mean_de2000(a: np.ndarray, b: np.ndarray) -> float:
    mask = ~((a == 0).all(-1) & (b == 0).all(-1))  # the blacked-out colour chart
    return float(deltaE_ciede2000(rgb2lab(a[mask][None] / 255.0), rgb2lab(b[mask][None] / 255.0)).mean())


@pytest.fixture(scope="module")
def corrector():
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25 * 2**20
    return Corrector.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")


@pytest.mark.slow
def test_corrects_real_camera_casts(corrector, real_pairs):
    before, after = [], []
    for name, inp, gt in real_pairs:
        out = corrector.correct(inp)
        assert out.shape == inp.shape and out.dtype == np.uint8
        before.append(mean_de2000(inp, gt))
        after.append(mean_de2000(out, gt))
        assert after[-1] <= before[-1], f"{name} got worse: {before[-1]:.2f} -> {after[-1]:.2f}"
    assert np.mean(before) == pytest.approx(11.83, abs=0.05)
    assert np.mean(after) < 0.75 * np.mean(before), f"mean dE2000 {np.mean(after):.2f}"


def test_does_no_harm_to_a_balanced_photo(corrector, real_pairs):
    gt = real_pairs[0][2]
    assert mean_de2000(corrector.correct(gt), gt) <= 2.0


def test_deterministic(corrector, real_pairs):
    inp = real_pairs[0][1]
    assert np.array_equal(corrector.correct(inp), corrector.correct(inp))


def test_blown_highlights_of_a_real_photo_stay_white_without_a_seam(corrector):
    """The garden photo's sky is clipped: corrected, it stays neutral, and the edge of the clip stays smooth."""
    from tests.conftest import load_rgb, wild

    photo = load_rgb(wild("Flickr_Dave--Out_and_about_CC_BY-NC_2.0.jpg"))
    out = corrector.correct(photo).astype(int)
    clipped = photo.min(2) >= 252
    assert clipped.mean() > 0.05  # the sky
    spread = out[clipped].max(1) - out[clipped].min(1)
    assert np.percentile(spread, 99) <= 2, "clipped pixels took on a colour"
    transition = (photo.min(2) >= 215) & (photo.min(2) < 252)
    step_in = np.abs(np.diff(photo.astype(int), axis=1)).sum(2)[transition[:, 1:]].mean()
    step_out = np.abs(np.diff(out, axis=1)).sum(2)[transition[:, 1:]].mean()
    assert step_out <= 1.5 * step_in + 1.0, f"steps {step_in:.2f} -> {step_out:.2f}: a seam"


@pytest.fixture(scope="module")
def in_camera_pairs() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The in-camera real pairs (real-pairs-set2): (name, input, ground truth, valid)."""
    from model.training.eval_sets import list_pairs, load_pair
    from tests.conftest import shared_data

    return [(p.name, *load_pair(p)) for p in list_pairs(f"pairs={shared_data('real-pairs-set2/pairs.tsv')}")]


@pytest.mark.slow
def test_in_camera_pairs_and_their_ground_truths(corrector, in_camera_pairs):
    """In-camera renderings of two scenes from a camera training never saw: corrected well below
    their input's error, and their balanced ground truths left nearly alone (do no harm)."""
    before = [mean_de2000(inp, gt) for _, inp, gt, _ in in_camera_pairs]
    after = [mean_de2000(corrector.correct(inp), gt) for _, inp, gt, _ in in_camera_pairs]
    assert np.mean(before) == pytest.approx(13.66, abs=0.05)
    assert np.mean(after) < 0.45 * np.mean(before), f"mean dE2000 {np.mean(after):.2f}"
    truths = {gt.tobytes(): gt for _, _, gt, _ in in_camera_pairs}.values()
    assert max(mean_de2000(corrector.correct(gt), gt) for gt in truths) <= 1.0
