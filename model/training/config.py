"""The training configuration; the model's own ``WBVAEConfig`` nests inside it (``TrainConfig.model``).

Every field is a command-line flag of ``python -m model.training.train``: training fields by name
(``--steps-per-epoch``), model fields by name too (``--latent-dim``, ``--stats-size``); the two sets
of names do not overlap.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from model.training.raw_renderer import RawRenderConfig
from model.vae import WBVAEConfig

_RENDERS = RawRenderConfig()
DEFAULT_CACHE = Path(os.environ.get("WBVAE_SOURCES", Path.home() / ".cache" / "wbvae" / "sources"))


def _training_model() -> WBVAEConfig:
    """The architecture training builds unless told otherwise (the global combination of estimates on)."""
    return WBVAEConfig(use_global_mix=True, stats_size=64)


@dataclass
class TrainConfig:
    sources: list[str] = field(default_factory=lambda: ["synthetic"])
    model: WBVAEConfig = field(default_factory=_training_model)
    photo_cache: str = str(DEFAULT_CACHE)
    out: str = "runs/train"
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    beta: float = 0.00025
    crop_size: int = 128
    map_weight: float = 10.0
    white_point_weight: float = 0.05
    cast_weight: float = 0.2
    identity_weight: float = 1.0
    chroma_weight: float = 5.0
    neutral_rate: float = 0.25
    gt_style: str = "same"
    view_min_scale: float = 0.35
    view_keep_aspect: bool = False
    small_cast_rate: float = 0.3
    procedural_rate: float = 0.2
    recolour_rate: float = 0.5
    relight_rate: float = 0.5
    # Raw renders (``RawRenderConfig``, whose defaults these are): the share of relit scenes under daylight,
    # the share through an in-camera pipeline, the ground truth's mean linear luminance (log-uniform).
    relight_daylight_rate: float = _RENDERS.relight_daylight_rate
    in_camera_rate: float = _RENDERS.in_camera_rate
    exposure_min: float = _RENDERS.exposure_range[0]
    exposure_max: float = _RENDERS.exposure_range[1]
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
    init: str | None = None  # start from this checkpoint's weights (its architecture must match)
    select_pairs: str | None = None  # comma-separated pairs.tsv files: real pairs that choose the checkpoint

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


_MODEL_FLAGS = (
    "latent_dim",
    "use_cues",
    "use_chroma_net",
    "head_dropout",
    "use_global_mix",
    "gate_base",
    "stats_size",
    "anchor_white",
    "chroma_width",
    "luma_weighted_chroma",
    "full_matrix",
    "max_delta",
    "max_look",
)
_OPTIONAL_TYPES = {"max_minutes": float, "resume": str, "folds": str, "init": str, "select_pairs": str}


def _add_flag(p: argparse.ArgumentParser, name: str, value, dest: str) -> None:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, dest=dest)
    else:
        p.add_argument(flag, type=type(value) if value is not None else _OPTIONAL_TYPES[name], default=value, dest=dest)


def parse_args(argv: list[str] | None = None, description: str = "") -> TrainConfig:
    """``TrainConfig`` from command-line flags (see the module docstring)."""
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m model.training.train",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sources",
        nargs="*",
        default=defaults.sources,
        help="synthetic | raw[=DIR] | set2=DIR | set1=DIR | cube=DIR | pairs=FILE.tsv (default: synthetic)",
    )
    for f in fields(TrainConfig):
        if f.name not in ("sources", "model"):
            _add_flag(p, f.name, getattr(defaults, f.name), f.name)
    for name in _MODEL_FLAGS:
        _add_flag(p, name, getattr(defaults.model, name), "model." + name)
    args = vars(p.parse_args(argv))
    model_args = {k[len("model.") :]: args.pop(k) for k in list(args) if k.startswith("model.")}
    return TrainConfig(
        **args, model=WBVAEConfig(**{**defaults.model.to_dict(), **model_args, "channels": defaults.model.channels})
    )
