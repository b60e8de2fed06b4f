"""The README's figures: the before/after gallery and the loss curves, from real photos and real run files."""

import csv

import pytest
from PIL import Image

from model.corrector import DEFAULT_CHECKPOINT, save_checkpoint
from model.training.gallery import main, read_history
from model.vae import WBVAE
from tests.conftest import wild_photos

ROWS = [
    {
        "epoch": e,
        "train_loss": 1.0 / e,
        "train_recon": 0.5 / e,
        "train_kl": 10.0 + e,
        "val_recon": 0.6 / e,
        "val_kl": 9.0 + e,
        "val_de2000": 8.0 - e,
        "val_de2000_cast": 9.0 - e,
        "val_de2000_neutral": 1.0,
    }
    for e in (1, 2, 3)
]


def test_gallery_and_loss_curves_from_metrics_csv(tmp_path):
    metrics = tmp_path / "run" / "metrics.csv"
    metrics.parent.mkdir()
    with metrics.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    photos = wild_photos()[:2]
    out = tmp_path / "docs"
    assert (
        main(
            [
                *map(str, photos),
                "--checkpoint",
                str(DEFAULT_CHECKPOINT),
                "--metrics",
                str(metrics),
                "--out",
                str(out),
                "--tile-height",
                "64",
            ]
        )
        == 0
    )
    with Image.open(out / "gallery.png") as g:
        assert g.format == "PNG"
        assert g.height >= 2 * 64 and g.width > sum(Image.open(p).width * 64 // Image.open(p).height for p in photos)
    with Image.open(out / "loss_curves.png") as c:
        assert c.format == "PNG" and c.width > 400


def test_history_from_a_resumable_checkpoint_and_plain_errors(tmp_path):
    model = WBVAE()
    save_checkpoint(tmp_path / "last.pt", model, history=ROWS)
    save_checkpoint(tmp_path / "best.pt", model, epoch=3)
    assert [r["epoch"] for r in read_history(tmp_path / "last.pt")] == [1, 2, 3]
    with pytest.raises(ValueError, match="no training history"):
        read_history(tmp_path / "best.pt")
    with pytest.raises(ValueError, match="not found"):
        read_history(tmp_path / "missing.csv")
    assert main([str(tmp_path / "missing.jpg"), "--out", str(tmp_path)]) == 2
