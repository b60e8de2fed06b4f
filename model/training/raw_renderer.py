"""Raw renders: training pairs from real raw captures under measured light.

The Rendered WB recipe on real sensors. Each capture of ``shared/data/raw-thumbs``
is linear camera RGB (black level subtracted, colour chart masked to 0) with
its illuminant measured on the chart. It goes through a camera pipeline twice:

    camera RGB -> [relight] -> exposure -> sensor clip at 1 -> white-balance
    gains -> highlight clip -> colour matrix (CCM) -> picture style
    (saturation matrix, tone-curve LUT) -> 8-bit sRGB

* **ground truth**: gains ``1 / label`` of the measured light, style ``AS`` at
  the mean of its ranges (the dataset's protocol: ground truth is always
  Adobe Standard);
* **input**: gains of a wrong preset (T, F, D, C, S as in
  ``emulator.PRESETS``) placed on the camera's own illuminant locus, style AS
  (the ground truth's parameters: the same profile renders both) or CS
  (parameters drawn from ``emulator.STYLES``); or, for ``neutral_rate`` of the
  pairs, the measured light's gains (input == ground truth in AS).

Details of the recipe:

* **Gains and highlights.** Gains are normalised so their smallest is 1 and
  white-balanced values are clipped at 1 (dcraw's highlight "clip" mode): a
  pixel clipped in every raw channel comes out exactly white. In linear sRGB,
  before clipping and styles, input = ``cast_matrix`` @ ground truth with
  ``cast_matrix = CCM diag(g_in / g_true) CCM^-1`` (gains min-normalised).
* **Colour matrices.** The published DNG ``ColorMatrix`` (XYZ(D65) -> camera)
  normalised as dcraw does (rows scaled so D65 white -> camera (1, 1, 1)) gives
  ``cam_from_xyz``; ``ccm`` is its inverse through sRGB, mapping white-balanced
  camera RGB to linear sRGB. The row sums that normalisation removes are the
  sensor's own raw white under D65 (dcraw's daylight multipliers), kept in
  ``RawLocus.raw_white_d65`` to predict raw camera whites of lights.
* **Phone module (Sony IMX135).** No published matrix: ``cam_from_xyz`` is
  the mean of the 14 published cameras' D65-row-normalised matrices (a
  generic camera matrix). Its raw D65 white, which the normalised matrix cannot
  give, is calibrated so that the median colour temperature of its labels
  equals the mean of the medians of the two other Intel-TAU cameras (same
  dataset, same kind of scenes); the green-magenta part comes from its labels.
* **Illuminant locus per camera.** In log-chroma ``t = log(R/B)``,
  ``s = log(sqrt(R B) / G)`` the measured labels of a camera lie on a curve:
  ``s`` is fitted as a quadratic in ``t`` (outliers beyond 3 robust sigmas
  dropped, linear beyond the labels' range). A light of temperature ``K`` and
  offset ``duv`` (CIE 1960) gets ``t`` from the raw-white prediction
  ``raw_white_d65 * (cam_from_xyz @ illuminant_xyz(K, duv))`` and ``s`` from
  the fitted curve, plus the prediction's own ``duv`` shift in ``s``.
* **Presets.** Applied kelvin drawn from ``PRESETS``' camera ranges (uniform in
  mired), Duv from its range plus a tint offset N(0, ``tint_sigma``). Large
  casts keep the preset at least ``min_large_mired`` from the true light (only
  the parts of the presets' ranges that far away are drawn); ``small_cast_rate``
  of the casts put the preset 5-25 mired from the true light, half its off-locus
  tint kept, labelled with the nearest preset.
* **Relighting** (``relight_rate``): the measured light is replaced, by von
  Kries scaling in camera RGB (``raw * new / label``), with a light on the
  camera's locus drawn uniformly in mired over ``relight_kelvin`` with a tint
  N(0, ``relight_tint_sigma``) Duv (with 2300-8000 K about a third of the
  relit scenes are under 3000 K); the ground truth then uses the new light.
* **Exposure, as real photos are exposed** (docs/emulator.md, "Exposed like real photos"). The ground
  truth's mean luminance (before clipping, chart excluded) is log-uniform in ``exposure_range``; the
  sensor is exposed with highlight priority (at most ``highlight_share`` of the pixels near saturation
  in either image), a veiling-glare floor (``flare``) is added, and development makes up the rest
  digitally with a highlight roll-off (``shoulder``) instead of a clip. Colours the camera matrix
  pushes out of the working space are pulled toward their luminance (``compress_gamut``), not
  clipped to 0. ``overexposure_rate`` of the frames (``info["hard"]``) are exposed up until 1-6 % of
  their pixels clip at the sensor (blown skies, lamps).
* **Augmentation** (``augment``): a random square crop of 0.6-1.0 of the side,
  resized back to 64x64 (bilinear), and a horizontal flip (no vertical flip:
  sky on top is a real cue). Evaluation renders use ``augment=False``.

Sample ``i`` of epoch ``e`` is ``render(i, pair_rng(seed, e, i))``, a pure
function of ``(seed, e, i)``. The renderer is pure NumPy, float32 with look-up
tables; the captures stay float16 in memory (about 270 MB for all) and are
converted per sample.

``python -m model.training.raw_report --realism`` and ``--speed`` give the numbers of
docs/emulator.md ("Raw renders").
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.colour import LUMA_709
from model.training.emulator import (
    _OUT_SIZE,
    _XYZ_FROM_SRGB,
    PRESETS,
    STYLES,
    _output_lut,
    _saturation_matrix,
    illuminant_xyz,
)

__all__ = [
    "DEFAULT_RAW_DIR",
    "HELDOUT_CAMERAS",
    "RawCamera",
    "RawLocus",
    "RawRenderConfig",
    "RawRenderer",
    "angular_error",
    "load_raw_cameras",
    "pair_rng",
    "split_cameras",
]

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_RAW_DIR = Path(os.environ.get("WBVAE_RAW_THUMBS", _REPO.parent / "shared" / "data" / "raw-thumbs"))
DEFAULT_REAL_PAIRS_DIR = _REPO.parent / "shared" / "data" / "real-pairs"

#: Fixed camera-disjoint evaluation split: a phone module, a DSLR, a mirrorless.
HELDOUT_CAMERAS: tuple[str, ...] = ("Sony IMX135", "Nikon D5200", "Fujifilm X-M1")

# Files holding several cameras: (camera, substring of its capture names).
_SHARED_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "NUS-NikonD5200.npz": (("Nikon D5200", "NikonD5200_"), ("Nikon D40", "NikonD40_")),
    "CC2018.npz": (("Canon EOS 5D", "_IMG_"), ("Canon EOS-1D", "_8D5U")),
}
# Same-dataset cameras whose labels calibrate the phone module's raw white.
_PHONE_PEERS = ("Canon EOS 5DS R", "Nikon D810")

_MIRED_GRID = np.arange(40.0, 601.0, 1.0)  # 25000 K ... 1664 K
_DUV_STEP = 0.001
_IMAGE_SIDE = 64


# --------------------------------------------------------------------------
# Colour helpers.


def angular_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between RGB vectors ``a`` and ``b`` (``(..., 3)``, broadcast)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def _chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-chroma ``t = log(R/B)``, ``s = log(sqrt(R B) / G)`` of ``(..., 3)`` RGB."""
    rgb = np.maximum(np.asarray(rgb, dtype=np.float64), 1e-9)
    lr, lg, lb = np.log(rgb[..., 0]), np.log(rgb[..., 1]), np.log(rgb[..., 2])
    return lr - lb, 0.5 * (lr + lb) - lg


