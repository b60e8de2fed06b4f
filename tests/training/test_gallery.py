"""The README's figures: the before/after gallery, the one photo at five temperatures and the loss curves, from
real photos and real run files."""

import csv

import numpy as np
import pytest
from PIL import Image

from model.corrector import DEFAULT_CHECKPOINT, Corrector, save_checkpoint
from model.training.gallery import (
    CAPTION_HEIGHT,
    GAP,
    TEMPERATURE_PHOTO,
    colour_kept,
    load_photo,
    main,
    read_history,
    render_temperatures,
    temperature_tiles,
)
from model.vae import WBVAE
from model.whitebalance import PRESETS
from tests.conftest import wild, wild_photos

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
                "--temperature-photo",
                str(photos[1]),
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
    with Image.open(out / "temperatures.png") as t, Image.open(photos[1]) as p:
        tile_width = round(p.width * 64 / p.height)
        assert t.format == "PNG" and t.size == (7 * (tile_width + GAP) - GAP, 64 + CAPTION_HEIGHT)


def test_temperatures_figure_goes_from_blue_at_tungsten_to_warm_at_shade(tmp_path):
    """The row is input, neutral, then the presets in kelvin order; the file holds exactly those tiles, and each
    preset renders the same correction bluer the lower its temperature (a camera set to 2850 K renders blue)."""
    photo = wild(TEMPERATURE_PHOTO.name)
    corrector = Corrector.from_checkpoint(DEFAULT_CHECKPOINT, "cpu")
    tile_height = 48
    out = render_temperatures(photo, corrector, tmp_path / "temperatures.png", tile_height)
    tiles = temperature_tiles(photo, corrector, tile_height)
    assert [caption for caption, _ in tiles] == [
        "input",
        "neutral correction",
        "tungsten 2850 K",
        "fluorescent 3800 K",
        "daylight 5500 K",
        "cloudy 6500 K",
        "shade 7500 K",
    ]
    with Image.open(photo) as p:
        tile_width = round(p.width * tile_height / p.height)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (7 * (tile_width + GAP) - GAP, tile_height + CAPTION_HEIGHT)
        sheet = np.asarray(im.convert("RGB"))
    shown = [sheet[:tile_height, i * (tile_width + GAP) : i * (tile_width + GAP) + tile_width] for i in range(7)]
    for (_, pixels), tile in zip(tiles, shown):
        assert np.array_equal(pixels, tile)  # the figure shows the tiles, lossless, in this order

    def blue_over_red(rgb: np.ndarray) -> float:
        mean = rgb.reshape(-1, 3).astype(np.float64).mean(0)
        return mean[2] / mean[0]

    input_, neutral, *presets = map(blue_over_red, shown)
    assert neutral > input_ + 0.05  # the warm cast is corrected
    assert all(a > b + 0.02 for a, b in zip(presets, presets[1:])), presets  # tungsten bluest ... shade warmest
    assert presets[0] > neutral + 0.2 and presets[-1] < neutral  # 2850 K well bluer, 7500 K warmer than neutral
    assert abs(presets[list(PRESETS).index("cloudy")] - neutral) < 0.01  # 6500 K is about the neutral's 6504 K


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


def test_no_wild_photo_comes_out_gray():
    """What a user sees (issue "Keep the colour"): every wild photo, corrected by the default as served,
    keeps at least 70 % of the colourfulness its own white point gives as a plain diagonal (the default of
    2026-12-07 kept 6-48 % on these: two came back black-and-white)."""
    corrector = Corrector.from_checkpoint(DEFAULT_CHECKPOINT, "cpu")
    kept = {}
    for path in wild_photos():
        rgb = load_photo(path)
        small = np.asarray(Image.fromarray(rgb).resize((512, round(512 * rgb.shape[0] / rgb.shape[1]))))
        kept[path.name] = colour_kept(small, corrector.estimate(rgb))
    assert min(kept.values()) >= 0.7, kept
