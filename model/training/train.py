"""Train the white-balance VAE: ``python -m model.training.train [SOURCE ...] [options]``.

Sources (combinable): ``synthetic`` (camera-pipeline emulator over the photo
cache of ``python -m model.training.sources prepare`` plus procedural scenes),
``set2=DIR``, ``set1=DIR``, ``cube=DIR``, ``pairs=FILE.tsv``. Runs unchanged
under ``torchrun --nproc_per_node=N`` (DistributedDataParallel: gloo on CPU,
NCCL on GPU). Writes to ``--out``: ``metrics.csv`` (per epoch), ``best.pt``
(chosen by full-frame dE2000 on held-out photos), ``last.pt`` (resumable),
``loss_curves.png`` and ``outputs.png``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from model.colour import linear_to_srgb, srgb_to_linear
from model.corrector import resolve_device, save_checkpoint
from model.training.emulator import CameraPipelineEmulator, EmulatorConfig
from model.mapping import apply_matrix
from model.training.metrics import delta_e2000 as mean_de2000
from model.training.baselines import BASELINES
from model.stats import THUMB_SIZE, analyse_small, downsample
from model.vae import WBVAE, WBVAEConfig, vae_loss

MODEL_INPUTS = ("thumb", "cues", "log_gains", "chroma")
DEFAULT_CACHE = Path(os.environ.get("WBVAE_SOURCES", Path.home() / ".cache" / "wbvae" / "sources"))


@dataclass
class TrainConfig:
    sources: list[str] = field(default_factory=lambda: ["synthetic"])
    photo_cache: str = str(DEFAULT_CACHE)
    out: str = "runs/train"
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    beta: float = 0.00025
    latent_dim: int = 128
    use_cues: bool = True
    crop_size: int = 128
    map_weight: float = 10.0
    white_point_weight: float = 0.05
    cast_weight: float = 0.2
    identity_weight: float = 1.0
    chroma_weight: float = 5.0
    use_chroma_net: bool = True
    use_global_mix: bool = True
    gate_base: bool = True
    neutral_rate: float = 0.25
    gt_style: str = "same"
    view_min_scale: float = 0.35
    view_keep_aspect: bool = False
    small_cast_rate: float = 0.3
    procedural_rate: float = 0.2
    recolour_rate: float = 0.5
    head_dropout: float = 0.5
    val_fraction: float = 0.25
    val_size: int = 96
    seed: int = 0
    workers: int = 1
    device: str = "auto"
    resume: str | None = None
    folds: str | None = None
    fold: int = 1
    max_minutes: float | None = None
    max_source_cast: float = 0.5
    base_lr_scale: float = 10.0


# ----------------------------------------------------------------- samples
def make_sample(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, is_cast: bool,
                cast_matrix: np.ndarray | None) -> dict:
    """Tensors for one training pair: the model's inputs (same code as inference) and targets."""
    small, clipped = downsample(inp)
    gt_small, _ = downsample(gt)
    a = analyse_small(small, clipped)
    gt_thumb = np.asarray(Image.fromarray(gt_small).resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR))
    keep = ~clipped if valid is None else ~clipped & downsample_mask(valid, small.shape[:2])
    mask = np.asarray(Image.fromarray(keep.astype(np.uint8) * 255).resize((THUMB_SIZE, THUMB_SIZE),
                                                                            Image.NEAREST)) > 0
    return {
        "thumb": torch.from_numpy(a.thumb), "cues": torch.from_numpy(a.cues),
        "log_gains": torch.from_numpy(a.log_gains), "chroma": torch.from_numpy(a.chroma),
        "gt_thumb": torch.from_numpy((gt_thumb.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()),
        "mask": torch.from_numpy(mask[None].astype(np.float32)),
        "is_cast": torch.tensor(float(is_cast)),
        "cast_matrix": torch.from_numpy(np.asarray(cast_matrix if cast_matrix is not None else np.eye(3),
                                                   dtype=np.float32)),
        "has_matrix": torch.tensor(float(cast_matrix is not None)),
    }


def downsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest) to ``shape``."""
    if mask.shape == shape:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 0


def random_view(img: np.ndarray, rng: np.random.Generator, size: int, min_scale: float = 0.35,
                keep_aspect: bool = False) -> np.ndarray:
    """A random crop covering ``min_scale``..1 of the short side (square), or of both sides (``keep_aspect``:
    the photo's own shape, squashed to a square as inference squashes a whole photo), flipped at random,
    resized to ``size``."""
    h, w = img.shape[:2]
    scale = rng.uniform(min_scale, 1.0)
    if keep_aspect:
        ch, cw = max(min(h, 8), int(h * scale)), max(min(w, 8), int(w * scale))
    else:
        ch = cw = max(int(min(h, w) * scale), min(h, w, 8))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.2:
        crop = crop[::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR,
                                                                          reducing_gap=2.0))


def recolour(img: np.ndarray, rng: np.random.Generator, max_degrees: float = 40.0) -> np.ndarray:
    """New content with the same white: rotate hues about the neutral axis and scale saturation (linear RGB).

    Grays stay gray, so a balanced photo stays balanced; the model cannot tie
    an illuminant to a memorised palette.
    """
    lin = srgb_to_linear(img.astype(np.float32) / 255.0)
    theta = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.full(3, 1 / np.sqrt(3.0))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * cross @ cross  # Rodrigues
    neutral = np.outer(k, k)
    m = neutral + rng.uniform(0.7, 1.3) * rotation @ (np.eye(3) - neutral)
    out = linear_to_srgb(np.clip(lin @ m.T.astype(np.float32), 0.0, 1.0))
    return (out * 255.0 + 0.5).astype(np.uint8)


def fit_long_side(img: np.ndarray, size: int) -> np.ndarray:
    """Whole frame, long side resized to ``size`` (for full-frame validation)."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR,
                                                  reducing_gap=2.0))


