"""Raw renders beside real camera renderings, and the statistical baselines on raw captures.

``python -m model.training.raw_report [--speed] [--realism] [--families]`` prints the numbers of
docs/emulator.md, "Raw renders" (``--families``: renders of both pipelines beside the real pairs on
the fitted families); ``raw_baseline_estimates`` gives the gray world, shades of
gray, white patch and gray edge illuminants of a linear raw capture (``model.training.evaluate``
compares the model's illuminant with them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from model.mapping import apply_matrix
from model.stats import downsample
from model.training.decomposition import apply_polynomial, fitted_diagonal, fitted_matrix, fitted_polynomial
from model.training.emulator_report import pair_numbers, real_pairs, report
from model.training.eval_sets import list_pairs, load_pair
from model.training.metrics import clipped_or_crushed, delta_e2000
from model.training.raw_renderer import (
    _IMAGE_SIDE,
    DEFAULT_RAW_DIR,
    DEFAULT_REAL_PAIRS_DIR,
    RawCamera,
    RawRenderConfig,
    RawRenderer,
    load_raw_cameras,
    pair_rng,
    split_cameras,
)
from model.training.source_registry import downsample_mask

# --------------------------------------------------------------------------
# Statistical baselines on linear raw.


def _blur3(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of (H, W, C), edges replicated."""
    p = np.pad(x, ((1, 1), (0, 0), (0, 0)), mode="edge")
    x = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]


def raw_baseline_estimates(raw: np.ndarray, saturation: float = 0.98, p: float = 6.0) -> dict[str, np.ndarray]:
    """Illuminant estimates (camera RGB, sum 1) of a linear raw ``(H, W, 3)`` image.

    Keys: ``gray_world``, ``shades_of_gray`` (Minkowski ``p``),
    ``white_patch`` (channel max), ``white_patch_p99`` (99th percentile),
    ``gray_edge`` (1st order, Minkowski ``p``, after a 3x3 binomial blur).
    Pixels that are zero in every channel (masked chart) or have a channel at
    or above ``saturation`` are ignored (gray edge: gradients touching them).
    """
    img = np.asarray(raw, dtype=np.float64)
    valid = (img.max(axis=-1) > 0) & (img.max(axis=-1) < saturation)
    if not valid.any():
        valid = img.max(axis=-1) > 0
    px = img[valid]
    out = {
        "gray_world": px.mean(axis=0),
        "shades_of_gray": np.mean(px**p, axis=0) ** (1.0 / p),
        "white_patch": px.max(axis=0),
        "white_patch_p99": np.percentile(px, 99, axis=0),
    }
    smooth = _blur3(img)
    gy = np.zeros_like(smooth)
    gx = np.zeros_like(smooth)
    gy[1:-1] = 0.5 * (smooth[2:] - smooth[:-2])
    gx[:, 1:-1] = 0.5 * (smooth[:, 2:] - smooth[:, :-2])
    mag = np.sqrt(gx**2 + gy**2)
    ok = valid.copy()
    ok[1:-1, 1:-1] &= valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    ok[[0, -1], :] = False
    ok[:, [0, -1]] = False
    edges = mag[ok] if ok.any() else mag.reshape(-1, 3)
    out["gray_edge"] = np.mean(edges**p, axis=0) ** (1.0 / p)
    return {k: v / max(float(v.sum()), 1e-12) for k, v in out.items()}


# --------------------------------------------------------------------------
# Realism and speed (docs/emulator.md, "Raw renders").


