"""Where a correction's error comes from: its white point, its family, or neither.

For each pair (input, ground truth) this scores, at full resolution:

- ``none``: the input as it is;
- ``own_diagonal``: the model's own white point (the input colour its matrix maps to neutral) applied
  as a per-channel gain in linear sRGB, with the model's exposure; against ``floor_diagonal`` it
  measures the **estimate**;
- ``own``: the model's whole mapping, as the service applies it; against ``own_diagonal`` and the
  floors it measures the **family**;
- ``floor_diagonal``, ``floor_3x3``, ``floor_polynomial``: the best mapping of each family fitted to
  the ground truth (cheating on purpose: the family's floor): a gain per channel and a full 3x3 in
  linear sRGB, and the 11-term polynomial on sRGB values (R G B RG RB GB R² G² B² RGB 1);
- ``reach`` (not a dE2000): how much of the cast the model's white point covers, along the cast: the
  projection of its log-chroma (log R/G, log B/G) on the fitted diagonal's, over the latter's squared
  length (1: the whole cast, 0.5: half of it, above 1: too far); NaN where the cast is under
  ``MIN_REACH_CAST``, too small for a ratio;
- ``colour`` / ``colour_own_diagonal`` / ``singular_ratio`` (not dE2000): the own mapping's output
  colourfulness (``model.training.metrics.colourfulness``) over the truth's and over the own white
  point's diagonal output's, and its matrix's smallest singular value over its largest (near 0: near
  rank one, every pixel drained toward one hue).

Fits use the pixels unclipped in both images (every channel < 250) and valid under the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from model.colour import LUMA_709, srgb_to_linear
from model.mapping import apply_matrix
from model.training.metrics import colour_ratio, delta_e2000

COLUMNS = ("none", "own_diagonal", "own", "floor_diagonal", "floor_3x3", "floor_polynomial")
TITLES = {
    "none": "no correction",
    "own_diagonal": "own white point as a diagonal",
    "own": "own mapping",
    "floor_diagonal": "best diagonal (fitted)",
    "floor_3x3": "best 3x3 (fitted)",
    "floor_polynomial": "best 11-term polynomial (fitted)",
}
COLOUR_TITLES = {
    "colour, own / truth": "colour",
    "colour, own / own diagonal": "colour_own_diagonal",
    "singular values, least / largest": "singular_ratio",
}
_FIT_LEVEL = 250
MIN_REACH_CAST = 0.05  # log-chroma length of the fitted cast under which ``reach`` is NaN


def _fit_pixels(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) uint8 input and truth pixels usable for fitting (unclipped in both, valid)."""
    a, b = inp.reshape(-1, 3), gt.reshape(-1, 3)
    keep = (a.max(1) < _FIT_LEVEL) & (b.max(1) < _FIT_LEVEL) & valid.reshape(-1)
    if keep.sum() < 16:
        raise ValueError(f"only {int(keep.sum())} unclipped valid pixels: too few to fit a mapping")
    return a[keep], b[keep]


