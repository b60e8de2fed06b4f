"""Training data: samples as the model sees them, augmentation, and one registry of data sources.

A source is named ``KIND`` or ``KIND=ARG`` on the command line. Each kind in ``SOURCES`` yields
training pairs and evaluation frames (input, ground truth, valid mask, is_cast) from the same code:

``synthetic``
    the camera-pipeline emulator over the photo cache (``python -m model.training.photos prepare``)
    plus procedural scenes; evaluation frames are held-out photos (split by scene).
``raw[=DIR]``
    real raw captures rendered through camera pipelines (``model.training.raw_renderer``); whole cameras
    (``raw.HELDOUT_CAMERAS``) are held out for evaluation and checkpoint choice.
``set1=DIR``, ``set2=DIR``, ``cube=DIR``, ``pairs=FILE.tsv``
    pairs on disk (``model.training.eval_sets``), split by scene (or by published folds).

Adding a source is one class with ``train_set`` and ``eval_frames`` and one ``SOURCES`` entry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from model.colour import linear_to_srgb, srgb_to_linear
from model.stats import THUMB_SIZE, analyse_small, downsample, thumbnail
from model.training.config import TrainConfig
from model.training.emulator import CameraPipelineEmulator, EmulatorConfig
from model.training.eval_sets import (
    list_pairs,
    load_pair,
    parse_source,
    read_fold_file,
    scene_disjoint_split,
    select_pairs,
)
from model.training.metrics import clipped_or_crushed
from model.training.photos import list_source_photos, load_photo, procedural_scene
from model.training.raw_renderer import (
    DEFAULT_RAW_DIR,
    HELD_OUT_RENDERS,
    RawRenderConfig,
    RawRenderer,
    load_raw_cameras,
    split_cameras,
)
from model.vae import WBVAEConfig

MODEL_INPUTS = ("thumb", "cues", "log_gains", "chroma")
Frame = tuple[np.ndarray, np.ndarray, np.ndarray, bool]  # (input, ground truth, valid mask, is_cast)
NamedFrame = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (name, input, ground truth, valid mask)
Log = Callable[[str], None]


# ----------------------------------------------------------------- samples
def make_sample(
    inp: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None,
    is_cast: bool,
    cast_matrix: np.ndarray | None,
    model: WBVAEConfig,
) -> dict:
    """Tensors for one training pair: the model's inputs (same code as inference) and targets."""
    small, clipped = downsample(thumbnail(inp), model.stats_size)
    gt_small, _ = downsample(gt, model.stats_size)
    a = analyse_small(small, clipped, model.luma_weighted_chroma)
    gt_thumb = np.asarray(Image.fromarray(gt_small).resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR))
    keep = ~clipped & downsample_mask(~clipped_or_crushed(gt_small), small.shape[:2])  # lost colour teaches nothing
    if valid is not None:
        keep &= downsample_mask(valid, small.shape[:2])
    mask = np.asarray(Image.fromarray(keep.astype(np.uint8) * 255).resize((THUMB_SIZE, THUMB_SIZE), Image.NEAREST)) > 0
    return {
        "thumb": torch.from_numpy(a.thumb),
        "cues": torch.from_numpy(a.cues),
        "log_gains": torch.from_numpy(a.log_gains),
        "chroma": torch.from_numpy(a.chroma),
        "gt_thumb": torch.from_numpy((gt_thumb.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()),
        "mask": torch.from_numpy(mask[None].astype(np.float32)),
        "is_cast": torch.tensor(float(is_cast)),
        "cast_matrix": torch.from_numpy(
            np.asarray(cast_matrix if cast_matrix is not None else np.eye(3), dtype=np.float32)
        ),
        "has_matrix": torch.tensor(float(cast_matrix is not None)),
    }


def downsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest) to ``shape``."""
    if mask.shape == shape:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 0


def random_view(
    img: np.ndarray, rng: np.random.Generator, size: int, min_scale: float = 0.35, keep_aspect: bool = False
) -> np.ndarray:
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
    crop = img[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.2:
        crop = crop[::-1]
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    )


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
    return np.asarray(
        Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR, reducing_gap=2.0)
    )


def needs_correction(inp: np.ndarray, gt: np.ndarray, info: dict) -> bool:
    """A cast, or (with a ground truth in another picture style) a style change: anything but the identity."""
    return bool(info["is_cast"]) or not np.array_equal(inp, gt)


# ------------------------------------------------------------- datasets
class SyntheticPairs(Dataset):
    """Emulator pairs from well-balanced photos (and procedural scenes).

    Sample i is a pure function of (seed, epoch, i)."""

    def __init__(
        self,
        photos: list[np.ndarray],
        length: int,
        size: int,
        emulator: CameraPipelineEmulator,
        seed: int,
        procedural_rate: float,
        full_frame: bool = False,
        recolour_rate: float = 0.0,
        view_min_scale: float = 0.35,
        view_keep_aspect: bool = False,
        model: WBVAEConfig | None = None,
    ):
        self.photos, self.length, self.size = photos, length, size
        self.view_min_scale, self.view_keep_aspect = view_min_scale, view_keep_aspect
        self.emulator, self.seed, self.procedural_rate = emulator, seed, procedural_rate
        self.full_frame, self.recolour_rate, self.epoch = full_frame, recolour_rate, 0
        self.model = model or WBVAEConfig()

    def __len__(self) -> int:
        return self.length

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, dict]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if not self.photos or rng.random() < self.procedural_rate:
            scene = procedural_scene(rng, self.size)
        else:
            photo = (
                self.photos[int(rng.integers(len(self.photos)))]
                if not self.full_frame
                else self.photos[i % len(self.photos)]
            )
            view = (
                fit_long_side(photo, self.size)
                if self.full_frame
                else random_view(photo, rng, self.size, self.view_min_scale, self.view_keep_aspect)
            )
            if not self.full_frame and rng.random() < self.recolour_rate:
                view = recolour(view, rng)
            scene = view.astype(np.float32) / 255.0
        return self.emulator.render_pair(scene, rng)

    def __getitem__(self, i: int) -> dict:
        inp, gt, info = self.render(i)
        return make_sample(inp, gt, None, needs_correction(inp, gt, info), info["cast_matrix"], self.model)


class RealPairs(Dataset):
    """Pairs from a dataset on disk, kept in memory at the statistics size (long side <= 256)."""

    def __init__(self, pairs: list, size: int, seed: int, train: bool, model: WBVAEConfig | None = None):
        self.items = []
        for p in pairs:
            inp, gt, valid = load_pair(p)
            small, _ = downsample(inp)
            self.items.append(
                (small, downsample(gt)[0], downsample_mask(valid, small.shape[:2]), not np.array_equal(inp, gt))
            )
        self.size, self.seed, self.train, self.epoch = size, seed, train, 0
        self.model = model or WBVAEConfig()

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
            crop = stacked[y : y + side, x : x + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.ascontiguousarray(crop)
            inp, gt = crop[..., :3], crop[..., 3:6]
            valid = crop[..., 6] > 127
        return make_sample(inp, gt, valid, is_cast, None, self.model)


class RawPairs(Dataset):
    """Renders of real raw captures (``raw_renderer``); sample i is a pure function of (seed, epoch, i)."""

    def __init__(self, renderer, length: int, seed: int, model: WBVAEConfig):
        self.renderer, self.length, self.seed, self.model, self.epoch = renderer, length, seed, model, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        inp, gt, info = self.renderer.render(int(rng.integers(len(self.renderer))), rng)
        return make_sample(inp, gt, None, needs_correction(inp, gt, info), info["cast_matrix"], self.model)


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell every part of a (concatenated) dataset which epoch it serves: samples depend on it."""
    for d in getattr(dataset, "datasets", [dataset]):
        d.epoch = epoch


