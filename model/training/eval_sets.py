"""Evaluation data sources: the Rendered WB sets, Rendered Cube+ and pair lists.

A source is named on the command line as ``KIND=PATH`` (see :func:`parse_source`):

``set2=DIR``
    Rendered WB Set 2: ``DIR/input/NAME.png`` with ``DIR/groundtruth/NAME.png``
    (same file name). No chart.
``set1=DIR``
    Rendered WB Set 1: inputs ``SCENE_{WB}_{PS}.png`` (e.g.
    ``Canon1DsMkIII_0087_F_AS.png``) with ground truth ``SCENE_G_AS.png``;
    the colour chart's rectangle is the first line ``x,y,w,h`` (floats,
    rounded) of ``metadata/NAME_mask.txt``, where NAME is the input's stem
    (as in the public data and Afifi's ``get_metadata``; ``SCENE_G_AS_mask.txt``
    and ``SCENE_mask.txt`` are accepted too). The ``input/``, ``groundtruth/``
    and ``metadata/`` sub-folders may also be absent, everything flat in DIR.
``cube=DIR``
    Rendered Cube+: ``N_{WB}.JPG`` with ground truth ``N.JPG`` (same
    extension), in ``DIR/input`` + ``DIR/groundtruth`` or flat. The SpyderCube
    calibration object is already blacked out in these renderings; "58,373"
    in the protocol is its *area in pixels* (58,373 px), not a width and
    height. Afifi's evaluation code (``WB_sRGB/.../evaluation/get_metadata``:
    ``mask_area = 58373  # calibration obj's area is fixed over all images``;
    MATLAB version: ``cc_mask=[]; % we already masked out it during
    rendering``) divides each error sum by (pixel count - 58373). Here those
    pixels are dropped by the all-zero-in-both rule of :func:`load_pair`, so
    Cube+ pairs carry no rectangle (``exclude_bottom_right=None``). JPEG noise
    can leave a few near-black, non-zero pixels at the object's border; they
    are scored, as the published code scores them too.
``pairs=FILE.tsv``
    ``input<TAB>groundtruth`` per line, paths relative to the tsv's folder;
    blank lines and lines starting with ``#`` are ignored.
``synthetic``
    Marker for the emulator's synthetic pairs (generated elsewhere); it has
    no files, so :func:`list_pairs` refuses it.

A missing or malformed folder or file raises :class:`ValueError` naming the
path and what was expected.

Set 1 folds (:func:`read_fold_file`) use a plain text format::

    # comment lines and blank lines are ignored
    [fold 1]
    Canon1DsMkIII_0001
    Canon1DsMkIII_0002_F_AS.png
    [fold 2]
    ...

Each entry is a scene name (matches every input of that scene) or an image
file name / stem; :func:`select_pairs` picks the pairs a list of entries names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "SOURCE_KINDS",
    "SourceSpec",
    "PairSpec",
    "parse_source",
    "list_pairs",
    "load_image",
    "load_pair",
    "scene_disjoint_split",
    "read_fold_file",
    "select_pairs",
]

SOURCE_KINDS = ("set1", "set2", "cube", "pairs", "synthetic")

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_SET1_INPUT = re.compile(r"^(?P<scene>.+)_(?P<wb>[A-Za-z]+)_(?P<ps>[A-Za-z]+)$")
_CUBE_INPUT = re.compile(r"^(?P<scene>\d+)_(?P<wb>[A-Za-z]+)$")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed data source: ``kind`` in :data:`SOURCE_KINDS`; ``path`` is None for ``synthetic``."""

    kind: str
    path: Path | None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}={self.path}"


@dataclass(frozen=True)
class PairSpec:
    """One input / ground-truth pair and the region excluded from scoring.

    ``exclude_rect`` is ``(x, y, w, h)`` in pixels (Set 1's colour chart);
    ``exclude_bottom_right`` is ``(w, h)`` of a rectangle in the bottom-right
    corner. Both regions are blacked out in input and ground truth by
    :func:`load_pair` (as the published protocol does before correcting).
    """

    name: str
    input_path: Path
    groundtruth_path: Path
    exclude_rect: tuple[int, int, int, int] | None = None
    exclude_bottom_right: tuple[int, int] | None = None


