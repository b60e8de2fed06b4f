"""How realistic are the emulator's pairs? Numbers for docs/emulator.md.

    python -m model.training.emulator_report [--pairs 300] [--side 320] [--seed 0]

For every pair (input, ground truth) it fits the transform family that the
real Rendered WB pairs follow, "linearise -> 3x3 matrix -> per-channel cubic
curve" (least squares, input -> ground truth), and reports the residual mean
Delta E 2000 of the fit, plus the uncorrected Delta E 2000 (the size of the
cast). Populations:

* the ten real pairs of ``shared/data/real-pairs`` (chart pixels, all-zero in
  both images, excluded), at full resolution;
* emulated pairs from that scene's ground-truth photo;
* emulated pairs from the cached source photos (``model.training.photos``);

each with the emulator's default (ground truth in the input's style) and with
``gt_style="AS"`` (ground truth always in the neutral style, the dataset's
protocol). Pure NumPy + scikit-image; about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from model.colour import linear_to_srgb, srgb_to_linear
from model.training.emulator import CameraPipelineEmulator, EmulatorConfig
from model.training.photos import DEFAULT_CACHE, list_source_photos, load_photo

REAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-pairs"


def _u8(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) / 255.0


def fit_lin3x3_cubic(inp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Fit input -> gt (both (N,3) sRGB in [0,1]) with linearise, 3x3, cubic.

    Step 1: 3x3 matrix in linear RGB by least squares on pixels unclipped in
    both images. Step 2: per channel, a cubic polynomial from the
    sRGB-encoded matrix output to the ground truth's channel. Returns the
    fitted prediction (N,3) in [0,1].
    """
    li, lg = srgb_to_linear(inp), srgb_to_linear(gt)
    ok = (inp.max(1) < 0.98) & (gt.max(1) < 0.98) & (inp.min(1) > 0.005)
    if ok.sum() < 50:
        ok = np.ones(len(inp), dtype=bool)
    a, *_ = np.linalg.lstsq(li[ok], lg[ok], rcond=None)
    mid = linear_to_srgb(li @ a)
    pred = np.empty_like(gt)
    for c in range(3):
        x = mid[:, c].astype(np.float64)
        v = np.stack([x**3, x**2, x, np.ones_like(x)], axis=1)
        coef, *_ = np.linalg.lstsq(v, gt[:, c].astype(np.float64), rcond=None)
        pred[:, c] = v @ coef
    return np.clip(pred, 0.0, 1.0)