def _load_real_pairs(real_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return real_pairs(Path(real_dir))


def _thumbnail_pair(
    inp: np.ndarray, gt: np.ndarray, side: int = _IMAGE_SIDE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-downscale a real pair (float [0,1]) to long side ``side``; mask of
    pixels with no chart (all-zero) pixel under them."""
    from PIL import Image

    h, w = gt.shape[:2]
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))

    def box(x: np.ndarray) -> np.ndarray:
        chans = [
            np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").resize(size, Image.BOX))
            for c in range(x.shape[-1])
        ]
        return np.stack(chans, axis=-1)

    chart = ((inp.sum(-1) == 0) | (gt.sum(-1) == 0)).astype(np.float32)[..., None]
    mask = box(chart)[..., 0] == 0

    def quantised(x: np.ndarray) -> np.ndarray:
        return (np.round(np.clip(box(x), 0, 1) * 255) / 255.0).astype(np.float32)

    return quantised(inp), quantised(gt), mask


def realism_numbers(
    cameras: list[RawCamera],
    pairs: int = 300,
    seed: int = 0,
    configs: dict[str, RawRenderConfig] | None = None,
    real_dir: str | Path = DEFAULT_REAL_PAIRS_DIR,
) -> dict[str, dict]:
    """Fitted-transform residual and cast size (dE2000) of raw renders and real pairs.

    Populations: the real pairs at full resolution and box-downscaled to
    64 px; for each of ``configs`` (name -> config; default: the default
    config as "raw renders"), ``pairs`` cast pairs from captures evenly spaced
    over all cameras. Chart pixels excluded. Each value is
    ``emulator_realism``'s dict (unc, fit, preset, style, small).
    """

    def empty() -> dict:
        return {"unc": [], "fit": [], "preset": [], "style": [], "small": []}

    out: dict[str, dict] = {}
    real_full, real_small = empty(), empty()
    for name, i, g in _load_real_pairs(Path(real_dir)):
        preset, style = name.split("_")[1], name.split("_")[2].split(".")[0]
        mask = (i.sum(-1) > 0) | (g.sum(-1) > 0)
        for res, (a, b, m) in ((real_full, (i, g, mask)), (real_small, _thumbnail_pair(i, g))):
            u, f = pair_numbers(a, b, m)
            res["unc"].append(u)
            res["fit"].append(f)
            res["preset"].append(preset)
            res["style"].append(style)
            res["small"].append(False)
    out["real pairs, full resolution"] = real_full
    out["real pairs, 64 px"] = real_small

    for label, config in (configs or {"raw renders": RawRenderConfig()}).items():
        renderer = RawRenderer(cameras, config)
        res = empty()
        # Evenly spaced captures, as many as needed for ``pairs`` casts.
        for index in np.linspace(0, len(renderer) - 1, 4 * pairs).astype(int):
            if len(res["unc"]) >= pairs:
                break
            inp, gt, info = renderer.render(int(index), pair_rng(seed, 0, int(index)))
            if not info["is_cast"]:
                continue
            a, b = inp.astype(np.float32) / 255.0, gt.astype(np.float32) / 255.0
            u, f = pair_numbers(a, b, (inp.sum(-1) > 0) | (gt.sum(-1) > 0))
            res["unc"].append(u)
            res["fit"].append(f)
            res["preset"].append(info["preset"])
            res["style"].append(info["style"])
            res["small"].append(info["is_small_cast"])
        out[label] = res
    return out


def _floors(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """The fitted 3x3 and the mean dE2000 of no mapping and of the fitted diagonal, 3x3 and polynomial."""
    m = fitted_matrix(inp, gt, valid).astype(np.float64)
    return m, (
        delta_e2000(inp, gt, valid),
        delta_e2000(apply_matrix(inp, fitted_diagonal(inp, gt, valid), protect_highlights=False), gt, valid),
        delta_e2000(apply_matrix(inp, m, protect_highlights=False), gt, valid),
        delta_e2000(apply_polynomial(inp, fitted_polynomial(inp, gt, valid)), gt, valid),
    )


def family_numbers(fits: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """What separates inputs from truths, over uint8 ``(input, truth, valid)`` pairs: the fitted 3x3's
    off-diagonal mass (sum of |off-diagonal| / sum of |diagonal|), the share of pairs whose fitted 3x3
    has complex eigenvalues (a hue turn), and the mean dE2000 floors of the diagonal, 3x3 and
    11-term polynomial families (``model.training.decomposition``) with their ratios; then the share of
    valid pixels clipped or crushed in either image (``metrics.clipped_or_crushed``) and the floors' ratios
    with those pixels left out of the fits and the scores (``unclipped``)."""
    off, turn, floors, lost, unclipped = [], [], [], [], []
    for inp, gt, valid in fits:
        m, floor = _floors(inp, gt, valid)
        off.append(np.abs(m - np.diag(np.diag(m))).sum() / np.abs(np.diag(m)).sum())
        turn.append(bool(np.any(np.abs(np.linalg.eigvals(m).imag) > 1e-6)))
        floors.append(floor)
        bad = clipped_or_crushed(inp) | clipped_or_crushed(gt)
        lost.append(float(bad[valid].mean()))
        if (valid & ~bad).sum() >= 64:
            unclipped.append(_floors(inp, gt, valid & ~bad)[1])
    none, diag, full, poly = np.mean(floors, axis=0)
    _, u_diag, u_full, u_poly = np.mean(unclipped, axis=0)
    return {
        "pairs": len(fits),
        "off_diagonal_mass": float(np.mean(off)),
        "off_diagonal_q1_q3": tuple(np.percentile(off, [25, 75]).round(2)),
        "complex_eigenvalues": float(np.mean(turn)),
        "none": none,
        "diagonal": diag,
        "3x3": full,
        "polynomial": poly,
        "3x3/diagonal": full / diag,
        "polynomial/diagonal": poly / diag,
        "clipped_or_crushed": float(np.mean(lost)),
        "unclipped 3x3/diagonal": u_full / u_diag,
        "unclipped polynomial/diagonal": u_poly / u_diag,
    }


def family_populations(
    cameras: list[RawCamera], real_tsvs: list[Path], pairs: int = 300, seed: int = 0
) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Populations for ``family_numbers``: each real-pair folder box-downscaled to 64 px (as training
    sees photos), and ``pairs`` cast renders of the ACR-like and of the in-camera pipeline."""
    out: dict[str, list] = {}
    for tsv in real_tsvs:
        items = []
        for pair in list_pairs(f"pairs={tsv}"):
            inp, gt, valid = load_pair(pair)
            small, _ = downsample(inp, _IMAGE_SIDE)
            gt_small, _ = downsample(gt, _IMAGE_SIDE)
            items.append((small, gt_small, downsample_mask(valid, small.shape[:2]) & (gt_small.max(2) > 0)))
        out[f"real: {Path(tsv).parent.name} (64 px)"] = items
    for label, rate in (("renders: ACR-like", 0.0), ("renders: in-camera", 1.0)):
        renderer = RawRenderer(cameras, RawRenderConfig(augment=False, neutral_rate=0.0, in_camera_rate=rate))
        items = []
        for index in np.linspace(0, len(renderer) - 1, pairs).astype(int):
            inp, gt, _ = renderer.render(int(index), pair_rng(seed, 0, int(index)))
            items.append((inp, gt, gt.max(2) > 0))  # the masked chart is no pixel of the photo
        out[label] = items
    return out


def render_speed(renderer: RawRenderer, pairs: int = 2000, seed: int = 0) -> float:
    """Pairs per second of ``render`` (this process, as configured)."""
    n = len(renderer)
    for i in range(20):
        renderer.render(i % n, pair_rng(seed, 0, i))
    t0 = time.perf_counter()
    for i in range(pairs):
        renderer.render((i * 7919) % n, pair_rng(seed, 1, i))
    return pairs / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.training.raw_report")
    ap.add_argument("--root", type=Path, default=DEFAULT_RAW_DIR)
    ap.add_argument("--realism", action="store_true", help="dE2000 numbers against the real pairs")
    ap.add_argument("--speed", action="store_true", help="pairs per second (set OMP_NUM_THREADS=1 for one thread)")
    ap.add_argument(
        "--families",
        nargs="*",
        type=Path,
        metavar="PAIRS_TSV",
        help="fitted-family numbers of renders beside these real pairs (default: both shared folders)",
    )
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.time()
    cameras = load_raw_cameras(a.root)
    print(f"loaded {sum(len(c) for c in cameras)} captures of {len(cameras)} cameras in {time.time() - t0:.1f} s")
    _, held = split_cameras(cameras)
    print(f"held out: {', '.join(c.name for c in held)}")
    print("camera                    captures  matrix     median label->locus (deg)")
    for c in cameras:
        kind = "estimated" if c.matrix_estimated else "DNG"
        print(f"  {c.name:24s} {len(c):6d}   {kind:9s}  {c.locus.label_distance_deg:.2f}")
    if a.speed:
        r = RawRenderer(cameras)
        print(
            f"speed: {render_speed(r):.0f} pairs/s (default config); "
            f"{render_speed(RawRenderer(cameras, RawRenderConfig(augment=False))):.0f} pairs/s (augment off)"
        )
    if a.families is not None:
        shared = DEFAULT_REAL_PAIRS_DIR.parent
        tsvs = a.families or [shared / "real-pairs" / "pairs.tsv", shared / "real-pairs-set2" / "pairs.tsv"]
        print(
            "\n| population | pairs | off-diagonal mass (Q1-Q3) | complex eigenvalues | none | diagonal | 3x3 "
            "| polynomial | 3x3/diagonal | polynomial/diagonal | clipped or crushed | 3x3/diagonal, unclipped "
            "| polynomial/diagonal, unclipped |"
        )
        print("| --- |" + " ---: |" * 12)
        for label, fits in family_populations(cameras, tsvs, a.pairs, a.seed).items():
            n = family_numbers(fits)
            q1, q3 = n["off_diagonal_q1_q3"]
            print(
                f"| {label} | {n['pairs']} | {n['off_diagonal_mass']:.2f} ({q1:.2f}-{q3:.2f}) | "
                f"{n['complex_eigenvalues']:.0%} | {n['none']:.2f} | {n['diagonal']:.2f} | {n['3x3']:.2f} | "
                f"{n['polynomial']:.2f} | {n['3x3/diagonal']:.2f} | {n['polynomial/diagonal']:.2f} | "
                f"{n['clipped_or_crushed']:.1%} | {n['unclipped 3x3/diagonal']:.2f} | "
                f"{n['unclipped polynomial/diagonal']:.2f} |"
            )
    if a.realism:
        t1 = time.time()
        configs = {
            "raw renders, default config": RawRenderConfig(),
            "raw renders, measured light only (relight_rate=0)": RawRenderConfig(relight_rate=0.0),
        }
        for name, r in realism_numbers(cameras, a.pairs, a.seed, configs).items():
            report(name, r)
        print(f"\nrealism: {time.time() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
