"""Does any signal track the error well enough to ship as a confidence? ``python -m model.training.confidence``.

For each frame, draw ``samples`` latents z ~ N(mu, sigma) and measure how far
the white point each sampled correction produces wanders (mean distance in
log-chroma from the deterministic one). A confidence worth showing users must
rank frames like their real error does: reported as the Spearman correlation
between spread and dE2000, on emulated held-out frames and on the real pairs. ``signals`` adds the other
candidates the serving core could compute; ``main`` prints their Spearman correlations (docs/confidence.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from model.corrector import DEFAULT_CHECKPOINT, Corrector
from model.mapping import apply_matrix
from model.stats import analyse
from model.training.eval_sets import list_pairs, load_pair
from model.training.metrics import delta_e2000
from model.training.source_registry import source


@torch.no_grad()
def latent_spread(corrector: Corrector, img: np.ndarray, samples: int = 16, seed: int = 0) -> float:
    """Mean log-chroma distance between sampled corrections' white points and the deterministic one."""
    model, dev = corrector.model, corrector.device
    a = analyse(img)
    inputs = [torch.from_numpy(x[None]).to(dev) for x in (a.thumb, a.cues, a.log_gains, a.chroma)]
    mu, logvar = model.encode(inputs[0])
    gen = torch.Generator(device=dev).manual_seed(seed)
    z = mu + torch.randn(samples, mu.shape[1], generator=gen, device=dev) * torch.exp(0.5 * logvar)
    rep = [x.expand(samples, *x.shape[1:]) for x in inputs[1:]]
    sampled, _, _ = model.correction(z, *rep)
    centre, _, _ = model.correction(mu, *inputs[1:])

    def chroma(m: torch.Tensor) -> torch.Tensor:
        w = (m @ torch.ones(3, device=dev)).clamp(min=1e-6).log()
        return torch.stack([w[..., 1] - w[..., 0], w[..., 1] - w[..., 2]], -1)

    return float((chroma(sampled) - chroma(centre)).norm(dim=-1).mean())


def measure(corrector: Corrector, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    spread, error = [], []
    for inp, gt, valid in frames:
        spread.append(latent_spread(corrector, inp))
        error.append(delta_e2000(apply_matrix(inp, corrector.estimate(inp).matrix), gt, valid))
    spread, error = np.array(spread), np.array(error)
    return {
        "n": len(frames),
        "spearman": float(spearmanr(spread, error).statistic),
        "spread_mean": float(spread.mean()),
        "error_mean": float(error.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.training.confidence", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--renders", type=int, default=600, help="renders of the held-out cameras (0: skip)")
    p.add_argument(
        "--pairs",
        nargs="*",
        default=["../shared/data/real-pairs/pairs.tsv", "../shared/data/real-pairs-set2/pairs.tsv"],
        help="real pairs TSVs, each measured alone and all pooled",
    )
    args = p.parse_args(argv)
    from model.training.config import TrainConfig

    corrector = Corrector.from_checkpoint(args.checkpoint, "cpu")
    rows = []
    if args.renders:
        renders = [(i, g, m) for _, i, g, m in source("raw").evaluation(TrainConfig(), args.renders)]
        rows.append(("held-out camera renders", measure_signals(corrector, renders)))
    pooled = []
    for tsv in args.pairs:
        pairs = [load_pair(x) for x in list_pairs(f"pairs={tsv}")]
        pooled += pairs
        rows.append((tsv, measure_signals(corrector, pairs)))
    if len(args.pairs) > 1:
        rows.append(("real pairs pooled", measure_signals(corrector, pooled)))
    names = [k for k in rows[0][1] if k not in ("n", "error_mean")]
    print("| frames | n | mean dE2000 | " + " | ".join(names) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for name, r in rows:
        cells = " | ".join(f"{r[k]:.2f}" for k in names)
        print(f"| {name} | {r['n']} | {r['error_mean']:.2f} | {cells} |")
    return 0


def _white_chroma(white_rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) positive RGB -> (..., 2) log-chroma (log G/R, log G/B)."""
    w = white_rgb.clamp(min=1e-6).log()
    return torch.stack([w[..., 1] - w[..., 0], w[..., 1] - w[..., 2]], -1)


@torch.no_grad()
def signals(corrector: Corrector, img: np.ndarray) -> dict[str, float]:
    """Candidate uncertainty signals for one photo, each meant to grow with the correction's error.

    ``latent_spread`` (above); ``estimate_spread``: mean log-chroma distance of the five statistical estimates and
    ChromaNet's white point from their centroid (estimators that disagree); ``net_vs_final``: distance between
    ChromaNet's white point and the correction's; ``correction_size``: distance of the correction's white point
    from neutral; ``no_cast``: 1 - the cast probability.
    """
    model, dev = corrector.model, corrector.device
    a = corrector.analyse(img)
    inputs = [torch.from_numpy(x[None]).to(dev) for x in (a.thumb, a.cues, a.log_gains, a.chroma)]
    mu, _ = model.encode(inputs[0])
    matrix, logit, white = model.correction(mu, *inputs[1:])
    # log_gains are luminance-preserving gains: the estimated illuminant is exp(-log_gain)
    estimates = _white_chroma((-inputs[2][0]).exp())  # (K, 2)
    net = torch.stack([-white[0, 0], -white[0, 1]])  # ChromaNet's gains G/R, G/B in log -> illuminant chroma
    points = torch.cat([estimates, net[None]])
    final = _white_chroma(torch.linalg.solve(matrix[0], torch.ones(3, device=dev)))
    return {
        "latent_spread": latent_spread(corrector, img),
        "estimate_spread": float((points - points.mean(0)).norm(dim=-1).mean()),
        "net_vs_final": float((net - final).norm()),
        "correction_size": float(final.norm()),
        "no_cast": float(1 - torch.sigmoid(logit)[0]),
    }


def measure_signals(corrector: Corrector, frames) -> dict:
    """Spearman(signal, dE2000 of the full correction) for every ``signals`` candidate over ``frames``
    (``(input, ground truth, mask)`` triples)."""
    rows, error = [], []
    for inp, gt, valid in frames:
        rows.append(signals(corrector, inp))
        error.append(delta_e2000(apply_matrix(inp, corrector.estimate(inp).matrix), gt, valid))
    err = np.array(error)
    out = {"n": len(rows), "error_mean": float(err.mean())}
    for name in rows[0]:
        out[name] = float(spearmanr([r[name] for r in rows], err).statistic)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
