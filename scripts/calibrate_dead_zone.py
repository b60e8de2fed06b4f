"""Calibrate a checkpoint's ``dead_zone`` on held-out cameras' renders (seed 7, relighting on).

    python scripts/calibrate_dead_zone.py runs/NAME/best.pt

Prints, per value, the mean dE2000 of balanced renders (do no harm), cast renders, and all.
The rule (docs/accuracy.md): the smallest value whose balanced mean is <= 1.0 while the overall
mean rises by at most 0.1 over no dead zone.
"""

import sys

import numpy as np
import torch

from model.corrector import Corrector, load_model
from model.training.metrics import delta_e2000
from model.training.raw_renderer import RawRenderConfig, RawRenderer, load_raw_cameras, split_cameras

_, held = split_cameras(load_raw_cameras())
r = RawRenderer(held, RawRenderConfig(augment=False, relight_rate=0.5))
frames = [r.render(int(i), np.random.default_rng([7, int(i)]))[:2] for i in np.linspace(0, len(r) - 1, 300).astype(int)]
model, meta = load_model(sys.argv[1])
for tau in (0.0, 0.02, 0.04, 0.06, 0.08, 0.10):
    model.config.dead_zone = tau
    c = Corrector(model, torch.device("cpu"))
    dn, dc = [], []
    for inp, gt in frames:
        (dn if np.array_equal(inp, gt) else dc).append(delta_e2000(c.correct(inp), gt))
    summary = f"balanced {np.mean(dn):.3f} (n={len(dn)}) cast {np.mean(dc):.3f} all {np.mean(dn + dc):.3f}"
    print(f"dead_zone {tau:.2f}: {summary}", flush=True)