def needs_correction(inp: np.ndarray, gt: np.ndarray, info: dict) -> bool:
    """A cast, or (with a ground truth in another picture style) a style change: anything but the identity."""
    return bool(info["is_cast"]) or not np.array_equal(inp, gt)


class SyntheticPairs(Dataset):
    """Emulator pairs from well-balanced photos (and procedural scenes); sample i is a pure function of (seed, epoch, i)."""

    def __init__(self, photos: list[np.ndarray], length: int, size: int, emulator: CameraPipelineEmulator,
                 seed: int, procedural_rate: float, full_frame: bool = False, recolour_rate: float = 0.0,
                 view_min_scale: float = 0.35, view_keep_aspect: bool = False):
        self.photos, self.length, self.size = photos, length, size
        self.view_min_scale, self.view_keep_aspect = view_min_scale, view_keep_aspect
        self.emulator, self.seed, self.procedural_rate = emulator, seed, procedural_rate
        self.full_frame, self.recolour_rate, self.epoch = full_frame, recolour_rate, 0

    def __len__(self) -> int:
        return self.length

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, dict]:
        from model.training.sources import procedural_scene

        rng = np.random.default_rng([self.seed, self.epoch, i])
        if not self.photos or rng.random() < self.procedural_rate:
            scene = procedural_scene(rng, self.size)
        else:
            photo = self.photos[int(rng.integers(len(self.photos)))] if not self.full_frame \
                else self.photos[i % len(self.photos)]
            view = fit_long_side(photo, self.size) if self.full_frame else random_view(
                photo, rng, self.size, self.view_min_scale, self.view_keep_aspect)
            if not self.full_frame and rng.random() < self.recolour_rate:
                view = recolour(view, rng)
            scene = view.astype(np.float32) / 255.0
        return self.emulator.render_pair(scene, rng)

    def __getitem__(self, i: int) -> dict:
        inp, gt, info = self.render(i)
        return make_sample(inp, gt, None, needs_correction(inp, gt, info), info["cast_matrix"])


