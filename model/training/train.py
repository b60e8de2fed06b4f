"""Train the white-balance VAE: ``python -m model.training.train [SOURCE ...] [options]``.

Sources (combinable; ``model.training.source_registry``): ``raw[=DIR]`` (real raw captures rendered through
camera pipelines), ``synthetic`` (the emulator over the photo cache of
``python -m model.training.photos prepare`` plus procedural scenes), ``set2=DIR``, ``set1=DIR``,
``cube=DIR``, ``pairs=FILE.tsv``. Runs unchanged under ``torchrun --nproc_per_node=N``
(DistributedDataParallel: gloo on CPU, NCCL on GPU). Writes to ``--out``: ``metrics.csv`` (per
epoch), ``best.pt`` (the lowest full-frame dE2000 on the sources' held-out frames), ``last.pt``
(resumable), ``loss_curves.png`` and ``outputs.png``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from model.corrector import resolve_device, save_checkpoint
from model.mapping import apply_matrix
from model.training.baselines import BASELINES
from model.training.config import TrainConfig, parse_args
from model.training.eval_sets import list_pairs, load_pair
from model.training.figures import save_figures
from model.training.losses import training_loss
from model.training.metrics import colour_ratio, delta_e2000 as mean_de2000
from model.training.source_registry import MODEL_INPUTS, build_data, make_sample, set_epoch
from model.vae import WBVAE, vae_loss


def load_select_pairs(cfg: TrainConfig) -> dict[str, list]:
    """``--select-pairs``: each pairs.tsv's real pairs at full resolution, by the folder's name."""
    groups: dict[str, list] = {}
    for tsv in filter(None, (cfg.select_pairs or "").split(",")):
        name = Path(tsv).parent.name or Path(tsv).stem
        groups[name] = [(*load_pair(p), True) for p in list_pairs(f"pairs={tsv}")]
    return groups


#: The colour every real-pair folder must keep (output / truth colourfulness): its mean within these ...
COLOUR_MEAN_RANGE = (0.85, 1.15)
#: ... and every pair at least this. A checkpoint outside is chosen only if none is inside.
COLOUR_MIN = 0.7
COLOUR_MISSED = 100.0  # added to the score of a checkpoint that does not keep the colour


def selection_score(row: dict) -> float:
    """What chooses the checkpoint (rule fixed before the runs of issue "Keep the colour"): the mean of the
    held-out renders' dE2000 and the real pairs' dE2000 weighed by scene (``val_scenes``), among the
    checkpoints that keep the colour of every real-pair folder (``COLOUR_MEAN_RANGE``, ``COLOUR_MIN``)."""
    score = float(np.mean([row["val_de2000"], row["val_scenes"]])) if "val_scenes" in row else row["val_de2000"]
    lo, hi = COLOUR_MEAN_RANGE
    for key, mean in row.items():
        if key.startswith("val_colour_") and not key.startswith("val_colour_min_"):
            if not lo <= mean <= hi or row[key.replace("val_colour_", "val_colour_min_", 1)] < COLOUR_MIN:
                score += COLOUR_MISSED
    return score


def scene_of(truth: np.ndarray) -> str:
    """Pairs whose ground truths are the same picture show one scene (renderings of one raw)."""
    return hashlib.sha256(np.ascontiguousarray(truth).tobytes()).hexdigest()


def pair_scores(model: WBVAE, pairs: list, device: torch.device) -> list[tuple[str, float, float]]:
    """(scene, dE2000, output/truth colourfulness) of each real pair, corrected at full resolution."""
    scores = []
    for inp, gt, valid, _ in pairs:
        s = make_sample(inp, gt, valid, True, None, model.config)
        out = model(*(s[k][None].to(device) for k in MODEL_INPUTS), sample=False)
        corrected = apply_matrix(inp, out["matrix"][0].float().cpu())
        scores.append((scene_of(gt), mean_de2000(corrected, gt, valid), colour_ratio(corrected, gt, valid)))
    return scores


def baseline_scores(frames: list) -> dict[str, float]:
    """Shades of gray on the same validation frames: the fallback the model must beat."""
    sog = BASELINES["shades of gray"]
    return {"val_sog_de2000": float(np.mean([mean_de2000(sog(inp), gt, valid) for inp, gt, valid, _ in frames]))}


@torch.no_grad()
def validate(
    model: WBVAE,
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]],
    device: torch.device,
    cfg: TrainConfig,
    pair_groups: dict[str, list] | None = None,
) -> dict[str, float]:
    """Full-frame dE2000 of the corrected image (cast and neutral pairs), plus the VAE losses; with
    ``pair_groups``, each group's mean dE2000 (``val_pairs_NAME``), its output/truth colourfulness (mean
    ``val_colour_NAME``, least ``val_colour_min_NAME``), the scene-weighted dE2000 of all of them
    (``val_scenes``) and the selection score."""
    model.eval()
    de_cast, de_neutral, losses = [], [], []
    for inp, gt, valid, is_cast in frames:
        s = make_sample(inp, gt, valid, is_cast, None, model.config)
        batch = {k: v[None].to(device) for k, v in s.items()}
        out = model(*(batch[k] for k in MODEL_INPUTS), sample=False)
        _, recon, kl = vae_loss(out["recon"], batch["gt_thumb"], out["mu"], out["logvar"], cfg.beta)
        losses.append((recon.item(), kl.item()))
        corrected = apply_matrix(inp, out["matrix"][0].float().cpu())
        (de_cast if is_cast else de_neutral).append(mean_de2000(corrected, gt, valid))
    groups: dict[str, float] = {}
    by_scene: dict[str, list[float]] = {}
    for name, pairs in (pair_groups or {}).items():
        scores = pair_scores(model, pairs, device)
        groups[f"val_pairs_{name}"] = float(np.mean([de for _, de, _ in scores]))
        groups[f"val_colour_{name}"] = float(np.mean([c for _, _, c in scores]))
        groups[f"val_colour_min_{name}"] = float(np.min([c for _, _, c in scores]))
        for scene, de, _ in scores:
            by_scene.setdefault(scene, []).append(de)
    if by_scene:
        groups["val_scenes"] = float(np.mean([np.mean(des) for des in by_scene.values()]))
    model.train()
    rec, kl = np.mean(losses, axis=0)
    all_de = de_cast + de_neutral
    row = {
        "val_recon": float(rec),
        "val_kl": float(kl),
        "val_loss": float(rec + cfg.beta * kl),
        "val_de2000": float(np.mean(all_de)),
        "val_de2000_cast": float(np.mean(de_cast)) if de_cast else float("nan"),
        "val_de2000_neutral": float(np.mean(de_neutral)) if de_neutral else float("nan"),
        **groups,
    }
    return {**row, "val_select": selection_score(row)}


@dataclass
class Process:
    """Where this process trains: its device, its rank among ``world`` processes (torchrun), its log."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, msg: str) -> None:
        if self.is_main:
            print(msg, file=sys.stderr, flush=True)


