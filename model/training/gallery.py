"""The README's figures: ``python -m model.training.gallery``.

- ``gallery.png``: one column per photo, rows input / corrected, downscaled, each
  corrected photo labelled with the model's cast probability and the colour it keeps
  (``colour_kept``: its colourfulness over that of its own white point applied as a plain
  diagonal; below 0.7 the photo is drained toward gray). The correction is estimated on the
  full-size photo (as the service does) and applied, as served, to the small copy.
- ``temperatures.png``: one photo (``TEMPERATURE_PHOTO``, a warm-cast white cat) in a row: the input, the
  neutral correction, then the same correction rendered at the five camera presets (tungsten 2850 K …
  shade 7500 K), as ``POST /correct?temperature=K`` and the web page's Light slider render it.
- ``loss_curves.png``: the training curves of a run, from its ``metrics.csv``
  (written by ``python -m model.training.train``) or from the ``history`` a resumable
  checkpoint (``last.pt``) carries.

Regenerate after a new default checkpoint lands::

    python -m model.training.gallery --metrics runs/E/metrics.csv  # the run of the default checkpoint
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps

from model.corrector import DEFAULT_CHECKPOINT, Correction, Corrector
from model.mapping import apply_matrix
from model.training.decomposition import white_point_diagonal
from model.training.metrics import colour_ratio
from model.whitebalance import PRESETS

REPO = Path(__file__).resolve().parents[2]
WILD = REPO.parent / "shared" / "data" / "wild"
#: The photo of ``temperatures.png``: a warm cast over mostly neutral content (white fur, a hand, books).
TEMPERATURE_PHOTO = WILD / "Pexels_dot_com_Buenosia_Carol.jpg"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
TILE_HEIGHT = 200
GAP = 6
LABEL_WIDTH = 110
CAPTION_HEIGHT = 40
_SRGB = ImageCms.createProfile("sRGB")

# (title, [(column in metrics.csv, legend)]) per panel; columns absent from a run are skipped.
PANELS = (
    (
        "loss",
        [
            ("train_loss", "train total"),
            ("train_recon", "train recon"),
            ("val_recon", "val recon"),
            ("val_loss", "val total"),
        ],
    ),
    ("KL divergence", [("train_kl", "train KL"), ("val_kl", "val KL")]),
    (
        "validation dE2000, full frame",
        [
            ("val_de2000", "all"),
            ("val_de2000_cast", "casts"),
            ("val_de2000_neutral", "balanced in"),
            ("val_sog_de2000", "shades of gray (reference)"),
        ],
    ),
)


def load_photo(path: Path) -> np.ndarray:
    """Upright (EXIF orientation applied) uint8 (H, W, 3) sRGB pixels (an embedded ICC profile converted)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        icc = im.info.get("icc_profile")
        rgb = im.convert("RGB")
        if icc:
            rgb = ImageCms.profileToProfile(rgb, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _SRGB, outputMode="RGB")
        return np.asarray(rgb)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def render_gallery(photos: list[Path], corrector: Corrector, out: Path, tile_height: int = TILE_HEIGHT) -> Path:
    """Write the before/after figure of ``photos`` to ``out`` (PNG); returns ``out``."""
    if not photos:
        raise ValueError("no photos to show")
    columns = []
    for path in photos:
        rgb = load_photo(path)
        correction = corrector.estimate(rgb)
        small = _downscaled(rgb, tile_height)
        after = correction.map_rows(small)
        columns.append(
            (small, after, f"cast {correction.cast_probability:.2f}\ncolour kept {colour_kept(small, correction):.2f}")
        )
    width = LABEL_WIDTH + sum(c[0].shape[1] + GAP for c in columns)
    height = 2 * (tile_height + CAPTION_HEIGHT + GAP)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(15)
    for row, label in enumerate(("input", "corrected")):
        y = row * (tile_height + CAPTION_HEIGHT + GAP)
        draw.text((8, y + tile_height // 2), label, fill="black", font=font)
        x = LABEL_WIDTH
        for before, after, caption in columns:
            sheet.paste(Image.fromarray(before if row == 0 else after), (x, y))
            if row == 1:
                draw.text((x + 4, y + tile_height + 3), caption, fill="black", font=font)
            x += before.shape[1] + GAP
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def colour_kept(rgb: np.ndarray, correction: Correction) -> float:
    """The served output's colourfulness over that of the correction's own white point applied as a plain
    diagonal (``decomposition.white_point_diagonal``): 1 keeps the colour a pure white balance gives, near 0
    is a gray photo."""
    diagonal = apply_matrix(rgb, white_point_diagonal(correction.applied_matrix))
    return colour_ratio(correction.map_rows(rgb), diagonal)


def _downscaled(rgb: np.ndarray, tile_height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * tile_height / h)), tile_height)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def temperature_tiles(
    photo: Path, corrector: Corrector, tile_height: int = TILE_HEIGHT
) -> list[tuple[str, np.ndarray]]:
    """(caption, downscaled pixels) of ``temperatures.png``, left to right: the input, the neutral correction, and
    the correction rendered at each of ``PRESETS`` (estimated on the full-size photo, applied to the small copy)."""
    rgb = load_photo(photo)
    correction = corrector.estimate(rgb)
    small = _downscaled(rgb, tile_height)
    tiles = [("input", small), ("neutral correction", correction.map_rows(small))]
    for name, kelvin in sorted(PRESETS.items(), key=lambda item: item[1]):
        tiles.append((f"{name} {kelvin:.0f} K", correction.rendered_at(kelvin).map_rows(small)))
    return tiles


