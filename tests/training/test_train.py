"""Training module end to end on tiny jobs (procedural scenes, no photo cache needed)."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from model.corrector import Corrector, load_model
from model.training.train import main
from tests.conftest import REPO

TINY = [
    "synthetic",
    "--photo-cache",
    "/nonexistent",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
    "--val-size",
    "4",
    "--workers",
    "0",
    "--latent-dim",
    "16",
]


@pytest.mark.slow
def test_tiny_training_run_writes_everything(tmp_path):
    run = main(TINY + ["--out", str(tmp_path / "run")])
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train_recon", "train_kl", "val_recon", "val_kl", "val_de2000", "images_per_s"):
        assert np.isfinite(float(rows[-1][key]))
    for name in ("best.pt", "last.pt", "loss_curves.png", "outputs.png"):
        assert (run / name).stat().st_size > 0
    model, meta = load_model(run / "best.pt")
    assert model.config.latent_dim == 16 and meta["train_config"]["batch_size"] == 8
    out = Corrector.from_checkpoint(run / "best.pt", "cpu").correct(np.full((20, 30, 3), 90, np.uint8))
    assert out.shape == (20, 30, 3)


@pytest.mark.slow
def test_resume_continues_from_last_epoch(tmp_path):
    run = tmp_path / "run"
    main(TINY[:3] + ["--epochs", "1"] + TINY[5:] + ["--out", str(run)])
    main(TINY + ["--out", str(run), "--resume", str(run / "last.pt")])
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        main(["set2=/nowhere", "--out", str(tmp_path / "x")])


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "model.training.train",
            *TINY,
            "--out",
            str(run),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["meta"]["train_config"]["batch_size"] == 8


@pytest.mark.slow
def test_real_pairs_with_published_folds(tmp_path):
    """A Set 1 layout (inputs, ground truth, chart masks) and a fold file drive the split."""
    from PIL import Image

    from tests.conftest import real_pair_file

    root = tmp_path / "set1"
    for sub in ("input", "groundtruth", "metadata"):
        (root / sub).mkdir(parents=True)
    names = ["8D5U5524_T_AS", "8D5U5524_S_AS", "8D5U5524_F_CS", "8D5U5524_C_CS"]
    for name in names + ["8D5U5524_G_AS"]:
        folder = "groundtruth" if name.endswith("_G_AS") else "input"
        Image.open(real_pair_file(f"{name}.png")).reduce(4).save(root / folder / f"{name}.png")
    for name in names:
        (root / "metadata" / f"{name}_mask.txt").write_text("10,10,20,15\n")
    folds = tmp_path / "folds.txt"
    folds.write_text("[fold 1]\n8D5U5524_T_AS\n[fold 2]\n8D5U5524_S_AS\n8D5U5524_F_CS\n8D5U5524_C_CS\n")
    run = main(
        [
            f"set1={root}",
            "--folds",
            str(folds),
            "--fold",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--latent-dim",
            "16",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["val_de2000"]))
    with pytest.raises(ValueError, match="--fold 3"):
        main([f"set1={root}", "--folds", str(folds), "--fold", "3", "--out", str(tmp_path / "bad")])


def test_views_keep_the_photo_shape_when_asked():
    from model.training.source_registry import random_view

    rng = np.random.default_rng(0)
    photo = np.zeros((60, 120, 3), np.uint8)
    photo[:, :60] = 200  # left half bright: a full-aspect view at scale 1 keeps both halves
    view = random_view(photo, rng, 32, min_scale=1.0, keep_aspect=True)
    assert view.shape == (32, 32, 3)
    assert view[:, :8].mean() != view[:, -8:].mean()
    square = random_view(photo, np.random.default_rng(0), 32, min_scale=1.0)  # square crop of the short side
    assert square.shape == (32, 32, 3)


def test_ground_truth_in_adobe_standard_marks_style_changes_as_corrections():
    """With gt_style="AS" a neutral pair rendered in CS still needs a correction (its style); AS ones do not."""
    from model.training.emulator import CameraPipelineEmulator, EmulatorConfig
    from model.training.source_registry import needs_correction

    emulator = CameraPipelineEmulator(EmulatorConfig(neutral_rate=1.0, gt_style="AS"))
    scene = np.random.default_rng(1).uniform(0.05, 0.9, (16, 16, 3)).astype(np.float32)
    seen = {}
    for seed in range(12):
        inp, gt, info = emulator.render_pair(scene, np.random.default_rng(seed))
        seen[info["style"]] = needs_correction(inp, gt, info)
    assert seen == {"AS": False, "CS": True}


def test_selection_weighs_scenes_and_requires_colour():
    """The rule that chooses checkpoints: held-out renders and real pairs by scene, half each, among the
    checkpoints that keep every real-pair folder's colour (a gray checkpoint is never preferred)."""
    from model.training.train import COLOUR_MISSED, scene_of, selection_score

    row = {"val_de2000": 4.0, "val_scenes": 5.0, "val_pairs_a": 6.0, "val_pairs_b": 3.0}
    kept = {**row, "val_colour_a": 1.0, "val_colour_min_a": 0.8, "val_colour_b": 0.9, "val_colour_min_b": 0.75}
    assert selection_score(kept) == 4.5
    assert selection_score({**kept, "val_colour_b": 0.7}) == 4.5 + COLOUR_MISSED  # folder drained on average
    assert selection_score({**kept, "val_colour_min_a": 0.6}) == 4.5 + COLOUR_MISSED  # one pair drained
    assert selection_score({**kept, "val_colour_a": 1.3}) == 4.5 + COLOUR_MISSED  # oversaturated
    assert selection_score({"val_de2000": 4.0}) == 4.0  # no real pairs: the renders alone
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert scene_of(a) == scene_of(a.copy()) != scene_of(b)