def parse_source(spec: str) -> SourceSpec:
    """Parse ``KIND=PATH`` (``set1``, ``set2``, ``cube``, ``pairs``) or the literal ``synthetic``.

    Only the syntax is checked here; :func:`list_pairs` checks the files.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"empty data source {spec!r}; expected KIND=PATH with KIND in set1, set2, cube, pairs, or 'synthetic'"
        )
    spec = spec.strip()
    if spec == "synthetic":
        return SourceSpec("synthetic", None)
    kind, sep, path = spec.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in SOURCE_KINDS or kind == "synthetic" or not path.strip():
        raise ValueError(
            f"bad data source {spec!r}; expected set1=DIR, set2=DIR, cube=DIR, pairs=FILE.tsv or 'synthetic'"
        )
    return SourceSpec(kind, Path(path.strip()).expanduser())


def _as_source(spec: SourceSpec | str) -> SourceSpec:
    return spec if isinstance(spec, SourceSpec) else parse_source(spec)


def _require_dir(path: Path, expected: str) -> None:
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise ValueError(f"{path} {what}; expected {expected}")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS)


def _sub(root: Path, name: str) -> Path:
    """``root/name`` if that folder exists (any letter case), else ``root`` (flat layout)."""
    for cand in (root / name, root / name.lower(), root / name.capitalize()):
        if cand.is_dir():
            return cand
    return root


def _missing_error(kind: str, root: Path, missing: list[tuple[Path, Path]], expected: str) -> ValueError:
    shown = "; ".join(f"{i.name} -> {g}" for i, g in missing[:3])
    more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
    return ValueError(
        f"{kind} source {root}: {len(missing)} input(s) without ground truth: {shown}{more}; expected {expected}"
    )


def _pair_by_name(kind: str, root: Path, inp: Path, truth_of, expected: str, what: str) -> list[PairSpec]:
    """Pairs of the images in ``inp`` with ``truth_of(image)`` (None: not an input); errors name what is missing."""
    pairs, missing = [], []
    for p in _images(inp):
        g = truth_of(p)
        if g is None:
            continue
        if g.is_file():
            pairs.append(PairSpec(p.name, p, g))
        else:
            missing.append((p, g))
    if missing:
        raise _missing_error(kind, root, missing, expected)
    if not pairs:
        raise ValueError(f"no {what} in {inp}; expected {expected}")
    return pairs


def _list_set2(root: Path) -> list[PairSpec]:
    expected = f"{root}/input/NAME.png and {root}/groundtruth/NAME.png (Rendered WB Set 2)"
    _require_dir(root, expected)
    inp, gt = root / "input", root / "groundtruth"
    _require_dir(inp, expected)
    _require_dir(gt, expected)
    return _pair_by_name("set2", root, inp, lambda p: gt / p.name, expected, "images")


def _read_mask_rect(path: Path) -> tuple[int, int, int, int]:
    try:
        first = path.read_text().strip().splitlines()[0]
        vals = [float(v) for v in re.split(r"[,\s]+", first.strip()) if v][:4]
        if len(vals) != 4:
            raise ValueError
    except (IndexError, ValueError, OSError):
        raise ValueError(f"malformed chart mask file {path}; expected a first line 'x,y,w,h'") from None
    x, y, w, h = (int(v) for v in np.round(vals))  # rounded as in the published code
    if w <= 0 or h <= 0:
        raise ValueError(f"chart mask file {path} gives an empty rectangle {vals}")
    return x, y, w, h


def _list_set1(root: Path) -> list[PairSpec]:
    expected = (
        f"Rendered WB Set 1 in {root}: input/SCENE_WB_PS.png, groundtruth/SCENE_G_AS.png and "
        "metadata/SCENE_WB_PS_mask.txt (sub-folders optional)"
    )
    _require_dir(root, expected)
    inp, gt, meta = _sub(root, "input"), _sub(root, "groundtruth"), _sub(root, "metadata")
    pairs, missing, no_mask = [], [], []
    for p in _images(inp):
        m = _SET1_INPUT.match(p.stem)
        if m is None or (m["wb"].upper() == "G" and m["ps"].upper() == "AS"):
            continue  # a ground truth (flat layout) or an unrelated file
        g = gt / f"{m['scene']}_G_AS{p.suffix}"
        if not g.is_file():
            missing.append((p, g))
            continue
        candidates = [
            meta / f"{p.stem}_mask.txt",
            meta / f"{m['scene']}_G_AS_mask.txt",
            meta / f"{m['scene']}_mask.txt",
        ]
        mask_file = next((c for c in candidates if c.is_file()), None)
        if mask_file is None:
            no_mask.append(candidates[0])
            continue
        pairs.append(PairSpec(p.name, p, g, exclude_rect=_read_mask_rect(mask_file)))
    if missing:
        raise _missing_error("set1", root, missing, expected)
    if no_mask:
        more = f" (and {len(no_mask) - 1} more)" if len(no_mask) > 1 else ""
        raise ValueError(f"set1 source {root}: chart mask file {no_mask[0]} not found{more}; expected {expected}")
    if not pairs:
        raise ValueError(f"no Set 1 inputs (SCENE_WB_PS.png) in {inp}; expected {expected}")
    return pairs


def _list_cube(root: Path) -> list[PairSpec]:
    expected = f"Rendered Cube+ in {root}: input/N_WB.JPG and groundtruth/N.JPG (sub-folders optional)"
    _require_dir(root, expected)
    inp, gt = _sub(root, "input"), _sub(root, "groundtruth")

    def truth(p: Path) -> Path | None:
        m = _CUBE_INPUT.match(p.stem)
        return None if m is None else gt / f"{m['scene']}{p.suffix}"  # None: a ground truth or unrelated file

    return _pair_by_name("cube", root, inp, truth, expected, "Cube+ inputs (N_WB.JPG)")


def _list_tsv(path: Path) -> list[PairSpec]:
    expected = "a tab-separated file with 'input<TAB>groundtruth' per line, paths relative to the file"
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file; expected {expected}")
    base = path.parent
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise ValueError(f"{path}:{n}: malformed line {line!r}; expected {expected}")
        i, g = (base / f.strip() for f in fields)
        for p in (i, g):
            if not p.is_file():
                raise ValueError(f"{path}:{n}: image {p} not found")
        pairs.append(PairSpec(i.name, i, g))
    if not pairs:
        raise ValueError(f"{path} lists no pairs; expected {expected}")
    return pairs


def list_pairs(spec: SourceSpec | str) -> list[PairSpec]:
    """All pairs of a source, sorted by input file name (``pairs=`` keeps file order)."""
    src = _as_source(spec)
    if src.kind == "synthetic":
        raise ValueError("the 'synthetic' source has no files to list; generate its pairs with the emulator")
    listers = {"set1": _list_set1, "set2": _list_set2, "cube": _list_cube, "pairs": _list_tsv}
    return listers[src.kind](src.path)


def load_image(path: Path | str) -> np.ndarray:
    """Decode an image as ``(H, W, 3)`` uint8 RGB, EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_pair(pair: PairSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input, groundtruth, mask)``: two uint8 ``(H, W, 3)`` images and the bool ``(H, W)`` scoring mask.

    The excluded region (chart rectangle / bottom-right corner) is blacked out
    in both images, as the published protocol does before correcting, so a
    corrector cannot read the chart. ``mask`` is False there and on pixels
    that are all-zero in both images.
    """
    inp = load_image(pair.input_path)
    gt = load_image(pair.groundtruth_path)
    if inp.shape != gt.shape:
        raise ValueError(
            f"{pair.name}: input {pair.input_path} is {inp.shape[1]}x{inp.shape[0]} but ground truth "
            f"{pair.groundtruth_path} is {gt.shape[1]}x{gt.shape[0]}; expected the same size"
        )
    h, w = gt.shape[:2]
    mask = np.ones((h, w), dtype=bool)
    if pair.exclude_rect is not None:
        x, y, rw, rh = pair.exclude_rect
        ys, xs = slice(max(y, 0), max(y + rh, 0)), slice(max(x, 0), max(x + rw, 0))
        mask[ys, xs] = False
    if pair.exclude_bottom_right is not None:
        bw, bh = pair.exclude_bottom_right
        mask[max(h - bh, 0) :, max(w - bw, 0) :] = False
    if not mask.all():
        inp[~mask] = 0
        gt[~mask] = 0
    mask &= inp.any(axis=2) | gt.any(axis=2)
    if not mask.any():
        raise ValueError(f"{pair.name}: no pixels left to score after masking")
    return inp, gt, mask


def _gt_content_key(path: Path) -> str:
    im = load_image(path)
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(im.shape, dtype=np.int64).tobytes())
    h.update(im.tobytes())
    return h.hexdigest()


def scene_disjoint_split(
    pairs: Sequence[PairSpec], val_fraction: float, seed: int = 0, *, by_content: bool = True
) -> tuple[list[PairSpec], list[PairSpec]]:
    """Split pairs into ``(train, val)`` so no ground truth is shared across the split.

    Pairs whose ground truths are the same file, or (``by_content=True``)
    decode to identical pixels, form one group; groups are shuffled with
    ``seed`` and taken into validation until it holds at least
    ``val_fraction`` of the pairs. Each ground-truth file is decoded once
    (skip that with ``by_content=False`` to group by path only). Both lists
    keep the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    pairs = list(pairs)
    path_keys = {p.groundtruth_path.resolve() for p in pairs}
    if by_content:
        key_of = {path: _gt_content_key(path) for path in sorted(path_keys)}
    else:
        key_of = {path: str(path) for path in path_keys}
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(key_of[p.groundtruth_path.resolve()], []).append(i)
    ordered = sorted(groups.values(), key=lambda idx: min(str(pairs[i].groundtruth_path) for i in idx))
    order = np.random.default_rng(seed).permutation(len(ordered))
    target = val_fraction * len(pairs)
    val_idx: set[int] = set()
    for k in order:
        if len(val_idx) >= target:
            break
        val_idx.update(ordered[k])
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val


