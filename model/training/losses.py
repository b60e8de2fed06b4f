"""Training losses: the seed's VAE loss plus the correction head's (mapped thumbnail, white point,
cast, identity on neutral pairs, ChromaNet's white point)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from model.colour import linear_to_srgb, srgb_to_linear
from model.training.source_registry import MODEL_INPUTS
from model.vae import vae_loss

if TYPE_CHECKING:
    from model.training.config import TrainConfig


def correction_loss(matrix: torch.Tensor, batch: dict) -> torch.Tensor:
    """L1 in sRGB between the input thumbnail mapped by ``matrix`` and the ground-truth thumbnail."""
    lin = srgb_to_linear(batch["thumb"])  # (B, 3, S, S)
    mapped = torch.einsum("bij,bjhw->bihw", matrix, lin)
    out = linear_to_srgb(mapped)
    mask = batch["mask"]
    return ((out - batch["gt_thumb"]).abs() * mask).sum() / (3 * mask.sum()).clamp(min=1)


def white_point_loss(matrix: torch.Tensor, batch: dict) -> torch.Tensor:
    """Angle (degrees) between white seen through the emulated cast then the correction, and white."""
    has = batch["has_matrix"]
    white = torch.ones(matrix.shape[0], 3, 1, device=matrix.device)
    seen = (matrix @ batch["cast_matrix"] @ white).squeeze(-1)
    cos = F.cosine_similarity(seen, white.squeeze(-1), dim=1).clamp(-1 + 1e-6, 1 - 1e-6)
    return (torch.rad2deg(torch.acos(cos)) * has).sum() / has.sum().clamp(min=1)


def chroma_loss(white: torch.Tensor, batch: dict) -> torch.Tensor:
    """L1 in log-chroma between ChromaNet's white point and the input's true white (emulated pairs)."""
    has = batch["has_matrix"]
    seen = (batch["cast_matrix"] @ torch.ones(white.shape[0], 3, 1, device=white.device)).squeeze(-1).clamp(min=1e-4)
    target = torch.stack([torch.log(seen[:, 1] / seen[:, 0]), torch.log(seen[:, 1] / seen[:, 2])], dim=1)
    return ((white - target).abs().sum(1) * has).sum() / has.sum().clamp(min=1)


def training_loss(model, batch: dict, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    out = model(*(batch[k] for k in MODEL_INPUTS))
    total_vae, recon, kl = vae_loss(out["recon"], batch["gt_thumb"], out["mu"], out["logvar"], cfg.beta)
    matrix = out["matrix"].float()
    mapping = correction_loss(matrix, batch)
    white = white_point_loss(matrix, batch)
    cast = F.binary_cross_entropy_with_logits(out["cast_logit"].float(), batch["is_cast"])
    neutral = 1 - batch["is_cast"]
    eye = torch.eye(3, device=matrix.device)
    identity = (((matrix - eye) ** 2).sum((1, 2)) * neutral).sum() / neutral.sum().clamp(min=1)
    chroma = chroma_loss(out["white"].float(), batch)
    total = (
        total_vae
        + cfg.map_weight * mapping
        + cfg.white_point_weight * white
        + cfg.cast_weight * cast
        + cfg.identity_weight * identity
        + cfg.chroma_weight * chroma
    )
    return {
        "loss": total,
        "recon": recon,
        "kl": kl,
        "map": mapping,
        "white": white,
        "cast": cast,
        "identity": identity,
        "chroma": chroma,
    }