def de2000(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Delta E 2000 between two (N,3) sRGB arrays in [0, 1]."""
    return float(np.mean(deltaE_ciede2000(rgb2lab(a[None]), rgb2lab(b[None]))))


def pair_numbers(inp: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(uncorrected dE2000, fitted-transform residual dE2000) of one pair."""
    i = inp.reshape(-1, 3)
    g = gt.reshape(-1, 3)
    if mask is not None:
        i, g = i[mask.reshape(-1)], g[mask.reshape(-1)]
    return de2000(i, g), de2000(fit_lin3x3_cubic(i, g), g)


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    im = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    im.thumbnail((side, side), Image.BILINEAR)
    return _u8(np.asarray(im))


def real_pairs(real_dir: Path = REAL_DIR) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, input, ground truth) of each line of ``real_dir/pairs.tsv``, as float arrays."""
    out = []
    with open(real_dir / "pairs.tsv") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 2:
                continue
            i = _u8(np.asarray(Image.open(real_dir / row[0]).convert("RGB")))
            g = _u8(np.asarray(Image.open(real_dir / row[1]).convert("RGB")))
            out.append((row[0], i, g))
    return out


def summarise(vals: list[float]) -> str:
    v = np.asarray(vals)
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return f"mean {v.mean():5.2f}  Q1 {q1:5.2f}  median {q2:5.2f}  Q3 {q3:5.2f}  (n={len(v)})"


def emulated(
    photos: list[np.ndarray],
    n: int,
    config: EmulatorConfig,
    seed: int,
    masks: list[np.ndarray | None] | None = None,
    casts_only: bool = True,
) -> dict:
    """Render ``n`` pairs cycling over ``photos``; collect the numbers."""
    emu = CameraPipelineEmulator(config)
    rng = np.random.default_rng(seed)
    res = {"unc": [], "fit": [], "preset": [], "style": [], "small": []}
    k = 0
    while len(res["unc"]) < n:
        j = k % len(photos)
        k += 1
        inp, gt, info = emu.render_pair(photos[j], rng)
        if casts_only and not info["is_cast"]:
            continue
        m = masks[j] if masks is not None else None
        u, f = pair_numbers(_u8(inp), _u8(gt), m)
        res["unc"].append(u)
        res["fit"].append(f)
        res["preset"].append(info["preset"])
        res["style"].append(info["style"])
        res["small"].append(info["is_small_cast"])
    return res


def report(name: str, r: dict) -> None:
    print(f"\n## {name}")
    print(f"  fit residual  {summarise(r['fit'])}")
    print(f"  uncorrected   {summarise(r['unc'])}")
    unc = np.asarray(r["unc"])
    fit = np.asarray(r["fit"])
    small = np.asarray(r["small"])
    if small.any():
        print(f"  uncorrected, large casts only {summarise(unc[~small].tolist())}")
        print(f"  uncorrected, small casts only {summarise(unc[small].tolist())}")
    presets = np.asarray(r["preset"])
    styles = np.asarray(r["style"])
    line = "  per preset (large casts), mean uncorrected:"
    for p in "TFDCS":
        sel = (presets == p) & ~small
        if sel.any():
            line += f" {p} {unc[sel].mean():5.2f}"
    print(line)
    line = "  per style, mean fit residual:"
    for s in sorted(set(styles)):
        line += f" {s} {fit[styles == s].mean():4.2f}"
    print(line)


def matched_light(
    gt: np.ndarray,
    mask: np.ndarray,
    real: dict[str, np.ndarray],
    kelvin: float = 4100.0,
    camera: str = "Canon EOS 5D Mark III",
) -> None:
    """Per real pair, the emulated pair under one fixed true light.

    4100 K / Canon EOS 5D Mark III is the least-squares match of the
    effective (linear sRGB) channel gains of the real T, D, C and S pairs
    over all cameras and 3600-5200 K; the real F pair was not used.
    """
    print(f"\n## matched light: true {kelvin:.0f} K, {camera}, one pair per real pair")
    print("  pair  uncorrected real / emulated   fit residual real / emulated")
    for key in sorted(real, key=lambda k: ("TFDCS".index(k[0]), k[2:])):
        p, ps = key.split("_")
        cfg = EmulatorConfig(
            neutral_rate=0.0,
            small_cast_rate=0.0,
            style_probs={ps: 1.0},
            preset_probs={p: 1.0},
            kelvin_range=(kelvin, kelvin),
            tint_sigma=0.0,
            cameras=(camera,),
            min_large_mired=0.0,
            gt_style="AS",
        )
        inp, g, _ = CameraPipelineEmulator(cfg).render_pair(gt, np.random.default_rng(0))
        ue, fe = pair_numbers(_u8(inp), _u8(g), mask)
        ur, fr = pair_numbers(real[key], gt, mask)
        print(f"  {key}  {ur:6.2f} / {ue:6.2f}               {fr:5.2f} / {fe:5.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.training.emulator_report")
    ap.add_argument("--pairs", type=int, default=300, help="emulated pairs per population")
    ap.add_argument("--side", type=int, default=320, help="long side of emulated images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = ap.parse_args(argv)
    t0 = time.time()

    real = real_pairs()
    r = {"unc": [], "fit": [], "preset": [], "style": [], "small": []}
    gt_full = None
    for name, i, g in real:
        mask = (i.sum(-1) > 0) | (g.sum(-1) > 0)
        u, f = pair_numbers(i, g, mask)
        wb, ps = name.split("_")[1:3]
        ps = ps.split(".")[0]
        r["unc"].append(u)
        r["fit"].append(f)
        r["preset"].append(wb)
        r["style"].append(ps)
        r["small"].append(False)
        gt_full = g
        print(f"  real {name:22s} uncorrected {u:5.2f}  fit residual {f:4.2f}")
    report("real pairs (shared/data/real-pairs, full resolution, chart excluded)", r)
    full_mask = gt_full.sum(-1) > 0
    matched_light(gt_full, full_mask, {n.split("_", 1)[1].split(".")[0]: i for n, i, _ in real})

    # Emulated pairs from the real scene's ground truth (chart excluded).
    g = _resize(gt_full, a.side)
    gmask = g.sum(-1) > 0
    for label, cfg in [
        ("default (gt in the input's style)", EmulatorConfig()),
        ("gt_style='AS' (dataset protocol)", EmulatorConfig(gt_style="AS")),
    ]:
        res = emulated([g], a.pairs, cfg, a.seed, masks=[gmask])
        report(f"emulated from the real scene's ground truth, {label}", res)

    photos = list_source_photos(a.cache)
    if photos:
        imgs = [_resize(load_photo(p), a.side) for p in photos]
        for label, cfg in [("default", EmulatorConfig()), ("gt_style='AS'", EmulatorConfig(gt_style="AS"))]:
            res = emulated(imgs, a.pairs, cfg, a.seed + 1)
            report(f"emulated from {len(photos)} source photos, {label}", res)
    else:
        print(f"\n(no source photos in {a.cache}: run `python -m model.training.photos prepare`)")
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