class RealPairs(Dataset):
    """Pairs from a dataset on disk, kept in memory at the statistics size (long side <= 256)."""

    def __init__(self, pairs: list, size: int, seed: int, train: bool):
        from model.training.datasets import load_pair

        self.items = []
        for p in pairs:
            inp, gt, valid = load_pair(p)
            small, _ = downsample(inp)
            self.items.append((small, downsample(gt)[0], downsample_mask(valid, small.shape[:2]),
                               not np.array_equal(inp, gt)))
        self.size, self.seed, self.train, self.epoch = size, seed, train, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        inp, gt, valid, is_cast = self.items[i]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i, 1])
            stacked = np.concatenate([inp, gt, np.repeat(valid[..., None].astype(np.uint8) * 255, 3, -1)], -1)
            h, w = inp.shape[:2]
            side = max(8, int(min(h, w) * rng.uniform(0.6, 1.0)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = stacked[y:y + side, x:x + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.ascontiguousarray(crop)
            inp, gt = crop[..., :3], crop[..., 3:6]
            valid = crop[..., 6] > 127
        return make_sample(inp, gt, valid, is_cast, None)


# ------------------------------------------------------------------- loss
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
    total = (total_vae + cfg.map_weight * mapping + cfg.white_point_weight * white
             + cfg.cast_weight * cast + cfg.identity_weight * identity + cfg.chroma_weight * chroma)
    return {"loss": total, "recon": recon, "kl": kl, "map": mapping, "white": white, "cast": cast,
            "identity": identity, "chroma": chroma}


# ------------------------------------------------------------- validation
def baseline_scores(frames: list) -> dict[str, float]:
    """Shades of gray on the same validation frames: the fallback the model must beat."""
    sog = BASELINES["shades of gray"]
    return {"val_sog_de2000": float(np.mean([mean_de2000(sog(inp), gt, valid) for inp, gt, valid, _ in frames]))}


@torch.no_grad()
def validate(model: WBVAE, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]],
             device: torch.device, cfg: TrainConfig) -> dict[str, float]:
    """Full-frame dE2000 of the corrected image (cast and neutral pairs), plus the VAE losses."""
    model.eval()
    de_cast, de_neutral, losses = [], [], []
    for inp, gt, valid, is_cast in frames:
        s = make_sample(inp, gt, valid, is_cast, None)
        batch = {k: v[None].to(device) for k, v in s.items()}
        out = model(*(batch[k] for k in MODEL_INPUTS), sample=False)
        _, recon, kl = vae_loss(out["recon"], batch["gt_thumb"], out["mu"], out["logvar"], cfg.beta)
        losses.append((recon.item(), kl.item()))
        corrected = apply_matrix(inp, out["matrix"][0].float().cpu())
        (de_cast if is_cast else de_neutral).append(mean_de2000(corrected, gt, valid))
    model.training.train()
    rec, kl = np.mean(losses, axis=0)
    all_de = de_cast + de_neutral
    return {"val_recon": float(rec), "val_kl": float(kl), "val_loss": float(rec + cfg.beta * kl),
            "val_de2000": float(np.mean(all_de)),
            "val_de2000_cast": float(np.mean(de_cast)) if de_cast else float("nan"),
            "val_de2000_neutral": float(np.mean(de_neutral)) if de_neutral else float("nan")}


# ------------------------------------------------------------------ setup
def scene_name(path: Path) -> str:
    """Photos of one scene share a name but for a view suffix (aloeL/aloeR, leuvenA/B, _left/_right, 01/02)."""
    return re.sub(r"(_left|_right|_?\d+|(?<=[a-z])[LRAB])+$", "", path.stem) or path.stem


def photo_split(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of source photos by scene (held-out scenes never train)."""
    def key(p: Path) -> float:
        return int(hashlib.sha256(f"{seed}:{scene_name(p)}".encode()).hexdigest()[:8], 16) / 2**32
    val = [p for p in paths if key(p) < val_fraction]
    return [p for p in paths if key(p) >= val_fraction], val


def build_data(cfg: TrainConfig, log) -> tuple[Dataset, list]:
    """Training dataset and validation frames (input, gt, valid mask, is_cast) from the configured sources."""
    from model.training.sources import list_source_photos

    train_sets, val_frames = [], []
    emulator = CameraPipelineEmulator(EmulatorConfig(neutral_rate=cfg.neutral_rate,
                                                     small_cast_rate=cfg.small_cast_rate, gt_style=cfg.gt_style))
    n_train = cfg.steps_per_epoch * cfg.batch_size
    for spec in cfg.sources:
        if spec == "synthetic":
            paths = list_source_photos(Path(cfg.photo_cache)) if Path(cfg.photo_cache).is_dir() else []
            if not paths:
                log(f"no photos in {cfg.photo_cache} (run: python -m model.training.sources prepare); "
                    "training on procedural scenes only")
            train_p, val_p = photo_split(paths, cfg.val_fraction, cfg.seed)
            train_photos = balanced_photos(train_p, cfg.max_source_cast, log)
            log(f"synthetic: {len(train_photos)} training photos, {len(val_p)} held out")
            train_sets.append(SyntheticPairs(train_photos, n_train, cfg.crop_size, emulator, cfg.seed,
                                             cfg.procedural_rate, recolour_rate=cfg.recolour_rate,
                                             view_min_scale=cfg.view_min_scale,
                                             view_keep_aspect=cfg.view_keep_aspect))
            val_frames += heldout_frames(balanced_photos(val_p, cfg.max_source_cast, log), cfg.val_size, 256,
                                         emulator, cfg.seed)
        else:
            from model.training.datasets import list_pairs, parse_source, read_fold_file, scene_disjoint_split, select_pairs

            pairs = list_pairs(parse_source(spec))
            if cfg.folds:  # Set 1's published folds: fold K validates, the others train
                folds = read_fold_file(cfg.folds)
                if not 1 <= cfg.fold <= len(folds):
                    raise ValueError(f"--fold {cfg.fold}: {cfg.folds} has folds 1..{len(folds)}")
                val_pairs = select_pairs(pairs, folds[cfg.fold - 1])
                held = {p.name for p in val_pairs}
                train_pairs = [p for p in pairs if p.name not in held]
            else:
                train_pairs, val_pairs = scene_disjoint_split(pairs, cfg.val_fraction, cfg.seed)
            log(f"{spec}: {len(train_pairs)} training pairs, {len(val_pairs)} validation pairs")
            train_sets.append(RealPairs(train_pairs, cfg.crop_size, cfg.seed, train=True))
            val_frames += [(inp, gt, valid, cast) for inp, gt, valid, cast in
                           RealPairs(val_pairs, cfg.crop_size, cfg.seed, train=False).items]
    return (train_sets[0] if len(train_sets) == 1 else ConcatDataset(train_sets)), val_frames


def source_cast(photo: np.ndarray) -> float:
    """How far from neutral a photo looks: median L1 log-chroma of its shades-of-gray, white-patch and
    gray-edge white points (0 for a photo all three call balanced)."""
    gains = analyse_small(*downsample(photo)).log_gains[[1, 2, 3]]  # (3, 3) log gains
    return float(np.median(np.abs(gains[:, [0, 2]] - gains[:, [1]]).sum(1)))


def balanced_photos(paths: list[Path], max_cast: float, log=lambda msg: None) -> list[np.ndarray]:
    """Load source photos as uint8, keeping those that ``source_cast`` calls balanced (<= ``max_cast``).

    A photo the emulator treats as ground truth must be balanced, or its labels
    contradict the statistics: colour-graded shots and single-colour close-ups go.
    """
    from model.training.sources import load_photo

    kept = []
    for p in paths:
        photo = (np.clip(load_photo(p), 0, 1) * 255 + 0.5).astype(np.uint8)
        if source_cast(photo) <= max_cast:
            kept.append(photo)
        else:
            log(f"  skipping {p.name}: looks colour-cast or graded (source_cast > {max_cast})")
    return kept


def heldout_frames(photos: list[np.ndarray], count: int, size: int, emulator: CameraPipelineEmulator,
                   seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """``count`` full-frame emulated pairs (long side ``size``) of held-out photos: (input, gt, valid, is_cast)."""
    pairs = SyntheticPairs(photos, count, size, emulator, seed + 1, 0.0 if photos else 1.0, full_frame=True)
    frames = []
    for i in range(count):
        inp, gt, info = pairs.render(i)
        frames.append((inp, gt, np.ones(inp.shape[:2], bool), needs_correction(inp, gt, info)))
    return frames


def load_heldout_frames(count: int = 96, size: int = 512, cache: str | Path = DEFAULT_CACHE,
                        val_fraction: float = TrainConfig.val_fraction,
                        seed: int = TrainConfig.seed, max_cast: float = TrainConfig.max_source_cast,
                        gt_style: str = TrainConfig.gt_style) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Held-out frames as training splits them (same photo split and emulator), for ``model.training.evaluate``;
    ``gt_style="AS"`` renders every ground truth in Adobe Standard (the Rendered WB protocol)."""
    from model.training.sources import list_source_photos

    paths = list_source_photos(Path(cache)) if Path(cache).is_dir() else []
    if not paths:
        raise ValueError(f"no source photos in {cache}; run: python -m model.training.sources prepare")
    _, val_p = photo_split(paths, val_fraction, seed)
    return heldout_frames(balanced_photos(val_p, max_cast), count, size,
                          CameraPipelineEmulator(EmulatorConfig(gt_style=gt_style)), seed)


def set_epoch(dataset: Dataset, epoch: int) -> None:
    for d in getattr(dataset, "datasets", [dataset]):
        d.epoch = epoch


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
    axes[0].set_yscale("log"); axes[0].set_title("loss"); axes[0].legend()
    axes[1].plot(epochs, [h["train_kl"] for h in history], label="train KL")
    axes[1].plot(epochs, [h["val_kl"] for h in history], label="val KL")
    axes[1].set_title("KL divergence"); axes[1].legend()
    axes[2].plot(epochs, [h["val_de2000"] for h in history], label="val dE2000 (all)")
    axes[2].plot(epochs, [h["val_de2000_cast"] for h in history], label="val dE2000 (casts)")
    axes[2].plot(epochs, [h["val_de2000_neutral"] for h in history], label="val dE2000 (balanced in)")
    axes[2].set_title("validation, full frame"); axes[2].set_xlabel("epoch"); axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout(); fig.savefig(run / "loss_curves.png", dpi=90); plt.close(fig)

    shown = [f for f in frames if f[3]][:6]
    if not shown:
        return
    model.eval()
    fig, axes = plt.subplots(len(shown), 3, figsize=(9, 2.6 * len(shown)), squeeze=False)
    with torch.no_grad():
        for row, (inp, gt, valid, _) in zip(axes, shown):
            s = make_sample(inp, gt, valid, True, None)
            out = model(*(s[k][None].to(device) for k in MODEL_INPUTS), sample=False)
            corrected = apply_matrix(inp, out["matrix"][0].float().cpu())
            for ax, img, title in zip(row, (inp, corrected, gt), ("input", "corrected", "ground truth")):
                ax.imshow(img); ax.set_title(f"{title} ({mean_de2000(img, gt, valid):.1f} dE)" if title != "ground truth"
                                             else title, fontsize=8); ax.axis("off")
    model.training.train()
    fig.tight_layout(); fig.savefig(run / "outputs.png", dpi=80); plt.close(fig)


# ------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m model.training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", default=defaults.sources,
                   help="synthetic | set2=DIR | set1=DIR | cube=DIR | pairs=FILE.tsv (default: synthetic)")
    for name, value in asdict(defaults).items():
        if name == "sources":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            kind = type(value) if value is not None else (float if name == "max_minutes" else str)
            p.add_argument(flag, type=kind, default=value)
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(None if cfg.device == "auto" else cfg.device)
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    is_main = rank == 0
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if is_main else (lambda msg: None)
    torch.manual_seed(cfg.seed + rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // (world * (1 + min(cfg.workers, 1)))))

    run = Path(cfg.out)
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
    dataset, val_frames = build_data(cfg, log)
    model = WBVAE(WBVAEConfig(latent_dim=cfg.latent_dim, use_cues=cfg.use_cues,
                              use_chroma_net=cfg.use_chroma_net, head_dropout=cfg.head_dropout,
                              use_global_mix=cfg.use_global_mix, gate_base=cfg.gate_base)).to(device)
    # The global combination of estimates is a few dozen numbers that must move far from zero: a larger
    # step and no weight decay for it; the seed's lr for everything else.
    base = [p for n, p in model.named_parameters() if n.startswith("mix")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("mix")]
    groups = [{"params": rest}] + ([{"params": base, "lr": cfg.lr * cfg.base_lr_scale, "weight_decay": 0.0}]
                                   if base else [])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * math.ceil(len(dataset) / (cfg.batch_size * world))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                    total_steps=max(total_steps, 1),
                                                    pct_start=0.1)
    start_epoch, history, best = 0, [], float("inf")
    reference = baseline_scores(val_frames) if is_main else {}
    if cfg.resume:
        state = torch.load(cfg.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["meta"]["optimizer"])
        scheduler.load_state_dict(state["meta"]["scheduler"])
        start_epoch, history, best = state["meta"]["epoch"] + 1, state["meta"]["history"], state["meta"]["best"]
        log(f"resumed from {cfg.resume} at epoch {start_epoch}")
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=cfg.seed) if distributed else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                     enabled=False)
    started = time.monotonic()
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs):
        set_epoch(dataset, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=cfg.workers, drop_last=len(dataset) >= cfg.batch_size * world,
                            generator=torch.Generator().manual_seed(cfg.seed + epoch))
        sums, count, t0 = {}, 0, time.monotonic()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not is_main, mininterval=2,
                   file=sys.stderr)
        for batch in bar:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with amp:
                losses = training_loss(net, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            if scheduler.last_epoch < scheduler.total_steps - 1:
                scheduler.step()
            n = batch["thumb"].shape[0]
            count += n
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item() * n
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", img_s=f"{count * world / (time.monotonic() - t0):.0f}")
        seconds = time.monotonic() - t0
        if distributed:
            dist.barrier()
        if is_main:
            row = {"epoch": epoch + 1, **{f"train_{k}": v / max(count, 1) for k, v in sums.items()},
                   **validate(model, val_frames, device, cfg), **reference,
                   "images_per_s": count * world / seconds, "seconds": seconds, "lr": scheduler.get_last_lr()[0]}
            history.append(row)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            with (run / "metrics.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(history[-1]))
                writer.writeheader()
                writer.writerows(history)
            meta = {"epoch": epoch, "train_config": asdict(cfg), "val": {k: v for k, v in row.items()
                                                                          if k.startswith("val_")}}
            if row["val_de2000"] < best:
                best = row["val_de2000"]
                save_checkpoint(run / "best.pt", model, **meta)
            save_checkpoint(run / "last.pt", model, **meta, history=history, best=best,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
            save_figures(run, history, model, val_frames, device)
        out_of_time = cfg.max_minutes is not None and (time.monotonic() - started) / 60 > cfg.max_minutes
        if distributed:
            flag = torch.tensor(float(out_of_time), device=device)
            dist.broadcast(flag, 0)
            out_of_time = bool(flag.item())
        if out_of_time:
            log(f"stopping after epoch {epoch + 1}: --max-minutes {cfg.max_minutes} reached")
            break
    if distributed:
        dist.destroy_process_group()
    if is_main:
        log(f"best val dE2000 {best:.3f}; checkpoints in {run}")
    return run


if __name__ == "__main__":
    main()