def fitted_diagonal(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least-squares per-channel gains in linear sRGB, as a (3, 3) diagonal matrix."""
    a, b = (srgb_to_linear(x / 255.0) for x in _fit_pixels(inp, gt, valid))
    return np.diag((a * b).sum(0) / np.maximum((a * a).sum(0), 1e-12)).astype(np.float32)


def fitted_matrix(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least-squares full 3x3 in linear sRGB (``truth ~ M @ input``)."""
    a, b = (srgb_to_linear(x / 255.0) for x in _fit_pixels(inp, gt, valid))
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol.T.astype(np.float32)


def _poly_terms(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return np.stack([r, g, b, r * g, r * b, g * b, r * r, g * g, b * b, r * g * b, np.ones_like(r)], axis=1)


def fitted_polynomial(inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least-squares 11-term polynomial on sRGB values in [0, 1]: (11, 3) coefficients."""
    a, b = (x.astype(np.float64) / 255.0 for x in _fit_pixels(inp, gt, valid))
    coef, *_ = np.linalg.lstsq(_poly_terms(a), b, rcond=None)
    return coef


def apply_polynomial(img: np.ndarray, coef: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """``fitted_polynomial``'s mapping on a uint8 (H, W, 3) image (chunked: bounded memory)."""
    flat = img.reshape(-1, 3)
    out = np.empty_like(flat)
    for start in range(0, len(flat), chunk):
        x = flat[start : start + chunk].astype(np.float64) / 255.0
        out[start : start + chunk] = np.clip(np.rint(_poly_terms(x) @ coef * 255.0), 0, 255).astype(np.uint8)
    return out.reshape(img.shape)


def white_point_diagonal(matrix: np.ndarray) -> np.ndarray:
    """The diagonal that neutralises ``matrix``'s white point (``M^-1 1``) with ``matrix``'s gain on neutrals."""
    m = np.asarray(matrix, dtype=np.float64)
    white = np.linalg.solve(m, np.ones(3))
    gains = 1.0 / np.maximum(white, 1e-6)
    luma = np.asarray(LUMA_709, dtype=np.float64)
    gains *= float(luma @ m @ np.ones(3)) / float(luma @ gains)
    return np.diag(gains).astype(np.float32)


def decompose_pair(corrector, inp: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Mean dE2000 of each column of ``COLUMNS`` on one pair (``corrector``: a ``model.corrector.Corrector``)."""
    correction = corrector.estimate(inp)
    own_diagonal, own = apply_matrix(inp, white_point_diagonal(correction.matrix)), correction.map_rows(inp)
    row = {
        "none": delta_e2000(inp, gt, valid),
        "own_diagonal": delta_e2000(own_diagonal, gt, valid),
        "own": delta_e2000(own, gt, valid),
    }
    row["colour"] = colour_ratio(own, gt, valid)
    row["colour_own_diagonal"] = colour_ratio(own, own_diagonal, valid)
    sv = np.linalg.svd(np.asarray(correction.applied_matrix, np.float64), compute_uv=False)
    row["singular_ratio"] = float(sv[-1] / sv[0])
    floor_diagonal = fitted_diagonal(inp, gt, valid)
    row["floor_diagonal"] = delta_e2000(apply_matrix(inp, floor_diagonal, protect_highlights=False), gt, valid)
    row["floor_3x3"] = delta_e2000(
        apply_matrix(inp, fitted_matrix(inp, gt, valid), protect_highlights=False), gt, valid
    )
    row["floor_polynomial"] = delta_e2000(apply_polynomial(inp, fitted_polynomial(inp, gt, valid)), gt, valid)
    row["white_own"], row["white_true"] = white_log_chroma(correction.matrix), white_log_chroma(floor_diagonal)
    row["reach"] = cast_reach(row["white_own"], row["white_true"])
    return row


def white_log_chroma(matrix: np.ndarray) -> np.ndarray:
    """log(R/G), log(B/G) of the colour ``matrix`` maps to neutral."""
    white = np.linalg.solve(np.asarray(matrix, dtype=np.float64), np.ones(3))
    white = np.maximum(white, 1e-9)
    return np.log([white[0] / white[1], white[2] / white[1]])


def cast_reach(own: np.ndarray, true: np.ndarray) -> float:
    """The share of the true cast that the model's covers, both as white points' log-chroma (``white_log_chroma``)."""
    length2 = float(true @ true)
    return float(own @ true / length2) if length2 >= MIN_REACH_CAST**2 else float("nan")


def decompose(corrector, frames: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> list[dict]:
    """``decompose_pair`` of every ``(name, input, truth, mask)`` frame, with its name."""
    return [{"name": name, **decompose_pair(corrector, inp, gt, valid)} for name, inp, gt, valid in frames]


def _percent(share: float) -> str:
    return f"{100 * share:.0f} %" if np.isfinite(share) else "–"


def decomposition_table(rows: Sequence[dict], title: str = "") -> str:
    """Markdown: one row per pair, then the mean, and the two gaps (estimate, family) in words."""
    head = (
        "| pair | " + " | ".join(TITLES[c] for c in COLUMNS) + " | cast reached | " + " | ".join(COLOUR_TITLES) + " |"
    )
    lines = [f"### {title}", ""] if title else []
    lines += [head, "| --- |" + " ---: |" * (len(COLUMNS) + 1 + len(COLOUR_TITLES))]
    for r in rows:
        colour = " | ".join(f"{r[c]:.2f}" for c in COLOUR_TITLES.values())
        lines.append(
            f"| {r['name']} | " + " | ".join(f"{r[c]:.2f}" for c in COLUMNS) + f" | {_percent(r['reach'])} | {colour} |"
        )
    means = {c: float(np.mean([r[c] for r in rows])) for c in COLUMNS}
    reaches = [r["reach"] for r in rows if np.isfinite(r["reach"])]
    median_reach = _percent(float(np.median(reaches)) if reaches else float("nan"))
    colour_means = " | ".join(f"**{np.mean([r[c] for r in rows]):.2f}**" for c in COLOUR_TITLES.values())
    lines.append(
        "| **mean** | "
        + " | ".join(f"**{means[c]:.2f}**" for c in COLUMNS)
        + f" | **{median_reach}** (median) | {colour_means} |"
    )
    own = np.array([r["white_own"] for r in rows])
    true = np.array([r["white_true"] for r in rows])
    scale = float((own * true).sum() / max(float((own * own).sum()), 1e-12))
    lines += [
        "",
        f"Least-squares scale from the model's white points to the fitted ones (log-chroma): {scale:.2f} "
        "(1: no single gain on the estimate helps).",
        "",
        f"Estimate gap (own white point as a diagonal - best diagonal): "
        f"{means['own_diagonal'] - means['floor_diagonal']:+.2f}; family gain (own white point as a diagonal "
        f"- own mapping): {means['own_diagonal'] - means['own']:+.2f}; own mapping - best 3x3: "
        f"{means['own'] - means['floor_3x3']:+.2f}.",
        "",
    ]
    return "\n".join(lines)
