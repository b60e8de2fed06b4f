"""Does the spread over latent samples track the error? ``python -m model.training.confidence``.

For each frame, draw ``samples`` latents z ~ N(mu, sigma) and measure how far
the white point each sampled correction produces wanders (mean distance in
log-chroma from the deterministic one). A confidence worth showing users must
rank frames like their real error does: reported as the Spearman correlation
between spread and dE2000, on emulated held-out frames and on the real pairs.
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
from model.training.source_registry import load_heldout_frames


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
    p.add_argument("--heldout", type=int, default=64, help="emulated held-out frames (0: skip)")
    p.add_argument("--pairs", default="../shared/data/real-pairs/pairs.tsv", help="real pairs TSV ('' to skip)")
    args = p.parse_args(argv)
    corrector = Corrector.from_checkpoint(args.checkpoint, "cpu")
    rows = []
    if args.heldout:
        frames = [(i, g, v) for i, g, v, cast in load_heldout_frames(args.heldout, size=256)]
        rows.append(("emulated, held-out photos", measure(corrector, frames)))
    if args.pairs:
        rows.append(("real pairs", measure(corrector, [load_pair(x) for x in list_pairs(f"pairs={args.pairs}")])))
    print("| frames | n | Spearman(spread, dE2000) | mean spread | mean dE2000 |\n| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(f"| {name} | {r['n']} | {r['spearman']:.2f} | {r['spread_mean']:.4f} | {r['error_mean']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
