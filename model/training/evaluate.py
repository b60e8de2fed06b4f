"""Evaluate the model and the statistical baselines with the published protocol.

Usage::

    python -m model.training.evaluate SOURCE [SOURCE ...] [--checkpoint PATH] [--device cpu|cuda]
        [--out DIR] [--limit N] [--no-baselines | --baselines NAMES] [--no-model]
        [--identity] [--deepwb JSON] [--decompose] [--quiet]

``SOURCE`` is ``set1=DIR``, ``set2=DIR``, ``cube=DIR`` or ``pairs=FILE.tsv``
(see :mod:`model.training.eval_sets`), or ``heldout[=N]``: N (default 96) emulated
full-frame pairs (long side 512 px) of the source photos that training holds
out (same split, same emulator; needs ``python -m model.training.photos prepare``), e.g.
``python -m model.training.evaluate pairs=../shared/data/real-pairs/pairs.tsv``.

Every method runs at full resolution on the same pairs in one run (docs/accuracy.md, "Protocol"):
the model through :class:`model.corrector.Corrector` (method ``wbvae``) and the
baselines of :mod:`model.training.baselines`. Written to ``--out`` (default
``runs/eval-<timestamp>``):

- ``per_image.csv``: ``method, name, mse, mae, de2000, de76, source, seconds``;
- ``summary.md``: mean / Q1 / median / Q3 of each metric per method (also
  printed);
- ``deepwb_side_by_side.csv`` when image names match the published Deep WB
  per-image results (``--deepwb``, default
  ``../shared/data/deepwb_set2_per_image.json``, skipped silently if absent):
  one row per matched image, every method's metrics beside Deep WB's; the
  summary then gets a "Deep WB (published)" row over those same images.

``--decompose`` prints, per pair and as means, where the model's error comes from
(:mod:`model.training.decomposition`): no correction, its own white point as a diagonal, its own
mapping, and the fitted floors of the diagonal, 3x3 and polynomial families; written to
``decomposition.md``. E.g. ``python -m model.training.evaluate --decompose
pairs=../shared/data/real-pairs/pairs.tsv pairs=../shared/data/real-pairs-set2/pairs.tsv``.

``--identity`` is the do-no-harm check: each distinct ground truth is fed as
the input and scored against itself (0 is perfect).

:func:`evaluate` / :func:`evaluate_frames` are the reusable core (training
uses them to choose checkpoints; tests call them directly).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from model.training.baselines import BASELINES
from model.training.config import TrainConfig
from model.training.decomposition import decompose, decomposition_table
from model.training.emulator import _saturation_matrix
from model.training.eval_sets import PairSpec, load_pair
from model.training.metrics import METRICS, all_metrics, colour_ratio, hue_error, summarise
from model.training.raw_renderer import HELD_OUT_RENDERS, RawRenderConfig, RawRenderer, angular_error
from model.training.raw_report import raw_baseline_estimates
from model.training.source_registry import source as data_source

__all__ = [
    "DEEPWB_METHOD",
    "MODEL_METHOD",
    "evaluate",
    "evaluate_frames",
    "summarise_records",
    "markdown_summary",
    "load_deepwb",
    "deepwb_records",
    "write_per_image_csv",
    "write_side_by_side_csv",
    "main",
]

Corrector = Callable[[np.ndarray], np.ndarray]
Frame = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (name, input, truth, mask)

MODEL_METHOD = "wbvae"
DEEPWB_METHOD = "Deep WB (published)"
METRIC_NAMES = tuple(METRICS)  # ("mse", "mae", "de2000", "de76")
#: What a mean error does not see: output / truth colourfulness (Hasler & Suesstrunk 2003; 1 keeps the
#: truth's colour, 0 is gray) and the hue error (degrees) of the pixels whose truth is chromatic.
COLOUR_NAMES = ("colour", "hue")
METRIC_TITLES = {"mse": "MSE", "mae": "MAE (degrees)", "de2000": "Delta E 2000", "de76": "Delta E 76"}
DEEPWB_KEYS = {"mse": "MSE", "mae": "MAE", "de2000": "DeltaE2000", "de76": "DeltaE76"}
CSV_FIELDS = ["method", "name", *METRIC_NAMES, *COLOUR_NAMES, "source", "seconds"]


def _progress(items: Iterable, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional (the ``train`` extra); run silently without it
        return items
    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


def evaluate_frames(frames: Iterable[Frame], correctors: Mapping[str, Corrector], *, source: str = "") -> list[dict]:
    """Score every corrector on already-loaded frames ``(name, input, truth, mask)``.

    Returns one record per (frame, method): ``method, name, mse, mae, de2000,
    de76, colour, hue, source, seconds`` (``seconds``: the corrector's wall time; ``COLOUR_NAMES``).
    """
    records = []
    for name, inp, truth, mask in frames:
        for method, correct in correctors.items():
            t0 = time.perf_counter()
            out = correct(inp)
            seconds = time.perf_counter() - t0
            if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != inp.shape:
                got = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
                raise ValueError(f"corrector {method!r} on {name}: expected uint8 {inp.shape}, got {got}")
            records.append(
                {
                    "method": method,
                    "name": name,
                    **all_metrics(out, truth, mask),
                    "colour": colour_ratio(out, truth, mask),
                    "hue": hue_error(out, truth, mask),
                    "source": source,
                    "seconds": seconds,
                }
            )
    return records


def _frames(pairs: Sequence[PairSpec], identity: bool, progress: bool, desc: str) -> Iterator[Frame]:
    if identity:  # each distinct ground truth once, fed as the input
        seen: dict[Path, PairSpec] = {}
        for p in pairs:
            seen.setdefault(p.groundtruth_path.resolve(), p)
        pairs = list(seen.values())
    for p in _progress(list(pairs), desc, progress):
        inp, gt, mask = load_pair(p)
        if identity:
            yield p.groundtruth_path.name, gt, gt.copy(), mask
        else:
            yield p.name, inp, gt, mask


def illuminant_errors(
    held: list,
    estimate_matrix: Callable[[np.ndarray], np.ndarray] | None,
    count: int = 600,
    seed: int = 1,
) -> dict[str, np.ndarray]:
    """Angular error (degrees) of the illuminant on the raw captures of the ``held`` cameras, per method.

    The baselines estimate it on the linear raw capture itself; the model sees the capture rendered
    with a wrong preset (as a camera would have saved it) and its correction ``M`` implies the
    input's white ``M^-1 @ 1``, taken back to camera RGB through the render's own style, colour
    matrix and preset gains. The tone curve maps neutral to neutral, so it drops out.
    """
    renderer = RawRenderer(held, RawRenderConfig(**HELD_OUT_RENDERS, relight_rate=0.0, neutral_rate=0.0))
    errors: dict[str, list[float]] = {}
    for index in np.linspace(0, len(renderer) - 1, count).astype(int):
        cam_no, cap_no = renderer.locate(int(index))
        camera = renderer.cameras[cam_no]
        label = camera.labels[cap_no].astype(np.float64)
        for name, e in raw_baseline_estimates(camera.images[cap_no].astype(np.float32)).items():
            errors.setdefault(name, []).append(float(angular_error(e, label)))
        if estimate_matrix is None:
            continue
        inp, _, info = renderer.render(int(index), np.random.default_rng([seed, int(index)]))
        white_in = np.linalg.solve(np.asarray(estimate_matrix(inp), np.float64), np.ones(3))
        g_true = 1.0 / label
        g_in = info["gains"] * g_true / g_true.min()
        to_srgb = _saturation_matrix(info["style_params"][0]) @ camera.ccm
        e_cam = np.linalg.solve(to_srgb, white_in) / g_in
        errors.setdefault(MODEL_METHOD, []).append(float(angular_error(e_cam, label)))
    return {k: np.asarray(v) for k, v in errors.items()}


def angular_table(errors: Mapping[str, np.ndarray]) -> str:
    """Markdown: mean, median and worst-25 % mean of each method's angular errors, best mean first."""
    rows = ["| method | mean | median | worst 25 % |", "| --- | ---: | ---: | ---: |"]
    for name, e in sorted(errors.items(), key=lambda kv: float(kv[1].mean())):
        worst = np.sort(e)[-max(1, len(e) // 4) :]
        rows.append(f"| {name} | {e.mean():.2f} | {np.median(e):.2f} | {worst.mean():.2f} |")
    return "\n".join(rows)


def _identity(frames: Iterable[Frame]) -> Iterator[Frame]:
    """Do no harm: each distinct ground truth once, fed as the input."""
    seen: set[bytes] = set()
    for name, _, truth, mask in frames:
        key = truth.tobytes()[:4096] + bytes(str(truth.shape), "ascii")
        if key not in seen:
            seen.add(key)
            yield name, truth, truth.copy(), mask


def evaluate(
    pairs: Sequence[PairSpec],
    correctors: Mapping[str, Corrector],
    *,
    identity: bool = False,
    progress: bool = False,
    source: str = "",
) -> list[dict]:
    """Load each pair once (full resolution) and score every corrector on it.

    ``identity=True`` feeds each distinct ground truth as the input (do no
    harm). Returns the per-image records of :func:`evaluate_frames`.
    """
    desc = f"evaluate {source}".strip()
    return evaluate_frames(_frames(pairs, identity, progress, desc), correctors, source=source)


def summarise_records(records: Iterable[dict]) -> dict[str, dict]:
    """``{method: {"n": images, metric: {mean, q1, median, q3}}}`` in first-seen method order."""
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    return {m: {"n": len(rs), **{k: summarise(r[k] for r in rs) for k in METRIC_NAMES}} for m, rs in by_method.items()}


def markdown_summary(records: Sequence[dict], title: str = "") -> str:
    """One markdown table per metric: a row per method with n, mean, Q1, median, Q3."""
    summary = summarise_records(records)
    lines = [f"## {title}", ""] if title else []
    for k in METRIC_NAMES:
        lines += [
            f"### {METRIC_TITLES[k]}",
            "",
            "| method | n | mean | Q1 | median | Q3 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, s in summary.items():
            v = s[k]
            lines.append(
                f"| {method} | {s['n']} | {v['mean']:.2f} | {v['q1']:.2f} | {v['median']:.2f} | {v['q3']:.2f} |"
            )
        lines.append("")
    lines += [
        "### Colour",
        "",
        "| method | n | output / truth colourfulness, mean | least | hue error of chromatic pixels (degrees) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    by_method: dict[str, list[dict]] = {}
    for r in records:
        if "colour" in r:
            by_method.setdefault(r["method"], []).append(r)
    for method, rs in by_method.items():
        colour = [r["colour"] for r in rs]
        hue = [r["hue"] for r in rs if np.isfinite(r["hue"])]
        hue_text = f"{np.mean(hue):.1f}" if hue else "–"
        lines.append(f"| {method} | {len(rs)} | {np.mean(colour):.2f} | {np.min(colour):.2f} | {hue_text} |")
    lines.append("")
    return "\n".join(lines)


def load_deepwb(path: Path | str) -> dict[str, dict[str, float]]:
    """Published Deep WB per-image errors: ``{image name: {mse, mae, de2000, de76}}``; {} if absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    names = data["names"]
    return {n: {k: float(data[src][i]) for k, src in DEEPWB_KEYS.items()} for i, n in enumerate(names)}


def _deepwb_key(name: str, published: Mapping[str, dict]) -> str | None:
    for cand in (name, Path(name).name, Path(name).stem + ".png"):
        if cand in published:
            return cand
    return None


def deepwb_records(records: Sequence[dict], published: Mapping[str, dict]) -> list[dict]:
    """Records restricted to images with published Deep WB results, plus Deep WB's own rows."""
    matched = [r for r in records if _deepwb_key(r["name"], published)]
    names: dict[str, str] = {}
    for r in matched:
        names.setdefault(r["name"], r.get("source", ""))
    extra = [
        {"method": DEEPWB_METHOD, "name": n, **published[_deepwb_key(n, published)], "source": s, "seconds": ""}
        for n, s in names.items()
    ]
    return matched + extra


def write_per_image_csv(records: Sequence[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in CSV_FIELDS})


def write_side_by_side_csv(records: Sequence[dict], path: Path) -> None:
    """One row per image: ``name`` then ``<method>:<metric>`` for every method, Deep WB included."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows: dict[str, dict] = {}
    for r in records:
        row = rows.setdefault(r["name"], {"name": r["name"]})
        for k in METRIC_NAMES:
            row[f"{r['method']}:{k}"] = f"{r[k]:.6g}"
    fields = ["name"] + [f"{m}:{k}" for k in METRIC_NAMES for m in methods]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows.values())


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="set1=DIR, set2=DIR, cube=DIR, pairs=FILE.tsv or heldout[=N]"
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="model checkpoint (default: model.corrector.DEFAULT_CHECKPOINT)"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/eval-<timestamp>)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N pairs of each source")
    p.add_argument("--no-baselines", action="store_true", help="skip the statistical baselines")
    p.add_argument(
        "--baselines",
        default=None,
        metavar="NAMES",
        help=f"comma-separated subset of the baselines (default all: {', '.join(BASELINES)})",
    )
    p.add_argument("--no-model", action="store_true", help="skip the model (baselines only; no checkpoint needed)")
    p.add_argument(
        "--identity",
        action="store_true",
        help="do-no-harm check: feed each ground truth as the input and score it against itself",
    )
    p.add_argument(
        "--heldout-gt-style",
        default="same",
        choices=["same", "AS"],
        help="heldout ground truths in the input's picture style (same) or all in Adobe Standard "
        "(AS, the Rendered WB protocol)",
    )
    p.add_argument(
        "--deepwb",
        type=Path,
        default=Path("../shared/data/deepwb_set2_per_image.json"),
        help="published Deep WB per-image results (skipped if absent)",
    )
    p.add_argument(
        "--decompose",
        action="store_true",
        help="per pair: no correction, own white point as a diagonal, own mapping, and the fitted floors",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _load_model(args, parser) -> Corrector:
    try:
        from model.corrector import DEFAULT_CHECKPOINT, Corrector as ModelCorrector
    except ImportError as exc:
        parser.error(f"cannot import model.corrector ({exc}); run with --no-model for baselines only")
    path = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        corrector = ModelCorrector.from_checkpoint(path, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(f"cannot load checkpoint {path}: {exc}; run with --no-model for baselines only")
    return corrector.correct


def _sources(args, parser) -> list[tuple[str, object, int | None]]:
    """(spec, registry source, frame limit) per SOURCE argument."""
    sources = []
    try:
        for spec in args.sources:
            kind, _, arg = spec.partition("=")
            limit = int(arg) if kind == "heldout" and arg else args.limit
            sources.append((spec, data_source(spec), limit))
    except ValueError as exc:
        parser.error(str(exc))
    return sources


def _correctors(args, parser) -> dict[str, Corrector]:
    """The model (unless --no-model) and the chosen baselines, by method name."""
    correctors: dict[str, Corrector] = {}
    if not args.no_model:
        correctors[MODEL_METHOD] = _load_model(args, parser)
    if not args.no_baselines:
        names = (
            list(BASELINES) if args.baselines is None else [n.strip() for n in args.baselines.split(",") if n.strip()]
        )
        unknown = [n for n in names if n not in BASELINES]
        if unknown:
            parser.error(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
        correctors.update({n: BASELINES[n] for n in names})
    if not correctors:
        parser.error("nothing to evaluate: --no-model and --no-baselines together")
    return correctors


def _report(records: list[dict], names: list[str], args, out: Path) -> list[str]:
    """The summary's Markdown: per source, all together, and beside Deep WB's published results."""
    mode = " (do no harm: ground truth in, 0 is perfect)" if args.identity else ""
    parts = [
        f"# Evaluation{mode}",
        "",
        f"Sources: {', '.join(names)}. Full resolution; chart / calibration object "
        "and pixels all-zero in both images excluded.",
        "",
    ]
    if len(names) > 1:
        for name in names:
            parts.append(markdown_summary([r for r in records if r["source"] == name], name))
    parts.append(markdown_summary(records, "All images" if len(names) > 1 else ""))
    published = {} if args.identity else load_deepwb(args.deepwb)
    both = deepwb_records(records, published) if published else []
    if both:
        write_side_by_side_csv(both, out / "deepwb_side_by_side.csv")
        n = sum(r["method"] == DEEPWB_METHOD for r in both)
        parts.append(markdown_summary(both, f"Beside Deep WB (published), over the same {n} images"))
    return parts


def _illuminant_report(raw_source, correctors: dict[str, Corrector], limit: int | None) -> list[str]:
    """The angular-error table of the held-out cameras' raw captures (model and raw baselines)."""
    model = getattr(correctors.get(MODEL_METHOD), "__self__", None)
    errors = illuminant_errors(
        raw_source.held_cameras(), model and (lambda img: model.estimate(img).matrix), limit or 600
    )
    n = len(next(iter(errors.values())))
    return [
        "",
        f"## Illuminant angular error (degrees), held-out cameras' raw captures (n = {n})",
        "",
        angular_table(errors),
        "",
    ]


def _decompose(args, parser, sources, out: Path) -> int:
    """``--decompose``: the decomposition table of each source (model.training.decomposition)."""
    if args.no_model:
        parser.error("--decompose needs the model")
    corrector = _load_model(args, parser).__self__
    parts = ["# Decomposition (mean dE2000, full resolution)", ""]
    try:
        for name, src, limit in sources:
            frames = _progress(src.evaluation(TrainConfig(), limit, args.heldout_gt_style), name, not args.quiet)
            parts.append(decomposition_table(decompose(corrector, frames), name))
    except ValueError as exc:
        parser.error(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(parts)
    (out / "decomposition.md").write_text(text)
    print(text)
    print(f"wrote {out}/decomposition.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    sources = _sources(args, parser)
    out = args.out or Path("runs") / f"eval-{datetime.now():%Y%m%d-%H%M%S}"
    if args.decompose:
        return _decompose(args, parser, sources, out)
    correctors = _correctors(args, parser)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    try:
        for name, src, limit in sources:
            frames = src.evaluation(TrainConfig(), limit, args.heldout_gt_style)
            if args.identity:
                frames = _identity(frames)
            records += evaluate_frames(_progress(frames, f"evaluate {name}", not args.quiet), correctors, source=name)
    except ValueError as exc:
        parser.error(str(exc))
    write_per_image_csv(records, out / "per_image.csv")
    parts = _report(records, [name for name, _, _ in sources], args, out)
    raw = [src for name, src, _ in sources if name.split("=")[0] == "raw"]
    if raw and not args.identity:
        parts += _illuminant_report(raw[0], correctors, args.limit)
    text = "\n".join(parts)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"wrote {out}/per_image.csv and {out}/summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
