"""Training content: well-balanced photos and procedural scenes.

Data preparation (never run at service time)::

    python -m model.training.photos prepare [--cache DIR]

collects well-balanced photographs into ``DIR`` (default
``~/.cache/wbvae/sources``) as JPEG files, long side at most 1024 px:

* the photos shipped with installed Python packages (scikit-image data,
  scikit-learn's china/flower and matplotlib's grace_hopper when installed);
* real photographs from Debian wallpaper / documentation packages, fetched
  with ``apt-get download`` + ``dpkg -x`` into a temporary directory.

Graphics, illustrations, grayscale and heavily colour-graded shots are
filtered out automatically (see :func:`photo_features` / :func:`is_photo`).
Idempotent: existing files are kept, re-running only adds what is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from model.colour import srgb_to_linear

DEFAULT_CACHE = Path(os.environ.get("WBVAE_SOURCES", "~/.cache/wbvae/sources")).expanduser()
PHOTO_EXTS = (".jpg", ".jpeg", ".png")
MAX_SIDE = 1024
MIN_SIDE = 240

#: Debian packages with real photographs (those not in the archive are skipped).
DEBIAN_PACKAGES = (
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "opencv-doc",
)

#: scikit-image's colour photographs (files inside ``skimage/data``).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
)

# Path fragments that are never photos of the world (masks, UI screenshots,
# dark-theme duplicates, calibration targets, logos, ground-truth maps).
_SKIP_PARTS = (
    "screenshot",
    "images_dark",
    "mask",
    "logo",
    "chessboard",
    "trimap",
    "output_mattes",
    "gt.png",
    "aloegt",
    "sudoku",
    "digits",
    "/shape/",
    "result",
    "templ",
    "tmpl",
)


# --------------------------------------------------------------------------
# Reading.


def list_source_photos(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Sorted photo files (jpg/jpeg/png) directly inside ``cache_dir``."""
    d = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE
    if not d.is_dir():
        return []
    return sorted(
        p for p in d.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTS and not p.name.startswith(".")
    )


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 sRGB in [0, 1] (alpha dropped, gray expanded)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        return np.asarray(im, dtype=np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------
# Procedural scenes.

# Natural reflectance-like colours: sRGB of Macbeth ColorChecker patches
# (skin, foliage, sky, flowers, neutrals ...) and a few common materials.
_NATURAL_SRGB = (
    np.array(
        [
            [115, 82, 68],
            [194, 150, 130],
            [98, 122, 157],
            [87, 108, 67],
            [133, 128, 177],
            [103, 189, 170],
            [214, 126, 44],
            [80, 91, 166],
            [193, 90, 99],
            [94, 60, 108],
            [157, 188, 64],
            [224, 163, 46],
            [56, 61, 150],
            [70, 148, 73],
            [175, 54, 60],
            [231, 199, 31],
            [187, 86, 149],
            [8, 133, 161],
            [243, 243, 242],
            [200, 200, 200],
            [160, 160, 160],
            [122, 122, 121],
            [85, 85, 85],
            [52, 52, 52],
            [140, 110, 80],
            [170, 140, 100],
            [95, 80, 60],
            [120, 140, 90],
            [200, 180, 150],
            [60, 90, 50],
            [150, 160, 170],
            [180, 120, 90],
            [210, 200, 180],
            [70, 60, 55],
        ],
        dtype=np.float32,
    )
    / 255.0
)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    g = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0.0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int32), cells - 1)
    f = t - i
    a = g[i][:, i] * (1 - f)[None, :] + g[i][:, i + 1] * f[None, :]
    b = g[i + 1][:, i] * (1 - f)[None, :] + g[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


def procedural_scene(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A Mondrian-like scene: (size, size, 3) float32 sRGB in [0, 1].

    Overlapping rectangles and discs of natural reflectance-like colours
    (jittered), lit by a smooth illumination gradient, with per-patch shading
    gradients, texture, sensor-like noise and often a white or gray patch.
    Colours are mixed in linear light, then encoded to sRGB.
    """
    lin_cols = srgb_to_linear(_NATURAL_SRGB)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)

    def colour() -> np.ndarray:
        c = lin_cols[int(rng.integers(len(lin_cols)))]
        # jitter in log space (hue/brightness variation of real materials)
        return np.clip(
            c * np.exp(rng.normal(0.0, 0.15, 3)).astype(np.float32) * np.float32(rng.uniform(0.6, 1.3)), 0.002, 0.95
        )

    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = colour()
    n = int(rng.integers(8, 40))
    for _k in range(n):
        c = colour()
        if rng.random() < 0.75:  # rectangle
            w, h = rng.uniform(0.05, 0.5, 2)
            x0, y0 = rng.uniform(-0.1, 1.0, 2)
            m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
        else:  # disc / ellipse
            cx, cy = rng.uniform(0, 1, 2)
            rx, ry = rng.uniform(0.03, 0.25, 2)
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0
        if not m.any():
            continue
        # shading gradient across the patch
        gx, gy = rng.normal(0.0, 0.4, 2)
        shade = np.float32(1.0) + np.float32(gx) * (xx[m] - 0.5) + np.float32(gy) * (yy[m] - 0.5)
        img[m] = c[None, :] * np.clip(shade, 0.3, 1.7)[:, None]
    if rng.random() < 0.6:  # a white or gray reference patch
        g = np.float32(rng.choice([0.85, 0.6, 0.35, 0.18]))
        w = rng.uniform(0.06, 0.2)
        x0, y0 = rng.uniform(0.0, 1.0 - w, 2)
        m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + w)
        img[m] = g
    # texture: multiplicative fine-grained value noise, then global lighting
    tex_amp = np.float32(rng.uniform(0.0, 0.25))
    img *= (1.0 + tex_amp * _smooth_noise(rng, size, int(rng.integers(16, 64))))[..., None]
    light = 1.0 + np.float32(rng.uniform(0.1, 0.5)) * _smooth_noise(rng, size, 2)
    img *= light[..., None] * np.float32(rng.uniform(0.7, 1.4))
    img += rng.normal(0.0, rng.uniform(0.0, 0.004), img.shape).astype(np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    enc = np.where(img <= 0.0031308, img * 12.92, 1.055 * np.power(img, 1 / 2.4) - 0.055)
    return np.clip(enc, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# Photo filter.


@dataclass
class PhotoFeatures:
    unique_colours: int  # distinct 5-bit colours in a 256-px thumbnail
    flat_fraction: float  # pixels with no local gradient at all
    texture: float  # mean |gradient| of luma (0..1 scale)
    mean_chroma: float  # mean CIELab C*
    cast: float  # |mean (a*, b*)| of the bright-enough pixels
    neutral_fraction: float  # pixels with C* < 6 (where white balance shows)
    dark_fraction: float  # pixels with L* < 8
    fine_detail: float  # 25th percentile over 16x16 blocks of |luma - 3x3 box blur|
    # at <= 1024 px (0..255): ~0 for rendered graphics


def _thumb(img: Image.Image, side: int = 256) -> np.ndarray:
    im = img.convert("RGB")
    im.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def photo_features(img: Image.Image) -> PhotoFeatures:
    from skimage.color import rgb2lab

    t = _thumb(img)
    q = (t * 31.0 + 0.5).astype(np.int32)
    unique = len(np.unique(q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2]))
    y = t @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gx = np.abs(np.diff(y, axis=1))[:-1]
    gy = np.abs(np.diff(y, axis=0))[:, :-1]
    g = gx + gy
    flat = float((g < 0.5 / 255).mean())
    lab = rgb2lab(t)
    c = np.hypot(lab[..., 1], lab[..., 2])
    bright = lab[..., 0] > 15
    if bright.sum() < 100:
        bright = np.ones_like(bright)
    cast = float(np.hypot(lab[..., 1][bright].mean(), lab[..., 2][bright].mean()))
    big = img.convert("L")
    big.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    a = np.asarray(big, dtype=np.float32)
    d = np.abs(a - np.asarray(big.filter(ImageFilter.BoxBlur(1)), dtype=np.float32))
    hh, ww = (d.shape[0] // 16) * 16, (d.shape[1] // 16) * 16
    blocks = d[:hh, :ww].reshape(hh // 16, 16, ww // 16, 16).mean(axis=(1, 3))
    return PhotoFeatures(
        unique_colours=int(unique),
        flat_fraction=flat,
        texture=float(g.mean()),
        mean_chroma=float(c.mean()),
        cast=cast,
        neutral_fraction=float((c[bright] < 6).mean()),
        dark_fraction=float((lab[..., 0] < 8).mean()),
        fine_detail=float(np.percentile(blocks, 25)),
    )


def is_photo(f: PhotoFeatures) -> tuple[bool, str]:
    """Heuristic: a natural, well-balanced colour photograph?

    Thresholds set by looking at every candidate of the Debian packages
    (docs/emulator.md): palette graphics have few colours or flat areas,
    rendered/vector wallpapers have no fine detail (no sensor noise, no
    texture) and are smooth and colourful, graded shots have extreme chroma.
    """
    if f.unique_colours < 300:
        return False, f"few colours ({f.unique_colours})"
    if f.flat_fraction > 0.3:
        return False, f"flat areas ({f.flat_fraction:.2f})"
    if f.mean_chroma < 4.0:
        return False, f"grayscale ({f.mean_chroma:.1f})"
    if f.fine_detail < 0.1:
        return False, f"no fine detail: rendered graphic ({f.fine_detail:.2f})"
    if f.texture < 0.025 and f.mean_chroma > 20.0:
        return False, f"smooth and colourful: graphic or graded ({f.texture:.3f}, C {f.mean_chroma:.1f})"
    if f.mean_chroma > 45.0:
        return False, f"extreme chroma ({f.mean_chroma:.1f})"
    if f.cast > 40.0:
        return False, f"strong cast / grading ({f.cast:.1f})"
    if f.dark_fraction > 0.5:
        return False, f"mostly dark ({f.dark_fraction:.2f})"
    return True, "ok"


#: Candidates that pass the heuristics above but are not wanted, found by
#: looking at all of them: artworks and test patterns (paintings,
#: illustrations, a rendered clock, a map, a noise pattern, abstract renders)
#: and colour-graded shots (sunsets, teal-orange and warm-filtered looks).
NOT_PHOTOS = (
    "Elephants",
    "analogpattern",
    "SafeLanding",
    "starry_night",
    "input",
    "pic2",
    "pic4",
    "pic5",
    "stanford",
    "HappyFish",
    "pca_test1",
    "Autumn",
    "greentock",
    "BytheWater",
    "EveningGlow",
    "FallenLeaf",
    "sunset",
)


# --------------------------------------------------------------------------
# Collecting.


def _package_photos() -> list[tuple[str, Path]]:
    """(name, path) of photos shipped with installed Python packages."""
    out: list[tuple[str, Path]] = []
    try:
        import skimage

        d = Path(skimage.__file__).parent / "data"
        for f in SKIMAGE_PHOTOS:
            if (d / f).is_file():
                out.append((f"skimage_{Path(f).stem}", d / f))
    except ImportError:
        pass
    try:
        import sklearn

        d = Path(sklearn.__file__).parent / "datasets" / "images"
        for f in ("china.jpg", "flower.jpg"):
            if (d / f).is_file():
                out.append((f"sklearn_{Path(f).stem}", d / f))
    except ImportError:
        pass
    try:
        import matplotlib

        f = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if f.is_file():
            out.append(("matplotlib_grace_hopper", f))
    except ImportError:
        pass
    return out


def _run(cmd: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _fetch_debs(packages: tuple[str, ...], workdir: Path, deb_dir: Path | None) -> list[Path]:
    """Download (or reuse from ``deb_dir``) and extract packages; returns roots."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        print("  apt-get/dpkg not found: skipping Debian packages")
        return []
    if _run(["apt-cache", "show", packages[0]]).returncode != 0:
        print("  apt-cache knows nothing: running apt-get update")
        _run(["apt-get", "update"])
    roots = []
    dl = deb_dir or workdir
    dl.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        debs = sorted(dl.glob(f"{pkg}_*.deb"))
        if not debs:
            r = _run(["apt-get", "download", pkg], cwd=str(dl))
            debs = sorted(dl.glob(f"{pkg}_*.deb"))
            if r.returncode != 0 or not debs:
                print(f"  {pkg}: not available ({r.stderr.strip().splitlines()[-1:] or ''})")
                continue
        root = workdir / f"x_{pkg}"
        root.mkdir(exist_ok=True)
        r = _run(["dpkg", "-x", str(debs[-1]), str(root)])
        if r.returncode != 0:
            print(f"  {pkg}: dpkg -x failed: {r.stderr.strip()[:200]}")
            continue
        roots.append(root)
    return roots


def _candidates_in(root: Path) -> list[tuple[str, Path]]:
    """Candidate photo files in an extracted package (largest of each wallpaper)."""
    pkg = root.name[2:]
    files = []
    for p in root.rglob("*"):
        if not p.is_file() or p.suffix.lower() not in PHOTO_EXTS:
            continue
        s = str(p).lower()
        if "/opencv4/html" in s or any(k in s for k in _SKIP_PARTS):
            continue
        if pkg == "opencv-doc" and "/examples/" not in s:
            continue
        files.append(p)
    # Plasma-style packages: one wallpaper = several sizes under contents/images
    groups: dict[str, list[Path]] = {}
    for p in files:
        key = str(p.parent.parent) if p.parent.name == "images" and p.parent.parent.name == "contents" else str(p)
        groups.setdefault(key, []).append(p)
    out, seen = [], set()
    for key, ps in sorted(groups.items()):
        best = max(ps, key=lambda q: q.stat().st_size)
        if best.parent.name == "images":
            name = Path(key).parent.name
        else:
            name = best.stem
        if any(name == k or name.startswith(k + "_") for k in NOT_PHOTOS):
            continue
        if name in seen:  # same file name in two folders
            name = f"{best.parent.name}_{name}"
        seen.add(name)
        out.append((f"{pkg}_{name}", best))
    return out


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep[:80]


def _signature(img: Image.Image) -> np.ndarray:
    g = img.convert("L").resize((16, 16), Image.BILINEAR)
    a = np.asarray(g, dtype=np.float32)
    return (a - a.mean()) / (a.std() + 1e-3)


def prepare(cache: Path, deb_dir: Path | None = None, verbose: bool = True) -> dict:
    """Collect photos into ``cache``; returns a summary dict."""
    cache = Path(cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    existing = {p.stem for p in list_source_photos(cache)}
    sigs: list[np.ndarray] = []
    for p in list_source_photos(cache):
        try:
            with Image.open(p) as im:
                sigs.append(_signature(im))
        except OSError:
            pass
    summary = {"kept": 0, "existing": len(existing), "rejected": 0, "duplicates": 0, "by_source": {}}

    def consider(name: str, path: Path, check: bool) -> None:
        name = _safe_name(name)
        src = name.split("_")[0]
        if name in existing:
            summary["by_source"][src] = summary["by_source"].get(src, 0) + 1
            return
        try:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGB")
        except (OSError, ValueError) as e:
            if verbose:
                print(f"  skip {name}: unreadable ({e})")
            summary["rejected"] += 1
            return
        if min(img.size) < MIN_SIDE:
            if verbose:
                print(f"  skip {name}: too small {img.size}")
            summary["rejected"] += 1
            return
        if check:
            ok, why = is_photo(photo_features(img))
            if not ok:
                if verbose:
                    print(f"  skip {name}: {why}")
                summary["rejected"] += 1
                return
        sig = _signature(img)
        if any(float(np.mean(np.abs(sig - s))) < 0.25 for s in sigs):
            if verbose:
                print(f"  skip {name}: duplicate")
            summary["duplicates"] += 1
            return
        sigs.append(sig)
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        out = cache / f"{name}.jpg"
        tmp = cache / f".{name}.jpg.tmp"
        img.save(tmp, format="JPEG", quality=95, subsampling=0)
        os.replace(tmp, out)
        existing.add(name)
        summary["kept"] += 1
        summary["by_source"][src] = summary["by_source"].get(src, 0) + 1
        if verbose:
            print(f"  kept {name} {img.size}")

    print("Python package photos:")
    for name, path in _package_photos():
        consider(name, path, check=False)  # curated photographs
    print("Debian packages:")
    with tempfile.TemporaryDirectory(prefix="wbvae_debs_") as tmp:
        for root in _fetch_debs(DEBIAN_PACKAGES, Path(tmp), deb_dir):
            for name, path in _candidates_in(root):
                consider(name, path, check=True)
    summary["total"] = len(list_source_photos(cache))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.training.photos", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="collect well-balanced photos into the cache")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument(
        "--deb-dir", type=Path, default=None, help="keep/reuse downloaded .deb files here (default: a temp dir)"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("list", help="list cached photos").add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for f in list_source_photos(a.cache):
            print(f)
        return 0
    s = prepare(a.cache, a.deb_dir, verbose=not a.quiet)
    print(
        f"\n{s['total']} photos in {Path(a.cache).expanduser()} "
        f"(new {s['kept']}, already there {s['existing']}, rejected {s['rejected']}, "
        f"duplicates {s['duplicates']})"
    )
    for k, v in sorted(s["by_source"].items()):
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