def render_temperatures(photo: Path, corrector: Corrector, out: Path, tile_height: int = TILE_HEIGHT) -> Path:
    """Write the one-photo-at-five-temperatures figure (see ``temperature_tiles``) to ``out`` (PNG); returns
    ``out``. Tile ``i`` lies at x = ``i * (tile width + GAP)``, y = 0; its caption below it."""
    tiles = temperature_tiles(photo, corrector, tile_height)
    tile_width = tiles[0][1].shape[1]
    sheet = Image.new("RGB", (len(tiles) * (tile_width + GAP) - GAP, tile_height + CAPTION_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(15)
    for i, (caption, pixels) in enumerate(tiles):
        x = i * (tile_width + GAP)
        sheet.paste(Image.fromarray(pixels), (x, 0))
        draw.text((x + 4, tile_height + 3), caption, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def read_history(source: Path) -> list[dict[str, float]]:
    """Per-epoch rows from a ``metrics.csv`` or from a checkpoint's ``meta["history"]``."""
    if not source.is_file():
        raise ValueError(f"training history not found: {source}")
    if source.suffix == ".csv":
        with source.open(newline="") as f:
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    else:
        meta = torch.load(source, map_location="cpu", weights_only=True).get("meta", {})
        rows = [dict(r) for r in meta.get("history", [])]
        if not rows:
            raise ValueError(f"{source} carries no training history (only last.pt does); pass the run's metrics.csv")
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{source} has no per-epoch rows with an 'epoch' column")
    return rows


def render_loss_curves(history: list[dict[str, float]], out: Path, title: str = "") -> Path:
    """Plot the training curves (see ``PANELS``) to ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4))
    for ax, (panel_title, series) in zip(axes, PANELS):
        for column, legend in series:
            if column in history[0]:
                ax.plot(
                    epochs,
                    [r.get(column, np.nan) for r in history],
                    label=legend,
                    linestyle="--" if "reference" in legend else "-",
                )
        if panel_title == "loss":
            ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        if ax.has_data():
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def find_photos(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        found += sorted(q for q in p.iterdir() if q.suffix.lower() in PHOTO_SUFFIXES) if p.is_dir() else [p]
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.training.gallery",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "photos", nargs="*", type=Path, default=[WILD], help="photos or folders of photos (default: %(default)s)"
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model (default: %(default)s)")
    p.add_argument(
        "--metrics",
        type=Path,
        metavar="FILE",
        help="the run's metrics.csv (e.g. runs/default/metrics.csv) or its last.pt; "
        "without it only the gallery is drawn",
    )
    p.add_argument(
        "--temperature-photo",
        type=Path,
        default=TEMPERATURE_PHOTO,
        metavar="PHOTO",
        help="the photo of temperatures.png (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the figures (default: %(default)s)")
    p.add_argument("--tile-height", type=int, default=TILE_HEIGHT, help="height of each photo in px")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        corrector = Corrector.from_checkpoint(args.checkpoint, "cpu")
        print(
            f"wrote {render_gallery(find_photos(args.photos), corrector, args.out / 'gallery.png', args.tile_height)}"
        )
        out = render_temperatures(args.temperature_photo, corrector, args.out / "temperatures.png", args.tile_height)
        print(f"wrote {out}")
        if args.metrics:
            history = read_history(args.metrics)
            out = render_loss_curves(history, args.out / "loss_curves.png", f"training run {args.metrics.parent.name}")
            print(f"wrote {out}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
