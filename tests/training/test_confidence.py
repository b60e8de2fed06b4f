"""Latent-sample spread (model.training.confidence) on real pairs with the default checkpoint."""

import numpy as np
import pytest

from model.corrector import Corrector
from model.training.confidence import latent_spread, measure, measure_signals

pytestmark = pytest.mark.slow  # about 8 s on 2 cores


def test_spread_is_positive_deterministic_and_measured(real_pairs):
    corrector = Corrector.from_checkpoint(device="cpu")
    inp = real_pairs[0][1]
    spread = latent_spread(corrector, inp, samples=8)
    assert spread > 0 and spread == latent_spread(corrector, inp, samples=8)
    frames = [(i, g, ~((i == 0).all(-1) & (g == 0).all(-1))) for _, i, g in real_pairs[:4]]
    result = measure(corrector, frames)
    assert result["n"] == 4 and -1 <= result["spearman"] <= 1
    assert np.isfinite(result["error_mean"]) and result["error_mean"] > 0


def test_every_candidate_signal_is_measured(real_pairs):
    corrector = Corrector.from_checkpoint(device="cpu")
    frames = [(i, g, ~((i == 0).all(-1) & (g == 0).all(-1))) for _, i, g in real_pairs[:4]]
    result = measure_signals(corrector, frames)
    names = {"latent_spread", "estimate_spread", "net_vs_final", "correction_size", "no_cast"}
    assert result["n"] == 4 and names <= set(result)
    assert all(-1 <= result[n] <= 1 for n in names)