def read_fold_file(path: Path | str) -> list[list[str]]:
    """Read a fold file (format in the module docstring); returns the entries of each fold in order."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"fold file {path} not found; expected '[fold K]' headers each followed by names, one per line"
        )
    folds: dict[int, list[str]] = {}
    current: int | None = None
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[\s*fold\s*(\d+)\s*\]", line, flags=re.IGNORECASE)
        if m:
            current = int(m.group(1))
            if current in folds:
                raise ValueError(f"{path}:{n}: fold {current} appears twice")
            folds[current] = []
        elif current is None:
            raise ValueError(f"{path}:{n}: name {line!r} before any '[fold K]' header")
        else:
            folds[current].append(line)
    if not folds:
        raise ValueError(f"fold file {path} has no '[fold K]' sections")
    return [folds[k] for k in sorted(folds)]


def select_pairs(pairs: Iterable[PairSpec], names: Iterable[str]) -> list[PairSpec]:
    """Pairs named by ``names``: an entry matches a pair's file name, its stem, or its Set 1 scene."""
    wanted = {n.strip() for n in names if n.strip()}
    out = []
    for p in pairs:
        stem = Path(p.name).stem
        m = _SET1_INPUT.match(stem)
        keys = {p.name, stem} | ({m["scene"]} if m else set())
        if keys & wanted:
            out.append(p)
    return out
