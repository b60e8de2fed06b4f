"""Figures of a training run: loss curves and example corrections."""

from __future__ import annotations

from pathlib import Path

import torch

from model.mapping import apply_matrix
from model.training.metrics import delta_e2000 as mean_de2000
from model.training.source_registry import MODEL_INPUTS, make_sample
from model.vae import WBVAE


def save_figures(run: Path, history: list[dict], model: WBVAE, frames: list, device: torch.device) -> None:
    """loss_curves.png (train/val per epoch) and outputs.png (input / corrected / ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train total")
    axes[0].plot(epochs, [h["train_recon"] for h in history], label="train recon")
    axes[0].plot(epochs, [h["val_recon"] for h in history], label="val recon")
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(epochs, [h["train_kl"] for h in history], label="train KL")
    axes[1].plot(epochs, [h["val_kl"] for h in history], label="val KL")
    axes[1].set_title("KL divergence")
    axes[1].legend()
    axes[2].plot(epochs, [h["val_de2000"] for h in history], label="val dE2000 (all)")
    axes[2].plot(epochs, [h["val_de2000_cast"] for h in history], label="val dE2000 (casts)")
    axes[2].plot(epochs, [h["val_de2000_neutral"] for h in history], label="val dE2000 (balanced in)")
    axes[2].set_title("validation, full frame")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(run / "loss_curves.png", dpi=90)
    plt.close(fig)

    shown = [f for f in frames if f[3]][:6]
    if not shown:
        return
    model.eval()
    fig, axes = plt.subplots(len(shown), 3, figsize=(9, 2.6 * len(shown)), squeeze=False)
    with torch.no_grad():
        for row, (inp, gt, valid, _) in zip(axes, shown):
            s = make_sample(inp, gt, valid, True, None, model.config)
            out = model(*(s[k][None].to(device) for k in MODEL_INPUTS), sample=False)
            corrected = apply_matrix(inp, out["matrix"][0].float().cpu())
            for ax, img, title in zip(row, (inp, corrected, gt), ("input", "corrected", "ground truth")):
                ax.imshow(img)
                ax.set_title(
                    f"{title} ({mean_de2000(img, gt, valid):.1f} dE)" if title != "ground truth" else title, fontsize=8
                )
                ax.axis("off")
    model.train()
    fig.tight_layout()
    fig.savefig(run / "outputs.png", dpi=80)
    plt.close(fig)
