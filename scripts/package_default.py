"""Write a run's chosen checkpoint as the served default, with its dead zone, cast scale and model card.

    python scripts/package_default.py runs/NAME/best.pt --dead-zone 0.06 [--cast-scale 1.2] --command "..." \
        --hardware "2-core CPU" [--out model/checkpoints/default.pt]

Keeps the weights and architecture, sets ``dead_zone`` and ``cast_scale`` (``scripts/calibrate.py``),
drops the optimizer state, and records in ``meta`` what the checkpoint was trained on: the
training data's names and terms travel with the weights.
"""

import argparse
from datetime import date
from pathlib import Path

import torch

from model.corrector import load_model, save_checkpoint
from model.training.raw_renderer import HELDOUT_CAMERAS

TRAINING_DATA = (
    "Raw captures with measured illuminants, as 64x64 thumbnails (the shared raw-thumbs pack): "
    "Cube+ (Banic & Loncaric), the NUS 8-camera set (Cheng et al.), Intel-TAU (Laakom et al.) and the "
    "Gehler-Shi ColorChecker set (reprocessed); rendered through camera pipelines by model.training.raw_renderer. "
    f"Held out of training: {', '.join(HELDOUT_CAMERAS)}. The datasets are published for research; "
    "their terms apply to these weights."
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--dead-zone", type=float, required=True)
    p.add_argument("--cast-scale", type=float, default=1.0)
    p.add_argument("--command", required=True, help="the training command")
    p.add_argument("--hardware", required=True)
    p.add_argument("--out", type=Path, default=Path("model/checkpoints/default.pt"))
    a = p.parse_args()
    model, meta = load_model(a.checkpoint)
    model.config.dead_zone, model.config.cast_scale = a.dead_zone, a.cast_scale
    card = {
        "trained_on": TRAINING_DATA,
        "command": a.command,
        "seed": meta.get("train_config", {}).get("seed"),
        "hardware": a.hardware,
        "epoch": meta.get("epoch"),
        "val": meta.get("val"),
        "packaged": date.today().isoformat(),
        "train_config": meta.get("train_config"),
    }
    save_checkpoint(a.out, model, **card)
    print(f"wrote {a.out} ({a.out.stat().st_size / 2**20:.1f} MB), dead_zone {a.dead_zone}, cast_scale {a.cast_scale}")
    args = torch.load(a.out, weights_only=True)["model_args"]
    assert (args["dead_zone"], args["cast_scale"]) == (a.dead_zone, a.cast_scale)


if __name__ == "__main__":
    main()