# --------------------------------------------------------- photo sources
def scene_name(path: Path) -> str:
    """Photos of one scene share a name but for a view suffix (aloeL/aloeR, leuvenA/B, _left/_right, 01/02)."""
    return re.sub(r"(_left|_right|_?\d+|(?<=[a-z])[LRAB])+$", "", path.stem) or path.stem


def photo_split(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of source photos by scene (held-out scenes never train)."""

    def key(p: Path) -> float:
        return int(hashlib.sha256(f"{seed}:{scene_name(p)}".encode()).hexdigest()[:8], 16) / 2**32

    val = [p for p in paths if key(p) < val_fraction]
    return [p for p in paths if key(p) >= val_fraction], val


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
    kept = []
    for p in paths:
        photo = (np.clip(load_photo(p), 0, 1) * 255 + 0.5).astype(np.uint8)
        if source_cast(photo) <= max_cast:
            kept.append(photo)
        else:
            log(f"  skipping {p.name}: looks colour-cast or graded (source_cast > {max_cast})")
    return kept


def heldout_frames(
    photos: list[np.ndarray], count: int, size: int, emulator: CameraPipelineEmulator, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """``count`` full-frame emulated pairs (long side ``size``) of held-out photos: (input, gt, valid, is_cast)."""
    pairs = SyntheticPairs(photos, count, size, emulator, seed + 1, 0.0 if photos else 1.0, full_frame=True)
    frames = []
    for i in range(count):
        inp, gt, info = pairs.render(i)
        frames.append((inp, gt, np.ones(inp.shape[:2], bool), needs_correction(inp, gt, info)))
    return frames


# ----------------------------------------------------------- the registry
@dataclass
class Synthetic:
    """The camera-pipeline emulator over the photo cache (``arg``: another cache folder)."""

    arg: str | None = None

    def _emulator(self, cfg: TrainConfig, gt_style: str | None = None) -> CameraPipelineEmulator:
        return CameraPipelineEmulator(
            EmulatorConfig(
                neutral_rate=cfg.neutral_rate, small_cast_rate=cfg.small_cast_rate, gt_style=gt_style or cfg.gt_style
            )
        )

    def _paths(self, cfg: TrainConfig, log: Log) -> tuple[list[Path], list[Path]]:
        cache = Path(self.arg or cfg.photo_cache)
        paths = list_source_photos(cache) if cache.is_dir() else []
        if not paths:
            log(f"no photos in {cache} (run: python -m model.training.photos prepare); procedural scenes only")
        return photo_split(paths, cfg.val_fraction, cfg.seed)

    def train_set(self, cfg: TrainConfig, log: Log) -> Dataset:
        train_p, val_p = self._paths(cfg, log)
        photos = balanced_photos(train_p, cfg.max_source_cast, log)
        log(f"synthetic: {len(photos)} training photos, {len(val_p)} held out")
        return SyntheticPairs(
            photos,
            cfg.steps_per_epoch * cfg.batch_size,
            cfg.crop_size,
            self._emulator(cfg),
            cfg.seed,
            cfg.procedural_rate,
            recolour_rate=cfg.recolour_rate,
            view_min_scale=cfg.view_min_scale,
            view_keep_aspect=cfg.view_keep_aspect,
            model=cfg.model,
        )

    def eval_frames(
        self, cfg: TrainConfig, count: int, size: int = 256, gt_style: str | None = None, log: Log = lambda msg: None
    ) -> list[Frame]:
        _, val_p = self._paths(cfg, log)
        return heldout_frames(
            balanced_photos(val_p, cfg.max_source_cast, log), count, size, self._emulator(cfg, gt_style), cfg.seed
        )

    def evaluation(self, cfg: TrainConfig, limit: int | None, gt_style: str = "same") -> Iterator[NamedFrame]:
        """Held-out photos through the emulator, full frame, long side 512 px (default 96 frames)."""
        frames = self.eval_frames(cfg, limit or 96, 512, gt_style)
        if not frames:
            raise ValueError("no held-out source photos; run: python -m model.training.photos prepare")
        for i, (inp, gt, valid, _) in enumerate(frames):
            yield f"heldout-{i:03d}", inp, gt, valid


@dataclass
class Raw:
    """Real raw captures (``arg``: the raw-thumbs folder), rendered; held-out cameras evaluate."""

    arg: str | None = None
    _split: tuple[list, list] | None = field(default=None, init=False, repr=False)

    def _cameras(self, log: Log) -> tuple[list, list]:
        """(training cameras, held-out cameras), read from disk once per source."""
        if self._split is None:
            self._split = split_cameras(load_raw_cameras(self.arg or DEFAULT_RAW_DIR))
            train, held = self._split
            log(
                f"raw: {sum(len(c) for c in train)} captures of {len(train)} cameras train; "
                f"{', '.join(c.name for c in held)} held out"
            )
        return self._split

    def held_cameras(self) -> list:
        """The cameras kept out of training (``raw.HELDOUT_CAMERAS``)."""
        return self._cameras(lambda msg: None)[1]

    def train_set(self, cfg: TrainConfig, log: Log) -> Dataset:
        train, _ = self._cameras(log)
        renderer = RawRenderer(
            train,
            RawRenderConfig(
                neutral_rate=cfg.neutral_rate,
                small_cast_rate=cfg.small_cast_rate,
                relight_rate=cfg.relight_rate,
                exposure_range=(cfg.exposure_min, cfg.exposure_max),
                in_camera_rate=cfg.in_camera_rate,
                relight_daylight_rate=cfg.relight_daylight_rate,
            ),
        )
        return RawPairs(renderer, cfg.steps_per_epoch * cfg.batch_size, cfg.seed, cfg.model)

    def eval_frames(self, cfg: TrainConfig, count: int, log: Log = lambda msg: None) -> list[Frame]:
        """``count`` whole-frame renders of the held-out cameras' captures, evenly spread, fixed seed."""
        _, held = self._cameras(log)
        renderer = RawRenderer(held, RawRenderConfig(**HELD_OUT_RENDERS, relight_rate=cfg.relight_rate))
        frames = []
        for i in np.linspace(0, len(renderer) - 1, count).astype(int):
            inp, gt, info = renderer.render(int(i), np.random.default_rng([cfg.seed + 1, int(i)]))
            frames.append((inp, gt, np.ones(inp.shape[:2], bool), needs_correction(inp, gt, info)))
        return frames

    def evaluation(self, cfg: TrainConfig, limit: int | None, gt_style: str = "same") -> Iterator[NamedFrame]:
        """Whole-frame renders of the held-out cameras under their measured light (default 600 frames)."""
        renderer = RawRenderer(self.held_cameras(), RawRenderConfig(**HELD_OUT_RENDERS, relight_rate=0.0))
        for i in np.linspace(0, len(renderer) - 1, limit or 600).astype(int):
            inp, gt, info = renderer.render(int(i), np.random.default_rng([cfg.seed + 1, int(i)]))
            yield f"{info['camera']}/{info['name']}_{info['preset']}_{info['style']}", inp, gt, inp.max(2) > 0


@dataclass
class PairsOnDisk:
    """A dataset of pairs on disk (``set1=DIR``, ``set2=DIR``, ``cube=DIR``, ``pairs=FILE.tsv``)."""

    kind: str
    arg: str | None = None

    def _split(self, cfg: TrainConfig, log: Log):
        pairs = list_pairs(parse_source(f"{self.kind}={self.arg}"))
        if cfg.folds:  # Set 1's published folds: fold K validates, the others train
            folds = read_fold_file(cfg.folds)
            if not 1 <= cfg.fold <= len(folds):
                raise ValueError(f"--fold {cfg.fold}: {cfg.folds} has folds 1..{len(folds)}")
            val = select_pairs(pairs, folds[cfg.fold - 1])
            held = {p.name for p in val}
            return [p for p in pairs if p.name not in held], val
        return scene_disjoint_split(pairs, cfg.val_fraction, cfg.seed)

    def train_set(self, cfg: TrainConfig, log: Log) -> Dataset:
        train, val = self._split(cfg, log)
        log(f"{self.kind}={self.arg}: {len(train)} training pairs, {len(val)} validation pairs")
        return RealPairs(train, cfg.crop_size, cfg.seed, train=True, model=cfg.model)

    def eval_frames(self, cfg: TrainConfig, count: int, log: Log = lambda msg: None) -> list[Frame]:
        _, val = self._split(cfg, log)
        return list(RealPairs(val[:count], cfg.crop_size, cfg.seed, train=False).items)

    def evaluation(self, cfg: TrainConfig, limit: int | None, gt_style: str = "same") -> Iterator[NamedFrame]:
        """Every pair of the dataset at full resolution (the first ``limit``), loaded one at a time."""
        for pair in list_pairs(parse_source(f"{self.kind}={self.arg}"))[:limit]:
            yield (pair.name, *load_pair(pair))


SOURCES: dict[str, Callable[[str | None], object]] = {
    "synthetic": Synthetic,
    "heldout": Synthetic,  # evaluation's name for the synthetic source's held-out frames
    "raw": Raw,
    **{kind: (lambda arg, kind=kind: PairsOnDisk(kind, arg)) for kind in ("set1", "set2", "cube", "pairs")},
}


def source(spec: str):
    """The source a ``KIND[=ARG]`` spec names; ValueError for an unknown kind."""
    kind, _, arg = spec.partition("=")
    if kind == "heldout":  # heldout[=N]: N is a frame count, not a folder
        arg = ""
    if kind not in SOURCES:
        raise ValueError(f"unknown source {spec!r}; kinds: {', '.join(SOURCES)}")
    return SOURCES[kind](arg or None)


def build_data(cfg: TrainConfig, log: Log) -> tuple[Dataset, list[Frame]]:
    """The training dataset and the validation frames of every configured source."""
    train_sets, val_frames = [], []
    for spec in cfg.sources:
        src = source(spec)
        train_sets.append(src.train_set(cfg, log))
        val_frames += src.eval_frames(cfg, cfg.val_size, log=log)
    return (train_sets[0] if len(train_sets) == 1 else ConcatDataset(train_sets)), val_frames


def load_heldout_frames(count: int = 96, size: int = 512, gt_style: str = "same") -> list[Frame]:
    """Held-out synthetic frames as training splits them, for evaluation (``gt_style="AS"``: Rendered WB protocol)."""
    frames = Synthetic().eval_frames(TrainConfig(), count, size, gt_style)
    if not frames:
        raise ValueError("no held-out source photos; run: python -m model.training.photos prepare")
    return frames
