"""``Corrector``: owns one trained model and its device; photo in, corrected photo out."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from model.mapping import apply_matrix
from model.stats import Analysis, analyse
from model.vae import WBVAE, WBVAEConfig

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"


@dataclass
class Correction:
    """A correction estimated for one photo."""

    matrix: np.ndarray       # (3, 3) linear-RGB matrix
    cast_probability: float  # the model's belief that the photo had a colour cast


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(path: str | Path, model: WBVAE, **meta) -> None:
    """Save weights with their architecture (``model_args``) and free-form metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": model.config.to_dict(), "state_dict": model.state_dict(), "meta": meta}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[WBVAE, dict]:
    """Rebuild the model a checkpoint describes; ``ValueError`` naming the path if it cannot."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file
        raise ValueError(f"checkpoint {path} is unreadable: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a wbvae checkpoint (needs model_args and state_dict)")
    try:
        model = WBVAE(WBVAEConfig.from_dict(ckpt["model_args"]))
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} does not match the wbvae architecture: {exc}") from exc
    return model.to(device).eval(), ckpt.get("meta", {})


def per_sample_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with each row of a 2-D ``x`` its own product (``baddbmm`` over the batch).

    ``F.linear`` on a batch picks its matrix kernel by the batch size, so a photo's result changed in
    the 7th digit with the number of photos beside it (measured on the CPU); a batched product of
    one row each does not, and equals ``F.linear`` on one row bit for bit on the CPU (tested). So a
    photo's correction never depends on what else shares its forward pass (micro-batching).
    """
    if x.dim() != 2:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    w = layer.weight.t().expand(x.shape[0], *layer.weight.t().shape)       # (B, in, out), no copy
    if layer.bias is None:
        return torch.bmm(x.unsqueeze(1), w).squeeze(1)
    return torch.baddbmm(layer.bias.expand(x.shape[0], 1, -1), x.unsqueeze(1), w).squeeze(1)


class Corrector:
    """One model on one device. ``correct`` maps a uint8 (H, W, 3) photo to its corrected copy.

    Its model's linear layers compute each photo of a batch on its own (``per_sample_linear``), so
    ``estimate_batch`` gives every photo the result it gets alone (bit for bit on the CPU).
    """

    def __init__(self, model: WBVAE, device: torch.device, checkpoint_id: str = "unsaved", meta: dict | None = None):
        self.model = model.to(device).eval()
        for layer in self.model.modules():
            if type(layer) is torch.nn.Linear:
                layer.forward = partial(per_sample_linear, layer)  # this instance only; weights unchanged
        self.device = device
        self.checkpoint_id = checkpoint_id
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_CHECKPOINT,
                        device: str | torch.device | None = None) -> "Corrector":
        dev = resolve_device(device)
        model, meta = load_model(path, dev)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        return cls(model, dev, checkpoint_id=f"{Path(path).stem}-{digest}", meta=meta)

    @torch.inference_mode()
    def estimate_batch(self, analyses: list[Analysis]) -> list[Correction]:
        """Corrections for several photos' analyses in one forward pass (deterministic: uses mu)."""
        thumbs = torch.from_numpy(np.stack([a.thumb for a in analyses])).to(self.device)
        cues = torch.from_numpy(np.stack([a.cues for a in analyses])).to(self.device)
        gains = torch.from_numpy(np.stack([a.log_gains for a in analyses])).to(self.device)
        chroma = torch.from_numpy(np.stack([a.chroma for a in analyses])).to(self.device)
        mu, _ = self.model.encode(thumbs)
        matrices, logits, _ = self.model.correction(mu, cues, gains, chroma)
        matrices, probs = matrices.float().cpu().numpy(), torch.sigmoid(logits).float().cpu().numpy()
        return [Correction(m, float(p)) for m, p in zip(matrices, probs)]

    def estimate(self, img: np.ndarray) -> Correction:
        """The correction for one uint8 (H, W, 3) photo."""
        return self.estimate_batch([analyse(img)])[0]

    def correct(self, img: np.ndarray) -> np.ndarray:
        """Corrected copy of a uint8 (H, W, 3) sRGB photo, same shape."""
        return apply_matrix(img, self.estimate(img).matrix)

    def warm_up(self) -> None:
        """Run one small photo through every stage so the first request is not slow."""
        rng = np.random.default_rng(0)
        self.correct(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8))