def _rgb_from_chroma(t: np.ndarray | float, s: np.ndarray | float) -> np.ndarray:
    """RGB (sum 1) with log-chroma ``(t, s)``."""
    t, s = np.asarray(t, dtype=np.float64), np.asarray(s, dtype=np.float64)
    rgb = np.stack([np.exp(s + t / 2), np.ones_like(t), np.exp(s - t / 2)], axis=-1)
    return rgb / rgb.sum(axis=-1, keepdims=True)


def _normalise_matrix(cam_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cam_from_xyz, ccm, raw_white_d65) as in ``emulator.camera_matrices``.

    ``raw_white_d65`` (green 1) is the row sums the normalisation divides out:
    the raw camera RGB of a D65 white.
    """
    cam_rgb = cam_xyz @ _XYZ_FROM_SRGB
    rows = cam_rgb.sum(axis=1, keepdims=True)
    return cam_xyz / rows, np.linalg.inv(cam_rgb / rows), rows[:, 0] / rows[1, 0]


# --------------------------------------------------------------------------
# Illuminant locus.


@dataclass(eq=False)
class RawLocus:
    """A camera's illuminant locus in log-chroma ``(t, s)``.

    ``s = quadratic(t)`` fitted to the measured labels (``coef``, highest power
    first) inside ``t_range``, continued linearly outside; ``t`` of a
    temperature (and the ``s`` shift of a Duv offset) from the raw-white
    prediction ``raw_white_d65 * (cam_from_xyz @ illuminant_xyz(K, duv))``,
    tabulated over ``_MIRED_GRID``.
    """

    coef: np.ndarray
    t_range: tuple[float, float]
    raw_white_d65: np.ndarray
    t_of_mired: np.ndarray  # on _MIRED_GRID, increasing
    dt_per_duv: np.ndarray  # on _MIRED_GRID
    ds_per_duv: np.ndarray  # on _MIRED_GRID
    label_distance_deg: float = float("nan")  # median angle labels -> locus

    @classmethod
    def fit(cls, labels: np.ndarray, cam_from_xyz: np.ndarray, raw_white_d65: np.ndarray) -> RawLocus:
        t, s = _chroma(labels)
        keep = np.ones(len(t), dtype=bool)
        for _ in range(3):
            coef = np.polyfit(t[keep], s[keep], 2)
            res = s - np.polyval(coef, t)
            sigma = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
            keep = np.abs(res) <= 3.0 * max(sigma, 1e-4)
        raw_from_xyz = np.diag(raw_white_d65) @ cam_from_xyz
        xyz0 = np.stack([illuminant_xyz(1e6 / m) for m in _MIRED_GRID])
        xyz1 = np.stack([illuminant_xyz(1e6 / m, _DUV_STEP) for m in _MIRED_GRID])
        t0, s0 = _chroma(xyz0 @ raw_from_xyz.T)
        t1, s1 = _chroma(xyz1 @ raw_from_xyz.T)
        if not np.all(np.diff(t0) > 0):
            raise ValueError("camera matrix gives a non-monotonic Planckian locus")
        locus = cls(
            coef=coef,
            t_range=(float(t[keep].min()), float(t[keep].max())),
            raw_white_d65=np.asarray(raw_white_d65, dtype=np.float64),
            t_of_mired=t0,
            dt_per_duv=(t1 - t0) / _DUV_STEP,
            ds_per_duv=(s1 - s0) / _DUV_STEP,
        )
        locus.label_distance_deg = float(np.median(locus.distance_deg(labels)))
        return locus

    def curve(self, t: np.ndarray | float) -> np.ndarray:
        """Fitted ``s`` at ``t`` (linear beyond the labels' range)."""
        t = np.asarray(t, dtype=np.float64)
        lo, hi = self.t_range
        tc = np.clip(t, lo, hi)
        slope = np.polyval(np.polyder(self.coef), tc)
        return np.polyval(self.coef, tc) + slope * (t - tc)

    def mired_of(self, rgb: np.ndarray) -> np.ndarray:
        """Correlated temperature (mired) of camera-RGB lights, from their ``t``."""
        t, _ = _chroma(rgb)
        return np.interp(t, self.t_of_mired, _MIRED_GRID)

    def residual(self, rgb: np.ndarray) -> np.ndarray:
        """Off-locus (green-magenta) coordinate ``s - curve(t)`` of lights."""
        t, s = _chroma(rgb)
        return s - self.curve(t)

    def light(self, mired: float, duv: float = 0.0, s_offset: float = 0.0) -> np.ndarray:
        """Camera RGB (sum 1) of a light at ``mired``, ``duv`` off the locus,
        plus ``s_offset`` in the green-magenta coordinate."""
        t = float(np.interp(mired, _MIRED_GRID, self.t_of_mired) + duv * np.interp(mired, _MIRED_GRID, self.dt_per_duv))
        s = float(self.curve(t)) + duv * float(np.interp(mired, _MIRED_GRID, self.ds_per_duv)) + s_offset
        return _rgb_from_chroma(t, s)

    def distance_deg(self, rgb: np.ndarray) -> np.ndarray:
        """Angle (degrees) between lights and the locus point of the same ``t``."""
        t, _ = _chroma(rgb)
        on = _rgb_from_chroma(t, self.curve(t))
        rgb = np.asarray(rgb, dtype=np.float64)
        return angular_error(rgb / rgb.sum(-1, keepdims=True), on)


# --------------------------------------------------------------------------
# Cameras.


@dataclass(eq=False)
class RawCamera:
    """One camera model's captures, matrices and fitted illuminant locus."""

    name: str
    images: np.ndarray = field(repr=False)  # (N, 64, 64, 3) float16, linear camera RGB
    labels: np.ndarray = field(repr=False)  # (N, 3) float32, measured light, sum 1
    names: np.ndarray = field(repr=False)  # (N,) str
    cam_from_xyz: np.ndarray = field(repr=False)  # (3, 3), D65 white -> (1, 1, 1)
    ccm: np.ndarray = field(repr=False)  # (3, 3), white-balanced camera -> linear sRGB
    locus: RawLocus = field(repr=False)
    matrix_estimated: bool = False
    source: str = ""  # the .npz file

    def __len__(self) -> int:
        return len(self.labels)


def _camera_of_file(description: str) -> str:
    """Camera name of a one-camera file's description in camera_matrices.json."""
    return description.split(" (")[0].strip()


def _read_matrices(root: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = root / "camera_matrices.json"
    meta = json.loads(path.read_text())
    mats = {k: np.asarray(v, dtype=np.float64).reshape(3, 3) / 10000.0 for k, v in meta["xyz_to_camera_x10000"].items()}
    return mats, meta["files"]


def _split_file(file: str, description: str, names: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(camera, boolean selection) for each camera of one .npz file."""
    if file not in _SHARED_FILES:
        return [(_camera_of_file(description), np.ones(len(names), dtype=bool))]
    out = []
    covered = np.zeros(len(names), dtype=np.int64)
    for camera, key in _SHARED_FILES[file]:
        sel = np.char.find(names.astype(str), key) >= 0
        out.append((camera, sel))
        covered += sel
    if not np.all(covered == 1):
        raise ValueError(f"{file}: {int(np.sum(covered != 1))} captures match no camera or several")
    return out


def _generic_matrix(mats: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the cameras' D65-row-normalised cam_from_xyz matrices."""
    return np.mean([_normalise_matrix(m)[0] for m in mats.values()], axis=0)


def _phone_raw_white(labels: np.ndarray, cam_from_xyz: np.ndarray, peer_median_mired: float) -> np.ndarray:
    """Raw D65 white of a camera with an estimated (normalised) matrix.

    ``t``: the labels' median sits at ``peer_median_mired``; ``s``: the
    normalised prediction shifted onto the labels (median offset).
    """
    t, s = _chroma(labels)
    xyz = np.stack([illuminant_xyz(1e6 / m) for m in _MIRED_GRID])
    tn, sn = _chroma(xyz @ cam_from_xyz.T)
    dt = float(np.median(t) - np.interp(peer_median_mired, _MIRED_GRID, tn))
    mired = np.interp(t - dt, tn, _MIRED_GRID)
    ds = float(np.median(s - np.interp(mired, _MIRED_GRID, sn)))
    return _rgb_from_chroma(dt, ds) / _rgb_from_chroma(dt, ds)[1]


def load_raw_cameras(root: str | Path = DEFAULT_RAW_DIR, cameras: Iterable[str] | None = None) -> list[RawCamera]:
    """Load every camera of ``root`` (or only those named in ``cameras``).

    Raises ``ValueError`` when ``root`` or its files are missing.
    """
    root = Path(root)
    if not (root / "camera_matrices.json").is_file():
        raise ValueError(
            f"raw thumbnails not found: expected {root}/camera_matrices.json and the .npz "
            "files (set WBVAE_RAW_THUMBS or pass root)"
        )
    mats, files = _read_matrices(root)
    wanted = None if cameras is None else set(cameras)
    generic = _generic_matrix(mats)
    out: list[RawCamera] = []
    for file, description in files.items():
        path = root / file
        if not path.is_file():
            raise ValueError(f"missing {path}")
        file_cameras = [c for c, _ in _SHARED_FILES.get(file, ((_camera_of_file(description), ""),))]
        if wanted is not None and not wanted.intersection(file_cameras):
            continue
        with np.load(path) as pack:
            names = pack["names"]
            labels = pack["labels"].astype(np.float32)
            parts = [(c, sel) for c, sel in _split_file(file, description, names) if wanted is None or c in wanted]
            images = pack["images"] if parts else None
            for camera, sel in parts:
                estimated = camera not in mats
                if estimated:
                    cam_from_xyz = generic
                    ccm = np.linalg.inv(generic @ _XYZ_FROM_SRGB)
                    raw_white = _phone_raw_white(labels[sel], generic, _peer_median_mired(root, mats, files))
                else:
                    cam_from_xyz, ccm, raw_white = _normalise_matrix(mats[camera])
                locus = RawLocus.fit(labels[sel], cam_from_xyz, raw_white)
                imgs = images if sel.all() else images[sel]
                out.append(
                    RawCamera(
                        name=camera,
                        images=np.asarray(imgs, dtype=np.float16),
                        labels=labels[sel],
                        names=names[sel],
                        cam_from_xyz=cam_from_xyz,
                        ccm=ccm,
                        locus=locus,
                        matrix_estimated=estimated,
                        source=file,
                    )
                )
    if wanted is not None:
        missing = wanted - {c.name for c in out}
        if missing:
            raise ValueError(f"unknown cameras {sorted(missing)}")
    return out


def _peer_median_mired(root: Path, mats: dict[str, np.ndarray], files: dict[str, str]) -> float:
    """Mean over the phone's same-dataset peers of their labels' median mired."""
    medians = []
    for file, description in files.items():
        camera = _camera_of_file(description)
        if camera in _PHONE_PEERS:
            with np.load(root / file) as pack:
                labels = pack["labels"]
            cam_from_xyz, _, raw_white = _normalise_matrix(mats[camera])
            xyz = np.stack([illuminant_xyz(1e6 / m) for m in _MIRED_GRID])
            t_grid, _ = _chroma(xyz @ (np.diag(raw_white) @ cam_from_xyz).T)
            medians.append(np.median(np.interp(_chroma(labels)[0], t_grid, _MIRED_GRID)))
    if not medians:
        raise ValueError("no Intel-TAU peer camera to calibrate the phone module's raw white")
    return float(np.mean(medians))


def split_cameras(
    cameras: list[RawCamera], heldout: Iterable[str] = HELDOUT_CAMERAS
) -> tuple[list[RawCamera], list[RawCamera]]:
    """(train, held-out) by whole camera."""
    held = set(heldout)
    return [c for c in cameras if c.name not in held], [c for c in cameras if c.name in held]


# --------------------------------------------------------------------------
# Rendering.


@dataclass
class RawRenderConfig:
    """Knobs of the raw renderer."""

    #: pairs with the measured light's gains on the input (no cast)
    neutral_rate: float = 0.25
    #: among cast pairs, the preset 5-25 mired (``small_mired``) from the true light
    small_cast_rate: float = 0.3
    small_mired: tuple[float, float] = (5.0, 25.0)
    #: large casts: preset at least this far from the true light (mired)
    min_large_mired: float = 25.0
    #: captures relit by a light drawn on the camera's locus
    relight_rate: float = 0.5
    relight_kelvin: tuple[float, float] = (2300.0, 8000.0)
    relight_tint_sigma: float = 0.002
    #: share of relit scenes whose light is daylight (``daylight_kelvin``), as most photos are
    relight_daylight_rate: float = 0.6
    daylight_kelvin: tuple[float, float] = (4500.0, 8000.0)
    #: presets (keys of ``emulator.PRESETS``) of cast pairs
    preset_probs: dict[str, float] = field(default_factory=lambda: {"T": 0.2, "F": 0.2, "D": 0.2, "C": 0.2, "S": 0.2})
    #: Duv sigma of a random tint added to the preset's own Duv
    tint_sigma: float = 0.002
    #: input picture styles (keys of ``emulator.STYLES``); AS inputs use the ground truth's AS
    style_probs: dict[str, float] = field(default_factory=lambda: {"AS": 0.5, "CS": 0.5})
    #: ground truth's mean linear luminance (before clipping), log-uniform
    exposure_range: tuple[float, float] = (0.1, 0.35)
    #: highlight-priority metering, as cameras expose: the sensor's exposure is lowered until at most this
    #: share of pixels reaches saturation in either image (0: meter on the mean alone); the development
    #: then makes up the difference digitally, bright values rolled off by a ``shoulder`` (as raw
    #: converters' baseline exposure and tone curves do) instead of clipped
    highlight_share: float = 0.002
    #: ... with the brightest of the rest at most this far up the sensor's range
    highlight_headroom: float = 0.6
    #: linear value where the highlight roll-off begins (0: a hard clip at 1)
    shoulder: float = 0.3
    #: veiling glare: a share (uniform) of the frame's mean raw signal added to every pixel, as lenses do
    flare: tuple[float, float] = (0.01, 0.04)
    #: hard frames (``info["hard"]``): exposed up so that at least a share (uniform in
    #: ``overexposure_clip``) of their pixels clip at the sensor
    overexposure_rate: float = 0.02
    overexposure_clip: tuple[float, float] = (0.01, 0.06)
    #: soft gamut mapping: colours beyond the working space are pulled toward their luminance
    #: (``compress_gamut``) instead of clipped to 0, as real pipelines map gamut
    compress_gamut: bool = True
    #: in-camera pipelines: both images of a pair through one camera look (``Look``) and one
    #: in-camera tone curve (``IC`` style ranges); the rest are ACR-like (AS ground truth)
    in_camera_rate: float = 0.5
    look_hue: float = 0.12  # radians, per harmonic amplitude
    look_sat_harmonic: float = 0.12
    look_saturation: tuple[float, float] = (0.0, 0.25)  # global log saturation
    look_knee: tuple[float, float] = (0.8, 2.5)
    in_camera_contrast: tuple[float, float] = (0.1, 0.35)
    in_camera_lift: tuple[float, float] = (0.0, 0.1)
    #: random crop (fraction of the side, uniform) and horizontal flip
    augment: bool = True
    crop_range: tuple[float, float] = (0.6, 1.0)
    flip_rate: float = 0.5


#: The held-out cameras' evaluation renders: whole frames through the ACR-like pipeline, scenes relit
#: (where they are) across the whole range, as the evaluation has always measured them.
HELD_OUT_RENDERS = {"augment": False, "in_camera_rate": 0.0, "relight_daylight_rate": 0.0}

_cached_output_lut = functools.lru_cache(maxsize=512)(_output_lut)  # tone parameters are rounded


def pair_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: a pure function of the three."""
    return np.random.default_rng([seed, epoch, index])


def _gt_style_params() -> tuple[float, float, float]:
    st = STYLES["AS"]
    return (float(np.mean(st.saturation)), round(float(np.mean(st.contrast)), 3), round(float(np.mean(st.lift)), 3))


def _min_normalised_gains(light: np.ndarray) -> np.ndarray:
    g = 1.0 / np.maximum(np.asarray(light, dtype=np.float64), 1e-9)
    return g / g.min()


def _resample_matrix(start: float, side: float, n: int) -> np.ndarray:
    """(64, n) bilinear weights sampling ``side`` pixels from ``start`` onto 64."""
    pos = (np.arange(_IMAGE_SIDE) + 0.5) * (side / _IMAGE_SIDE) - 0.5 + start
    p = np.clip(pos, 0, n - 1)
    i0 = np.floor(p).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = p - i0
    rows = np.arange(_IMAGE_SIDE)
    m = np.zeros((_IMAGE_SIDE, n), dtype=np.float32)
    m[rows, i0] += 1.0 - w
    m[rows, i1] += w
    return m


def _crop_resize(img: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """Bilinear resample of the square ``(x0, y0, side)`` of ``img`` (H, W, 3) to 64x64."""
    h, w, c = img.shape
    wy = _resample_matrix(y0, side, h)
    wx = _resample_matrix(x0, side, w)
    rows = (wy @ img.reshape(h, w * c)).reshape(_IMAGE_SIDE, w, c)
    return wx[None] @ rows


def _pixel_max(x: np.ndarray) -> np.ndarray:
    """Per-pixel channel max of (N, 3) (faster than ``max(axis=1)``)."""
    return np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2])


def compress_gamut(lin: np.ndarray, threshold: float = 0.75, limit: float = 0.88) -> np.ndarray:
    """(N, 3) linear RGB -> the same pixels with colours beyond the gamut pulled toward their luminance.

    ``r = (Y - min(R, G, B)) / Y`` is a pixel's distance from gray relative to its luminance (``r > 1``:
    a channel below 0). Beyond ``threshold`` it is compressed softly, ``threshold + (limit - threshold)
    tanh((r - threshold) / (limit - threshold))``, so every channel stays above ``(1 - limit) Y``; the hue
    (the direction from gray) and the luminance are kept. Colours inside ``threshold`` are untouched.
    """
    lin = np.asarray(lin, dtype=np.float32)
    y = lin @ np.asarray(LUMA_709, dtype=np.float32)
    r = (y - lin.min(axis=1)) / np.maximum(y, np.float32(1e-6))
    over = (r > threshold) & (y > 0)
    if not over.any():
        return lin
    out = lin.copy()
    ro, yo = r[over], y[over, None]
    span = limit - threshold
    compressed = threshold + span * np.tanh((ro - threshold) / span)
    out[over] = yo + (compressed / ro)[:, None] * (lin[over] - yo)
    return out


def roll_off(lin: np.ndarray, start: float, white: float) -> np.ndarray:
    """Linear values rolled off above ``start`` so that ``white`` (what sensor-clipped white became after a
    digital push) lands on 1: ``start + (1 - start)(1 - (1 - t)^a)``, ``t = (x - start) / (white - start)``,
    ``a = (white - start) / (1 - start)`` (slope 1 at ``start``: no kink), per channel; unchanged below
    ``start``, 1 beyond ``white``; the identity when ``white`` is 1."""
    out = np.asarray(lin, dtype=np.float32).copy()
    if white <= 1.0 or start >= 1.0:
        return out
    over = out > start
    t = np.minimum((out[over] - start) / np.float32(white - start), np.float32(1.0))
    power = np.float32((white - start) / (1.0 - start))
    out[over] = start + np.float32(1.0 - start) * (1.0 - (1.0 - t) ** power)
    return out


def _develop(
    raw: np.ndarray,
    gains: np.ndarray,
    to_srgb: np.ndarray,
    lut: np.ndarray,
    look: Look | None = None,
    gamut: bool = True,
    push: float = 1.0,
    shoulder: float = 0.0,
) -> np.ndarray:
    """Exposed, sensor-clipped raw (N, 3) -> gains -> highlight clip -> matrix -> digital ``push`` ->
    [look] -> gamut mapping (``compress_gamut``, or a clip at 0 without ``gamut``) -> highlight roll-off
    from ``shoulder`` (0: a clip at 1) -> LUT -> uint8."""
    wb = raw * gains.astype(np.float32)
    np.minimum(wb, np.float32(1.0), out=wb)
    top = np.float32(_OUT_SIZE - 1)
    out = wb @ (to_srgb.T * push).astype(np.float32)
    if look is not None:
        out = look.apply(compress_gamut(out) if gamut else out)
    if gamut:
        out = compress_gamut(out)
    if shoulder > 0:
        out = roll_off(out, shoulder, push)
    out *= top
    np.maximum(out, np.float32(0.0), out=out)
    np.minimum(out, top, out=out)
    out += np.float32(0.5)
    return np.take(lut, out.astype(np.int32))


# Opponent coordinates on linear sRGB: a = (R - G) / sqrt 2, b = (R + G - 2B) / sqrt 6, and luminance.
_OPPONENT = np.array(
    [[1 / np.sqrt(2), -1 / np.sqrt(2), 0.0], [1 / np.sqrt(6), 1 / np.sqrt(6), -2 / np.sqrt(6)], list(LUMA_709)]
)
_FROM_OPPONENT = np.linalg.inv(_OPPONENT)


@dataclass(frozen=True)
class Look:
    """An in-camera picture look applied after white balance, on linear sRGB (grays stay gray).

    With ``h`` the hue angle and ``c`` the chroma relative to luminance in opponent coordinates:
    ``h' = h + sum_k hue[k] . (sin kh, cos kh)`` (a hue turn that depends on the hue),
    ``c' = c exp(sat + sum_k sat_k . (sin kh, cos kh))`` (a saturation that depends on the hue),
    then ``knee * tanh(c' / knee)`` (saturation roll-off: vivid colours compress, as camera looks
    keep them in gamut). Harmonics k = 1, 2. Luminance is kept; the result is not clipped (``_develop``
    maps it into the gamut).
    """

    hue: tuple[tuple[float, float], ...]  # per harmonic (sin, cos) amplitudes, radians
    sat_harmonics: tuple[tuple[float, float], ...]  # per harmonic (sin, cos) amplitudes of log saturation
    sat: float  # global log saturation
    knee: float  # relative chroma where the roll-off bends

    @classmethod
    def draw(cls, rng: np.random.Generator, config: RawRenderConfig) -> Look:
        """A random look within ``config``'s ranges."""
        h, s = config.look_hue, config.look_sat_harmonic
        k_lo, k_hi = config.look_knee
        hue = tuple((float(a), float(b)) for a, b in rng.uniform(-h, h, size=(2, 2)))
        sat_h = tuple((float(a), float(b)) for a, b in rng.uniform(-s, s, size=(2, 2)))
        g_lo, g_hi = config.look_saturation
        return cls(hue, sat_h, float(rng.uniform(g_lo, g_hi)), float(rng.uniform(k_lo, k_hi)))

    def apply(self, lin: np.ndarray) -> np.ndarray:
        """(N, 3) linear sRGB -> the same pixels through the look, float32 (not clipped)."""
        opp = lin.astype(np.float32) @ _OPPONENT.T.astype(np.float32)
        a, b, y = opp[:, 0], opp[:, 1], opp[:, 2]
        h = np.arctan2(b, a)
        c = np.hypot(a, b) / np.maximum(y, 1e-4)
        turn = np.zeros_like(h)
        log_sat = np.full_like(h, self.sat)
        for k, ((hs, hc), (ss, sc)) in enumerate(zip(self.hue, self.sat_harmonics), start=1):
            sk, ck = np.sin(k * h), np.cos(k * h)
            turn += hs * sk + hc * ck
            log_sat += ss * sk + sc * ck
        c = self.knee * np.tanh(c * np.exp(log_sat) / self.knee) * np.maximum(y, 1e-4)
        h = h + turn
        opp[:, 0], opp[:, 1] = c * np.cos(h), c * np.sin(h)
        return opp @ _FROM_OPPONENT.T.astype(np.float32)


class RawRenderer:
    """(input, ground truth) pairs from the captures of ``cameras``."""

    def __init__(self, cameras: list[RawCamera], config: RawRenderConfig | None = None):
        if not cameras:
            raise ValueError("no cameras")
        config = config or RawRenderConfig()
        self.cameras = list(cameras)
        self.config = config
        self._offsets = np.cumsum([0] + [len(c) for c in self.cameras])
        self._styles = list(config.style_probs)
        self._presets = list(config.preset_probs)
        for s in self._styles:
            if s not in STYLES:
                raise ValueError(f"unknown style {s!r}")
        for p in self._presets:
            if p not in PRESETS:
                raise ValueError(f"unknown preset {p!r}")
        self._style_cum = self._cumulative([config.style_probs[s] for s in self._styles])
        self._preset_p = np.array([config.preset_probs[p] for p in self._presets], dtype=np.float64)
        self._preset_mired = {p: (1e6 / PRESETS[p][1][1], 1e6 / PRESETS[p][1][0]) for p in self._presets}
        self._gt_params = _gt_style_params()
        self._gt_lut = _output_lut(self._gt_params[1], self._gt_params[2])
        self._gt_to_srgb = [_saturation_matrix(self._gt_params[0]) @ c.ccm for c in self.cameras]
        self._luma_of_wb = [np.asarray(LUMA_709) @ c.ccm for c in self.cameras]

    @staticmethod
    def _cumulative(p: list[float]) -> np.ndarray:
        c = np.cumsum(np.asarray(p, dtype=np.float64))
        return c / c[-1]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(camera number, capture number) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        cam = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return cam, int(index - self._offsets[cam])

    # ---------------------------------------------------------------- draws
    def _large_cast_preset(self, true_mired: float, u: np.ndarray) -> tuple[str, float]:
        """Preset and its applied mired, at least ``min_large_mired`` from the light."""
        gap = self.config.min_large_mired
        allowed = []
        for p in self._presets:
            lo, hi = self._preset_mired[p]
            parts = [(a, b) for a, b in ((lo, min(hi, true_mired - gap)), (max(lo, true_mired + gap), hi)) if b > a]
            if not parts and lo == hi and abs(lo - true_mired) >= gap:
                parts = [(lo, hi)]
            allowed.append(parts)
        weights = self._preset_p * np.array([1.0 if a else 0.0 for a in allowed])
        if weights.sum() == 0:  # no preset far enough: any preset
            weights = self._preset_p.copy()
            allowed = [[self._preset_mired[p]] for p in self._presets]
        k = int(np.searchsorted(self._cumulative(list(weights)), u[0], side="right"))
        k = min(k, len(self._presets) - 1)
        parts = allowed[k]
        lengths = np.array([b - a for a, b in parts])
        x = u[1] * lengths.sum()
        for (start, _end), n in zip(parts, lengths):
            if x <= n:
                return self._presets[k], float(start + x)
            x -= n
        return self._presets[k], float(parts[-1][1])

    def _nearest_preset(self, mired: float) -> str:
        def dist(p: str) -> float:
            lo, hi = self._preset_mired[p]
            return max(lo - mired, 0.0, mired - hi)

        return min(self._presets, key=dist)

    def sample(self, index: int, rng: np.random.Generator) -> dict:
        """The random settings of one pair (no pixels touched)."""
        cfg = self.config
        cam_no, cap_no = self.locate(index)
        camera = self.cameras[cam_no]
        locus = camera.locus
        # A fixed number of draws in a fixed order: configs differ only in use.
        u = rng.random(13)
        relight_tint, preset_tint = rng.normal(size=2)
        measured = camera.labels[cap_no].astype(np.float64)
        relit = bool(u[0] < cfg.relight_rate)
        if relit:
            lo, hi, w = 1e6 / cfg.relight_kelvin[1], 1e6 / cfg.relight_kelvin[0], u[1]
            if w < cfg.relight_daylight_rate:  # one uniform draw serves the two-part mixture
                lo, hi, w = 1e6 / cfg.daylight_kelvin[1], 1e6 / cfg.daylight_kelvin[0], w / cfg.relight_daylight_rate
            elif cfg.relight_daylight_rate > 0:
                w = (w - cfg.relight_daylight_rate) / (1 - cfg.relight_daylight_rate)
            true_mired = lo + w * (hi - lo)
            light = locus.light(true_mired, relight_tint * cfg.relight_tint_sigma)
        else:
            true_mired = float(locus.mired_of(measured))
            light = measured / measured.sum()
        neutral = bool(u[2] < cfg.neutral_rate)
        small = (not neutral) and bool(u[3] < cfg.small_cast_rate)
        if neutral:
            preset, preset_mired, preset_light = "G", true_mired, light
        elif small:
            d = cfg.small_mired[0] + u[4] * (cfg.small_mired[1] - cfg.small_mired[0])
            preset_mired = true_mired + (d if u[5] < 0.5 else -d)
            preset = self._nearest_preset(preset_mired)
            preset_light = locus.light(preset_mired, s_offset=0.5 * float(locus.residual(light)))
        else:
            preset, preset_mired = self._large_cast_preset(true_mired, u[4:6])
            d_lo, d_hi = PRESETS[preset][2]
            duv = d_lo + u[6] * (d_hi - d_lo) + preset_tint * cfg.tint_sigma
            preset_light = locus.light(preset_mired, duv)
        style = self._styles[min(int(np.searchsorted(self._style_cum, u[7], side="right")), len(self._styles) - 1)]
        if style == "AS":
            style_params = self._gt_params
        else:
            st = STYLES[style]
            v = rng.random(3)
            style_params = (
                float(st.saturation[0] + v[0] * (st.saturation[1] - st.saturation[0])),
                round(round(float(st.contrast[0] + v[1] * (st.contrast[1] - st.contrast[0])) / 0.05) * 0.05, 3),
                round(round(float(st.lift[0] + v[2] * (st.lift[1] - st.lift[0])) / 0.025) * 0.025, 3),
            )
        e_lo, e_hi = cfg.exposure_range
        exposure_target = float(np.exp(np.log(e_lo) + u[8] * (np.log(e_hi) - np.log(e_lo))))
        clip_share = 0.0
        if u[11] < cfg.overexposure_rate:
            c_lo, c_hi = cfg.overexposure_clip
            clip_share = c_lo + u[12] * (c_hi - c_lo)
        crop = None
        flip = False
        if cfg.augment:
            c_lo, c_hi = cfg.crop_range
            side = _IMAGE_SIDE * (c_lo + u[9] * (c_hi - c_lo))
            w = rng.random(2) * (_IMAGE_SIDE - side)
            crop = (float(w[0]), float(w[1]), float(side))
            flip = bool(u[10] < cfg.flip_rate)
        look, in_camera_tone = None, None
        if cfg.in_camera_rate > 0 and rng.random() < cfg.in_camera_rate:  # drawn last: other draws unchanged
            look = Look.draw(rng, cfg)
            v = rng.random(2)
            in_camera_tone = (
                round(
                    float(cfg.in_camera_contrast[0] + v[0] * (cfg.in_camera_contrast[1] - cfg.in_camera_contrast[0])), 2
                ),
                round(float(cfg.in_camera_lift[0] + v[1] * (cfg.in_camera_lift[1] - cfg.in_camera_lift[0])), 3),
            )
        flare = float(rng.uniform(*cfg.flare))  # drawn last: other draws unchanged
        return {
            "flare": flare,
            "camera_index": cam_no,
            "capture_index": cap_no,
            "relit": relit,
            "neutral": neutral,
            "small": small,
            "measured_light": measured / measured.sum(),
            "light": light,
            "true_mired": float(true_mired),
            "preset": preset,
            "preset_mired": float(preset_mired),
            "preset_light": preset_light,
            "style": style,
            "style_params": style_params,
            "exposure_target": exposure_target,
            "clip_share": clip_share,
            "crop": crop,
            "flip": flip,
            "look": look,
            "in_camera_tone": in_camera_tone,
        }

    # -------------------------------------------------------------- render
    def _prepare_raw(self, s: dict) -> np.ndarray:
        camera = self.cameras[s["camera_index"]]
        raw = camera.images[s["capture_index"]].astype(np.float32)
        if s["crop"] is not None:
            raw = _crop_resize(raw, *s["crop"])
        if s["flip"]:
            raw = raw[:, ::-1]
        return np.ascontiguousarray(raw).reshape(-1, 3)

    def _exposure(
        self,
        raw: np.ndarray,
        relight: np.ndarray,
        gains: tuple[np.ndarray, ...],
        cam_no: int,
        target: float,
        clip_share: float = 0.0,
    ) -> tuple[float, float]:
        """(scale on ``raw * relight``, digital push): the first of ``gains`` (the ground truth's) puts the
        mean luminance (chart excluded, before clipping) at ``target``; the scale is lowered if needed so
        that at most ``highlight_share`` of the pixels saturate under any of ``gains`` (highlight-priority
        metering), and the push (>= 1) is what development adds back; with ``clip_share`` (a hard frame)
        the scale is raised instead so that at least that share reaches sensor saturation."""
        weights = (relight * gains[0] * self._luma_of_wb[cam_no]).astype(np.float32)
        peak = _pixel_max(raw)
        valid = peak > 0
        mean_y = float((raw @ weights)[valid].mean()) if valid.any() else 0.0
        k = target / max(mean_y, 1e-6)
        metered = k
        if clip_share > 0 and valid.any():
            relit_peak = _pixel_max(raw * relight.astype(np.float32))[valid]
            k = max(k, 1.0 / max(float(np.quantile(relit_peak, 1.0 - clip_share)), 1e-6))
        elif self.config.highlight_share > 0 and valid.any():
            developed = _pixel_max(raw * (relight * np.max(gains, axis=0)).astype(np.float32))[valid]
            top = float(np.quantile(developed, 1.0 - self.config.highlight_share))
            k = min(k, self.config.highlight_headroom / max(top, 1e-6))
        k = float(np.clip(k, 1e-3, 1e3))
        return k, max(1.0, metered / k) if self.config.shoulder > 0 else 1.0

    def render(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        """(input uint8 (64,64,3), ground truth uint8 (64,64,3), info) of capture ``index``.

        ``info``: preset ("T", "F", "D", "C", "S"; "G" if neutral),
        preset_kelvin, preset_nominal_kelvin (None if neutral), true_kelvin,
        camera, name (capture), style, style_params, is_cast, is_small_cast,
        relit, cast_matrix (3x3 linear sRGB, gt -> input before clipping and
        styles; identity if neutral), gains (g_in / g_true, camera RGB,
        min-normalised), light / measured_light (camera RGB, sum 1),
        raw_scale (per-channel factor on the (cropped) capture before the
        sensor clip), clipped_fraction, hard (an overexposed frame, ``overexposure_rate``),
        crop (x0, y0, side) or None, flip.
        """
        s = self.sample(index, rng)
        cam_no = s["camera_index"]
        camera = self.cameras[cam_no]
        raw = self._prepare_raw(s)
        relight = s["light"] / s["measured_light"]
        relight = relight / relight[1]
        g_true = _min_normalised_gains(s["light"])
        g_in = _min_normalised_gains(s["preset_light"])
        k, push = self._exposure(raw, relight, (g_true, g_in), cam_no, s["exposure_target"], s["clip_share"])
        raw_scale = (relight * k).astype(np.float32)
        raw = raw * raw_scale
        if s["flare"] > 0:
            lit = _pixel_max(raw) > 0  # the chart stays masked
            raw[lit] += np.float32(s["flare"]) * raw[lit].mean(axis=0)
        np.minimum(raw, np.float32(1.0), out=raw)
        clipped = float(np.mean(_pixel_max(raw) >= 1.0))

        dev = {"gamut": self.config.compress_gamut, "push": push, "shoulder": self.config.shoulder}
        if s["look"] is not None:  # in-camera: one look and tone curve render both images
            lut = _cached_output_lut(*s["in_camera_tone"])
            gt = _develop(raw, g_true, camera.ccm, lut, s["look"], **dev)
            inp = gt.copy() if s["neutral"] else _develop(raw, g_in, camera.ccm, lut, s["look"], **dev)
        else:
            gt = _develop(raw, g_true, self._gt_to_srgb[cam_no], self._gt_lut, **dev)
            if s["neutral"] and s["style"] == "AS":
                inp = gt.copy()
            else:
                sat, contrast, lift = s["style_params"]
                to_srgb = _saturation_matrix(sat) @ camera.ccm
                inp = _develop(raw, g_in, to_srgb, _cached_output_lut(contrast, lift), **dev)
        ratio = g_in / g_true
        cast = np.eye(3) if s["neutral"] else camera.ccm @ np.diag(ratio) @ np.linalg.inv(camera.ccm)
        shape = (_IMAGE_SIDE, _IMAGE_SIDE, 3)
        info = {
            "preset": s["preset"],
            "preset_kelvin": 1e6 / s["preset_mired"],
            "preset_nominal_kelvin": None if s["neutral"] else PRESETS[s["preset"]][0],
            "true_kelvin": 1e6 / s["true_mired"],
            "camera": camera.name,
            "name": str(camera.names[s["capture_index"]]),
            "style": "IC" if s["look"] is not None else s["style"],
            "style_params": s["in_camera_tone"] if s["look"] is not None else s["style_params"],
            "pipeline": "in-camera" if s["look"] is not None else "acr",
            "is_cast": not s["neutral"],
            "is_small_cast": s["small"],
            "relit": s["relit"],
            "cast_matrix": cast.astype(np.float32),
            "gains": ratio.astype(np.float32),
            "light": s["light"].astype(np.float32),
            "measured_light": s["measured_light"].astype(np.float32),
            "raw_scale": raw_scale,
            "clipped_fraction": clipped,
            "hard": s["clip_share"] > 0,
            "push": push,
            "crop": s["crop"],
            "flip": s["flip"],
        }
        return inp.reshape(shape), gt.reshape(shape), info

    def render_balanced(self, index: int) -> np.ndarray:
        """Capture ``index`` under its measured light, in AS, whole frame, at
        the geometric mean of ``exposure_range``: the do-no-harm reference."""
        cam_no, cap_no = self.locate(index)
        camera = self.cameras[cam_no]
        raw = camera.images[cap_no].astype(np.float32).reshape(-1, 3)
        label = camera.labels[cap_no].astype(np.float64)
        g = _min_normalised_gains(label)
        target = float(np.sqrt(self.config.exposure_range[0] * self.config.exposure_range[1]))
        k, push = self._exposure(raw, np.ones(3), (g,), cam_no, target)
        raw = np.minimum(raw * np.float32(k), np.float32(1.0))
        dev = {"gamut": self.config.compress_gamut, "push": push, "shoulder": self.config.shoulder}
        return _develop(raw, g, self._gt_to_srgb[cam_no], self._gt_lut, **dev).reshape(_IMAGE_SIDE, _IMAGE_SIDE, 3)