def start_process(cfg: TrainConfig) -> Process:
    """Device, process group under torchrun (gloo on CPU, NCCL on GPU), seeds and CPU threads."""
    device = resolve_device(None if cfg.device == "auto" else cfg.device)
    proc = Process(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        proc.rank, proc.world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            proc.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(proc.device)
    torch.manual_seed(cfg.seed + proc.rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // (proc.world * (1 + min(cfg.workers, 1)))))
    return proc


def make_optimizer(model: WBVAE, cfg: TrainConfig, steps: int):
    """AdamW with the seed's lr, and a OneCycle schedule over ``steps``.

    The global combination of estimates is a few dozen numbers that must move far from zero: a
    larger step and no weight decay for it.
    """
    base = [p for n, p in model.named_parameters() if n.startswith("mix")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("mix")]
    groups = [{"params": rest}] + (
        [{"params": base, "lr": cfg.lr * cfg.base_lr_scale, "weight_decay": 0.0}] if base else []
    )
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(steps, 1), pct_start=0.1
    )
    return optimizer, scheduler


def train_epoch(
    net, model: WBVAE, loader: DataLoader, optimizer, scheduler, cfg: TrainConfig, proc: Process, desc: str
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``: summed losses (weighted by batch size) and the number of samples."""
    from tqdm import tqdm

    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if proc.device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    sums: dict[str, float] = {}
    count, t0 = 0, time.monotonic()
    bar = tqdm(loader, desc=desc, disable=not proc.is_main, mininterval=2, file=sys.stderr)
    for batch in bar:
        batch = {k: v.to(proc.device, non_blocking=True) for k, v in batch.items()}
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
        bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", img_s=f"{count * proc.world / (time.monotonic() - t0):.0f}")
    return sums, count


def record_epoch(
    run: Path, row: dict, history: list[dict], best: float, model: WBVAE, cfg: TrainConfig, optimizer, scheduler
) -> float:
    """metrics.csv, best.pt (if this epoch's selection score is the lowest) and last.pt; returns the best."""
    history.append(row)
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[-1]))
        writer.writeheader()
        writer.writerows(history)
    meta = {
        "epoch": row["epoch"] - 1,
        "train_config": cfg.to_dict(),
        "val": {k: v for k, v in row.items() if k.startswith("val_")},
    }
    if row["val_select"] < best:
        best = row["val_select"]
        save_checkpoint(run / "best.pt", model, **meta)
    save_checkpoint(
        run / "last.pt",
        model,
        **meta,
        history=history,
        best=best,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
    )
    return best


def out_of_time(cfg: TrainConfig, started: float, proc: Process) -> bool:
    """``--max-minutes`` spent (rank 0 decides for every process)."""
    over = cfg.max_minutes is not None and (time.monotonic() - started) / 60 > cfg.max_minutes
    if proc.distributed:
        flag = torch.tensor(float(over), device=proc.device)
        dist.broadcast(flag, 0)
        over = bool(flag.item())
    return over


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_args(argv, __doc__)
    proc = start_process(cfg)
    run = Path(cfg.out)
    if proc.is_main:
        run.mkdir(parents=True, exist_ok=True)
    dataset, val_frames = build_data(cfg, proc.log)
    model = WBVAE(cfg.model).to(proc.device)
    if cfg.init:
        model.load_state_dict(torch.load(cfg.init, map_location="cpu", weights_only=True)["state_dict"])
        proc.log(f"weights from {cfg.init}")
    pair_groups = load_select_pairs(cfg) if proc.is_main else {}
    optimizer, scheduler = make_optimizer(
        model, cfg, cfg.epochs * math.ceil(len(dataset) / (cfg.batch_size * proc.world))
    )
    start_epoch, history, best = 0, [], float("inf")
    reference = baseline_scores(val_frames) if proc.is_main else {}
    if cfg.resume:
        state = torch.load(cfg.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["meta"]["optimizer"])
        scheduler.load_state_dict(state["meta"]["scheduler"])
        start_epoch, history, best = state["meta"]["epoch"] + 1, state["meta"]["history"], state["meta"]["best"]
        proc.log(f"resumed from {cfg.resume} at epoch {start_epoch}")
    net = torch.nn.parallel.DistributedDataParallel(model) if proc.distributed else model
    sampler = (
        DistributedSampler(dataset, num_replicas=proc.world, rank=proc.rank, seed=cfg.seed)
        if proc.distributed
        else None
    )
    started = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        set_epoch(dataset, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=cfg.workers,
            drop_last=len(dataset) >= cfg.batch_size * proc.world,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
        )
        t0 = time.monotonic()
        sums, count = train_epoch(
            net, model, loader, optimizer, scheduler, cfg, proc, f"epoch {epoch + 1}/{cfg.epochs}"
        )
        seconds = time.monotonic() - t0
        if proc.distributed:
            dist.barrier()
        if proc.is_main:
            row = {
                "epoch": epoch + 1,
                **{f"train_{k}": v / max(count, 1) for k, v in sums.items()},
                **validate(model, val_frames, proc.device, cfg, pair_groups),
                **reference,
                "images_per_s": count * proc.world / seconds,
                "seconds": seconds,
                "lr": scheduler.get_last_lr()[0],
            }
            proc.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            best = record_epoch(run, row, history, best, model, cfg, optimizer, scheduler)
            save_figures(run, history, model, val_frames, proc.device)
        if out_of_time(cfg, started, proc):
            proc.log(f"stopping after epoch {epoch + 1}: --max-minutes {cfg.max_minutes} reached")
            break
    if proc.distributed:  # a rank once aborted at exit (SIGABRT) under load: tear down in order, together
        del net  # DDP's reducer holds work on the group: gone before the group is
        dist.barrier()
        dist.destroy_process_group()
    proc.log(f"best selection score {best:.3f}; checkpoints in {run}")
    return run


if __name__ == "__main__":
    main()
