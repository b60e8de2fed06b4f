"""Training and evaluation on the raw captures, through the data-source registry."""

import csv

import numpy as np
import pytest

from model.corrector import Corrector
from model.training.config import parse_args
from model.training.source_registry import SOURCES, source
from tests.conftest import shared_data


def test_model_flags_nest_in_the_model_config():
    cfg = parse_args(["raw", "--latent-dim", "16", "--anchor-white", "--stats-size", "64", "--epochs", "3"])
    assert cfg.sources == ["raw"] and cfg.epochs == 3
    assert cfg.model.latent_dim == 16 and cfg.model.anchor_white and cfg.model.stats_size == 64
    assert cfg.to_dict()["model"]["latent_dim"] == 16


def test_every_kind_is_in_the_registry_and_unknown_ones_are_named():
    assert {"synthetic", "raw", "set1", "set2", "cube", "pairs", "heldout"} <= set(SOURCES)
    with pytest.raises(ValueError, match="unknown source 'nope=1'"):
        source("nope=1")


def test_a_tiny_raw_training_run_chooses_on_held_out_cameras(tmp_path):
    from model.training.train import main

    raw = shared_data("raw-thumbs")
    run = main(
        [
            f"raw={raw}",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "8",
            "--val-size",
            "6",
            "--workers",
            "0",
            "--latent-dim",
            "16",
            "--anchor-white",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    row = next(csv.DictReader((run / "metrics.csv").open()))
    assert np.isfinite(float(row["val_de2000"])) and np.isfinite(float(row["val_sog_de2000"]))
    corrector = Corrector.from_checkpoint(run / "best.pt", "cpu")
    assert corrector.model.config.stats_size == 64
    photo = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    assert corrector.correct(photo).shape == photo.shape


def test_raw_evaluation_reports_baselines_and_illuminant_errors(tmp_path, capsys):
    from model.training.evaluate import main

    raw = shared_data("raw-thumbs")
    assert main([f"raw={raw}", "--limit", "6", "--quiet", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    for row in ("| wbvae |", "| shades of gray |", "Illuminant angular error", "| gray_world |", "| gray_edge |"):
        assert row in text
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    names = {r["name"] for r in rows}
    assert len(names) == 6 and all(n.split("/")[0] in ("Sony IMX135", "Nikon D5200", "Fujifilm X-M1") for n in names)


@pytest.mark.slow
def test_in_camera_full_matrix_run_starts_from_weights_and_chooses_with_real_pairs(tmp_path):
    import torch

    from model.training.train import main

    raw = shared_data("raw-thumbs")
    pairs = shared_data("real-pairs-set2/pairs.tsv")
    common = [f"raw={raw}", "--steps-per-epoch", "2", "--batch-size", "8", "--val-size", "4", "--workers", "0"]
    common += ["--latent-dim", "16", "--full-matrix", "--in-camera-rate", "0.5", "--relight-daylight-rate", "0.6"]
    first = main(common + ["--epochs", "1", "--out", str(tmp_path / "a")])
    run = main(
        common
        + ["--epochs", "2", "--init", str(first / "best.pt"), "--select-pairs", str(pairs)]
        + ["--out", str(tmp_path / "b")]
    )
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    scores = [float(r["val_select"]) for r in rows]
    for r in rows:  # the selection averages the held-out renders with the real pairs' folder
        expected = (float(r["val_de2000"]) + float(r["val_pairs_real-pairs-set2"])) / 2
        assert abs(float(r["val_select"]) - expected) < 1e-6
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["meta"]["epoch"] == int(np.argmin(scores))
    assert best["model_args"]["full_matrix"] is True
    assert best["meta"]["train_config"]["init"] == str(first / "best.pt")
