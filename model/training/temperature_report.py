"""Which chromatic adaptation renders a white-balance setting the way cameras do: ``python -m
model.training.temperature_report``.

``POST /correct?temperature=K`` renders the neutral output as a camera set to K would
(``model.whitebalance``). A camera does that with gains on its own raw channels: relative to the
neutral render it applies ``ccm · diag(white_ref / white_K) · ccm⁻¹`` in linear sRGB, with its colour
matrix ``ccm`` and the raw whites of the reference light and of K on its illuminant locus. Each
chromatic adaptation transform of ``colour-science`` stands in for that with its own cone space.
This report renders 500 random colours through each camera's matrix and each transform, both
keeping the luminance of white, and prints the mean CIEDE2000 between them per temperature, over the
cameras of ``../shared/data/raw-thumbs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from model.colour import LUMA_709, linear_to_srgb
from model.training.raw_renderer import DEFAULT_RAW_DIR, RawCamera, load_raw_cameras
from model.whitebalance import CAT_TRANSFORM, REFERENCE_KELVIN, adaptation_matrix

KELVINS = (2850, 3800, 5500, 7500, 10000)
TRANSFORMS = ("Von Kries", "CAT16", "CMCCAT2000", "Bradford", "CAT02", "Fairchild", "Sharp", "XYZ Scaling")
_LUMA = np.asarray(LUMA_709, np.float64)


def _white_luminance_kept(m: np.ndarray) -> np.ndarray:
    return m / float(_LUMA @ m @ np.ones(3))


def camera_render(camera: RawCamera, kelvin: float) -> np.ndarray:
    """(3, 3) linear sRGB: the camera's neutral render -> its render with white balance set to ``kelvin``."""
    ref, at_k = camera.locus.light(1e6 / REFERENCE_KELVIN), camera.locus.light(1e6 / kelvin)
    return _white_luminance_kept(camera.ccm @ np.diag(ref / at_k) @ np.linalg.inv(camera.ccm))


def transform_render(transform: str, kelvin: float) -> np.ndarray:
    """(3, 3) linear sRGB: the same by ``colour``'s von Kries-type ``transform`` (what the service would serve)."""
    return _white_luminance_kept(adaptation_matrix(kelvin, 0.0, transform))


def distances(cameras: Sequence[RawCamera], colours: int = 500, seed: int = 0) -> dict[str, dict[int, float]]:
    """Mean CIEDE2000 between camera and transform renders of random colours: ``{transform: {kelvin: dE}}``."""
    patches = np.random.default_rng(seed).uniform(0.02, 0.6, (colours, 3))

    def lab(m: np.ndarray) -> np.ndarray:
        return rgb2lab(linear_to_srgb(np.clip(patches @ m.T, 0, 1))[None])[0]

    out: dict[str, dict[int, float]] = {t: {} for t in TRANSFORMS}
    for kelvin in KELVINS:
        wanted = [lab(camera_render(c, kelvin)) for c in cameras]
        for t in TRANSFORMS:
            got = lab(transform_render(t, kelvin))
            out[t][kelvin] = float(np.mean([deltaE_ciede2000(w, got).mean() for w in wanted]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.temperature_report", description=__doc__)
    parser.add_argument("--raw", default=str(DEFAULT_RAW_DIR), help="raw-thumbs folder (camera matrices, captures)")
    args = parser.parse_args(argv)
    cameras = load_raw_cameras(args.raw)
    table = distances(cameras)
    print(f"Mean CIEDE2000 to {len(cameras)} cameras' own renders at K (serving: {CAT_TRANSFORM})\n")
    print("| transform | " + " | ".join(f"{k} K" for k in KELVINS) + " | mean |")
    print("| --- |" + " ---: |" * (len(KELVINS) + 1))
    for t, row in sorted(table.items(), key=lambda item: np.mean(list(item[1].values()))):
        cells = " | ".join(f"{row[k]:.2f}" for k in KELVINS)
        print(f"| {t} | {cells} | {np.mean(list(row.values())):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
