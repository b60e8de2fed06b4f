"""``Corrector``: the service's one door into the model.

It owns one trained model and its device. ``estimate`` turns a photo (or its ``Analysis``) into a
``Correction``; a ``Correction`` knows how to apply itself at a strength, to colour or grayscale
pixels, on the device or row by row inside an encoder. Callers never touch the maths behind it
(``model.stats``, ``model.mapping``, ``model.mapping16``).
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from model.colour import LUMA_709
from model.mapping import HIGHLIGHT_FULL, HIGHLIGHT_START, apply_matrix, apply_matrix_torch
from model.mapping16 import apply_gray_gain, gray_gain
from model.stats import Analysis, analyse
from model.vae import WBVAE, WBVAEConfig
from model.whitebalance import (
    ADAPTATIONS,
    KELVIN_RANGE,
    PRESETS,
    REFERENCE_KELVIN,
    TINT_RANGE,
    Illuminant,
    degree_of_adaptation,
    illuminant_of,
    natural_matrix,
    temperature_matrix,
)

__all__ = [
    "ADAPTATIONS",
    "DEFAULT_CHECKPOINT",
    "HIGHLIGHT_FULL",
    "HIGHLIGHT_START",
    "KELVIN_RANGE",
    "PRESETS",
    "TINT_RANGE",
    "Analysis",
    "Correction",
    "Corrector",
    "Illuminant",
    "MapRows",
    "load_model",
    "resolve_device",
    "save_checkpoint",
]

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"

#: Maps a block of pixel rows (uint8 ``(..., 3)`` colour or ``(H, W)`` gray) to corrected rows, same shape.
MapRows = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Correction:
    """The correction estimated for one photo, and how to apply it.

    ``matrix`` is a 3x3 linear-RGB matrix; ``strength`` 0 is the identity exactly, 1 the model's
    full correction, in between ``(1 - s) I + s M``. ``adaptation`` ``natural`` puts the light's mood back first:
    ``M`` becomes ``N M``, ``N`` the ``model.whitebalance.natural_matrix`` of the estimated light (white lands on
    the light's corresponding white, not on neutral). ``device`` is where a whole photo is mapped by
    ``prepare`` (``None``: on the CPU, row by row inside the encoder).
    """

    matrix: np.ndarray  # (3, 3) float32, at full strength
    cast_probability: float  # the model's belief that the photo had a colour cast
    strength: float = 1.0
    device: torch.device | None = None
    render: np.ndarray | None = None  # (3, 3) applied after the blend: a chosen white balance (``rendered_at``)
    white_distance: float | None = None  # the dead zone's input: the neutralised white's log-chroma distance
    dead_zone: float = 0.0  # the model's dead zone (0: none)
    adaptation: str = "full"  # "full": white to neutral; "natural": incomplete, as the eye adapts (``adapted``)

    def at_strength(self, strength: float) -> Correction:
        """The same correction applied at ``strength`` (0..1)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {strength}")
        return replace(self, strength=float(strength))

    def rendered_at(self, kelvin: float | None = None, tint: float = 0.0) -> Correction:
        """The same correction, then rendered as a camera set to ``kelvin`` and ``tint`` would
        (``model.whitebalance``; ``kelvin`` None: the neutral output's own, ``REFERENCE_KELVIN``). ``ValueError``
        out of range."""
        if kelvin is None and tint == 0.0:
            return replace(self, render=None)
        return replace(self, render=temperature_matrix(REFERENCE_KELVIN if kelvin is None else kelvin, tint))

    def adapted(self, adaptation: str = "full") -> Correction:
        """The same correction with ``full`` or ``natural`` adaptation (``ADAPTATIONS``); ``ValueError`` otherwise."""
        if adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be one of {', '.join(ADAPTATIONS)}, got {adaptation!r}")
        return replace(self, adaptation=adaptation)

    @property
    def degree(self) -> float:
        """The degree of adaptation D applied: 1 for ``full``; for ``natural`` Smet et al. 2017's D of the estimated
        light (``model.whitebalance.degree_of_adaptation``), 1 where the estimate is not a light colour (no CCT)."""
        light = self.illuminant
        if self.adaptation == "full" or light.xy is None or light.cct is None:
            return 1.0
        return degree_of_adaptation(light.xy)

    @property
    def full_matrix(self) -> np.ndarray:
        """The correction at full strength, float64: ``M``, or ``N M`` with ``natural`` adaptation (``N`` the
        identity where the estimate is not a light colour)."""
        m = np.asarray(self.matrix, dtype=np.float64)
        light = self.illuminant
        if self.adaptation == "full" or light.xy is None or light.cct is None:
            return m
        return natural_matrix(light.xy) @ m

    @property
    def applied_matrix(self) -> np.ndarray:
        """``T ((1 - s) I + s M)`` as float32, ``T`` the ``render``, ``M`` the ``full_matrix`` (exactly the identity
        at 0 with no render, exactly the model's M at 1 with ``full`` adaptation)."""
        if self.adaptation == "full":  # today's path, bit for bit
            if self.strength == 1.0 and self.render is None:
                return np.asarray(self.matrix, dtype=np.float32)
            blend = (1.0 - self.strength) * np.eye(3) + self.strength * np.asarray(self.matrix, dtype=np.float64)
        else:
            blend = (1.0 - self.strength) * np.eye(3) + self.strength * self.full_matrix
        return (blend if self.render is None else self.render @ blend).astype(np.float32)

    @property
    def highlight_gain(self) -> float:
        """What near-white pixels get instead of the matrix (``model.mapping``): ``LUMA_709 @ applied_matrix @ 1``."""
        return float(np.asarray(LUMA_709, np.float64) @ self.applied_matrix.astype(np.float64) @ np.ones(3))

    @property
    def illuminant(self) -> Illuminant:
        """The scene light the full-strength correction neutralises (xy, CCT, Duv)."""
        return illuminant_of(self.matrix)

    @property
    def dead_zone_kept(self) -> float:
        """The share of the correction the dead zone keeps, ``d^2 / (d^2 + t^2)`` (1 without a dead zone)."""
        if self.dead_zone <= 0 or self.white_distance is None:
            return 1.0
        d2 = self.white_distance**2
        return d2 / (d2 + self.dead_zone**2)

    @property
    def dead_zone_decision(self) -> str:
        """``inside`` (the white is within the dead zone: mostly left alone), ``outside`` or ``off`` (none)."""
        if self.dead_zone <= 0 or self.white_distance is None:
            return "off"
        return "inside" if self.white_distance < self.dead_zone else "outside"

    def map_rows(self, rows: np.ndarray) -> np.ndarray:
        """Corrected copy of uint8 sRGB pixels ``(..., 3)`` on the CPU."""
        return apply_matrix(rows, self.applied_matrix)

    def map_gray(self, gray: np.ndarray) -> np.ndarray:
        """Corrected copy of a uint8/uint16 ``(H, W)`` grayscale image: the exposure change only."""
        return apply_gray_gain(gray, gray_gain(self.applied_matrix))

    def map_on(self, rgb: np.ndarray, device: torch.device) -> np.ndarray:
        """``map_rows`` of a whole uint8 ``(H, W, 3)`` photo computed on ``device`` (same values)."""
        with warnings.catch_warnings():  # decoded pixels are read-only; they are only read
            warnings.simplefilter("ignore", UserWarning)
            src = torch.from_numpy(np.ascontiguousarray(rgb))
        return apply_matrix_torch(src.to(device), self.applied_matrix).cpu().numpy()

    def prepare(self, pixels: np.ndarray) -> tuple[np.ndarray, MapRows | None]:
        """What an encoder needs: the pixels to write and the row mapping to run on them while writing.

        Grayscale ``(H, W)`` and, on the CPU, colour photos are mapped row by row inside the encoder
        (no corrected full-size copy); with a ``device`` a colour photo is mapped there first and the
        mapping is ``None``.
        """
        if pixels.ndim == 2:
            return pixels, self.map_gray
        if self.device is not None:
            return self.map_on(pixels, self.device), None
        return pixels, self.map_rows


class DeviceUnavailable(RuntimeError):
    """A CUDA device was asked for and none is visible to this process."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; anything else as given, and it must exist."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceUnavailable(
                f"device {dev} was asked for, but this process sees {count} CUDA device(s) (torch {torch.__version__},"
                f" {build}); check the GPU reservation and the NVIDIA container toolkit, or set WBVAE_DEVICE=auto"
            )
    return dev


def save_checkpoint(path: str | Path, model: WBVAE, **meta) -> None:
    """Save weights with their architecture (``model_args``) and free-form metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": model.config.to_dict(), "state_dict": model.state_dict(), "meta": meta}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[WBVAE, dict]:
    """Rebuild the model a checkpoint describes; ``ValueError`` naming the path if it cannot."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is not a file ({'a directory' if path.is_dir() else 'a special file'})")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch.load's own errors say little here
        cut = path.read_bytes()[:4] == b"PK\x03\x04"  # a zip's start without its end
        what = "truncated (a zip archive with no end)" if cut else "not a PyTorch checkpoint (not a zip archive)"
        raise ValueError(f"checkpoint {path} is unreadable: {what}, {path.stat().st_size} bytes")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"checkpoint {path} is unreadable: {exc.__class__.__name__}: {first}") from exc
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
    the last digits with the number of photos beside it; a batched product of
    one row each does not, and equals ``F.linear`` on one row bit for bit on the CPU (tested). So a
    photo's correction never depends on what else shares its forward pass (micro-batching).
    """
    if x.dim() != 2:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    w = layer.weight.t().expand(x.shape[0], *layer.weight.t().shape)  # (B, in, out), no copy
    if layer.bias is None:
        return torch.bmm(x.unsqueeze(1), w).squeeze(1)
    return torch.baddbmm(layer.bias.expand(x.shape[0], 1, -1), x.unsqueeze(1), w).squeeze(1)


class Corrector:
    """One model on one device: photo (or its analysis) in, ``Correction`` out.

    The encoder runs batched; its linear layers and the correction head compute each photo on its own, so
    ``estimate_batch`` gives every photo the result it gets alone (bit for bit on the CPU). With
    ``map_on_device`` (the default) and a model off the CPU, corrections map whole photos there.
    """

    #: intra-op threads for the small model on a CPU: requests already run in parallel slots, and
    #: torch's own pool oversubscribes busy cores (docs/benchmark.md)
    CPU_INTRA_OP_THREADS = 1

    def __init__(
        self,
        model: WBVAE,
        device: torch.device,
        checkpoint_id: str = "unsaved",
        meta: dict | None = None,
        map_on_device: bool = True,
    ):
        self.model = model.to(device).eval()
        for layer in self.model.modules():
            if type(layer) is torch.nn.Linear:
                layer.forward = partial(per_sample_linear, layer)  # type: ignore[method-assign]  # this instance only
        self.device = device
        self.checkpoint_id = checkpoint_id
        self.meta = meta or {}
        self.mapping_device = device if map_on_device and device.type != "cpu" else None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device | None = None, map_on_device: bool = True
    ) -> Corrector:
        dev = resolve_device(device)
        model, meta = load_model(path, dev)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        return cls(model, dev, checkpoint_id=f"{Path(path).stem}-{digest}", meta=meta, map_on_device=map_on_device)

    def limit_cpu_threads(self) -> None:
        """On a CPU, one intra-op thread for the model (process-wide, idempotent); a service calls it once."""
        if self.device.type == "cpu" and torch.get_num_threads() != self.CPU_INTRA_OP_THREADS:
            torch.set_num_threads(self.CPU_INTRA_OP_THREADS)

    def analyse(self, img: np.ndarray) -> Analysis:
        """The model's inputs for a uint8 (H, W, 3) photo (thumbnail and statistics); no model work."""
        return analyse(img, self.model.config.stats_size, self.model.config.luma_weighted_chroma)

    @torch.inference_mode()
    def estimate_batch(self, analyses: list[Analysis]) -> list[Correction]:
        """Corrections for several photos' analyses in one forward pass (deterministic: uses mu)."""
        thumbs = torch.from_numpy(np.stack([a.thumb for a in analyses])).to(self.device)
        cues = torch.from_numpy(np.stack([a.cues for a in analyses])).to(self.device)
        gains = torch.from_numpy(np.stack([a.log_gains for a in analyses])).to(self.device)
        chroma = torch.from_numpy(np.stack([a.chroma for a in analyses])).to(self.device)
        mu, _ = self.model.encode(thumbs)
        # The head's small matrix products pick their kernels by the batch size: one photo at a time.
        heads = [
            self.model.correction_details(mu[i : i + 1], cues[i : i + 1], gains[i : i + 1], chroma[i : i + 1])
            for i in range(len(analyses))
        ]
        matrices = torch.cat([m for m, _, _, _ in heads]).float().cpu().numpy()
        probs = torch.sigmoid(torch.cat([logit for _, logit, _, _ in heads])).float().cpu().numpy()
        distances = torch.cat([d for _, _, _, d in heads]).float().cpu().numpy()
        zone = float(self.model.config.dead_zone)
        return [
            Correction(m, float(p), device=self.mapping_device, white_distance=float(d), dead_zone=zone)
            for m, p, d in zip(matrices, probs, distances)
        ]

    def estimate(self, img: np.ndarray) -> Correction:
        """The correction for one uint8 (H, W, 3) photo."""
        return self.estimate_batch([self.analyse(img)])[0]

    def correct(
        self, img: np.ndarray, strength: float = 1.0, kelvin: float | None = None, adaptation: str = "full"
    ) -> np.ndarray:
        """Corrected copy of a uint8 (H, W, 3) sRGB photo, same shape (rendered at ``kelvin`` if given)."""
        return self.estimate(img).adapted(adaptation).at_strength(strength).rendered_at(kelvin).map_rows(img)

    def warm_up(self) -> None:
        """Run one small photo through every stage so the first request is not slow."""
        rng = np.random.default_rng(0)
        photo = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
        pixels, map_rows = self.estimate(photo).prepare(photo)
        if map_rows is not None:
            map_rows(pixels)
