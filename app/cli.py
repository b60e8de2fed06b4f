"""``wbvae``: the command line. ``wbvae correct`` runs folders of photos through the service's own pipeline.

``correct`` reads each file and hands its bytes to ``app.pipeline.correct_upload``, the function
behind ``POST /correct``: same decoding (EXIF orientation, colour profile to sRGB, HEIC, grayscale,
alpha), same Corrector, same encoding (EXIF kept, sRGB-tagged). ``serve`` runs the service
(``python -m app``). Training, evaluation and export have their own modules
(``python -m model.training.train``, ``python -m model.training.evaluate``, ``python -m model.export``).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from app.codec import FORMATS, OutputFormat, format_for_suffix, output_format

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


@dataclass
class Job:
    source: Path
    target: Path


@dataclass
class Outcome:
    job: Job
    status: str  # "done", "skipped" or "failed"
    reason: str = ""


def collect(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(photo, its path relative to the output folder): files as named, folders searched recursively."""
    found = []
    for p in paths:
        if p.is_dir():
            found += [
                (f, f.relative_to(p))
                for f in sorted(p.rglob("*"))
                if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES
            ]
        else:  # named files are always tried, so a missing or odd one is reported, not silently dropped
            found.append((p, Path(p.name)))
    return found


def output_path(outdir: Path, rel: Path, fmt: OutputFormat) -> Path:
    """``outdir/rel``, with the suffix changed only when the format changed."""
    suffix = rel.suffix if rel.suffix.lower() in fmt.suffixes else fmt.suffixes[0]
    return outdir / rel.with_suffix(suffix)


def run_correct(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from app.pipeline import Limits, Options, correct_upload
    from app.settings import Settings
    from model.corrector import Corrector

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        return usage_error("no such file or folder: " + ", ".join(missing))
    photos = collect(args.paths)
    if not photos:
        return usage_error("no photos found in " + ", ".join(map(str, args.paths)))
    jobs = max(1, args.jobs)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))  # jobs x threads = cores (model, encoder)
    limits = Limits(
        max_pixels=args.max_pixels,
        strip_gps=not args.keep_gps,
        png_compress_level=args.png_compress_level,
        encode_threads=max(1, (os.cpu_count() or 1) // jobs),
    )
    if Settings().retain_freed_memory:
        from app.memory import retain_freed_memory

        retain_freed_memory()  # before the worker threads start
    try:
        corrector = Corrector.from_checkpoint(args.checkpoint, args.device)
    except (ValueError, OSError, RuntimeError) as exc:  # no such checkpoint, not a checkpoint, no such device
        return usage_error(f"cannot load the model from {args.checkpoint}: {exc}")

    claimed: dict[Path, Path] = {}

    def one(source: Path, rel: Path) -> Outcome:
        fmt = output_format(args.format) if args.format != "keep" else format_for_suffix(rel.suffix)
        job = Job(source, output_path(args.outdir, rel, fmt))
        if claimed.setdefault(job.target, source) != source:
            return Outcome(job, "failed", f"same output {job.target} as {claimed[job.target]}")
        if job.target.exists() and not args.overwrite:
            return Outcome(job, "skipped", "output exists")
        try:
            data = source.read_bytes()
            if not data:
                return Outcome(job, "failed", "empty file")
            body = correct_upload(
                corrector,
                data,
                Options(fmt, args.quality, args.strength, args.temperature, adaptation=args.adaptation),
                limits,
            ).body
            job.target.parent.mkdir(parents=True, exist_ok=True)
            partial = job.target.with_name(job.target.name + ".partial")
            partial.write_bytes(body)
            partial.replace(job.target)  # atomic: an interrupted run never leaves a half file that would be skipped
            return Outcome(job, "done")
        except (ValueError, OSError) as exc:  # the pipeline's plain errors (bad image), unreadable file, full disk
            return Outcome(job, "failed", str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else (e.g. out of memory) costs this photo, not the whole batch
            return Outcome(job, "failed", f"{type(exc).__name__}: {exc}")

    outcomes: list[Outcome] = []
    with (
        ThreadPoolExecutor(max_workers=jobs) as pool,
        tqdm(total=len(photos), unit="photo", disable=args.quiet or None, file=sys.stderr) as bar,
    ):
        for future in as_completed([pool.submit(one, s, r) for s, r in photos]):
            outcome = future.result()
            outcomes.append(outcome)
            bar.update()
            if outcome.status == "failed":  # each failure printed once, as it happens
                bar.write(f"FAILED {outcome.job.source}: {outcome.reason}", file=sys.stderr)

    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    print(f"{done} corrected, {skipped} skipped (output exists; --overwrite to redo), {failed} failed -> {args.outdir}")
    return 1 if failed else 0


def usage_error(message: str) -> int:
    """One line on stderr, exit status 2 (as argparse does for bad flags)."""
    print(f"wbvae: error: {message}", file=sys.stderr)
    return 2


def run_serve(args: argparse.Namespace) -> int:
    """``python -m app`` with the given flags overriding its WBVAE_* settings."""
    from app.__main__ import serve
    from app.settings import Settings

    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "checkpoint", "device", "log_level")
        if getattr(args, name) is not None
    }
    serve(Settings(**overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model.corrector import DEFAULT_CHECKPOINT

    parser = argparse.ArgumentParser(prog="wbvae", description="White-balance correction: photos, service, model.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "correct",
        help="correct photos and folders of photos into an output folder",
        description="Correct photos (files, or folders searched recursively) into OUTDIR, keeping "
        "the folder structure, the format (JPEG, PNG, WebP; others become PNG) and the "
        "EXIF. Outputs that exist are skipped unless --overwrite. Exit status 0 when every "
        "photo was corrected or skipped, 1 if any failed (each printed once, with its reason), "
        "2 on usage errors (bad flags, a path that does not exist, no photos, a checkpoint "
        "that cannot be loaded).",
    )
    c.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos or folders of photos")
    c.add_argument("-o", "--outdir", type=Path, required=True, help="output folder (created if needed)")
    c.add_argument("--overwrite", action="store_true", help="redo photos whose output exists")
    c.add_argument("--strength", type=_unit_float, default=1.0, help="0: unchanged … 1: full correction (default 1)")
    c.add_argument(
        "--temperature",
        type=_kelvin,
        default=None,
        help="render as a camera set to this white balance: 2000-12000 K or a preset "
        "(tungsten, fluorescent, daylight, cloudy, shade); lower is bluer (default: neutral)",
    )
    c.add_argument(
        "--adaptation",
        type=str.lower,
        choices=("full", "natural"),
        default="full",
        help="full: the light's white to neutral (default); natural: keep a warm light's mood, adapting as the eye "
        "does (docs/api.md)",
    )
    c.add_argument(
        "--format",
        type=str.lower,
        choices=("keep", *FORMATS, *(a for f in FORMATS.values() for a in f.aliases)),
        default="keep",
        help="output format (default: keep the input's; TIFF, BMP, HEIC become PNG)",
    )
    c.add_argument(
        "--quality", type=int, choices=range(1, 101), metavar="1-100", default=95, help="JPEG/WebP quality (default 95)"
    )
    c.add_argument(
        "--png-compress-level",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=6,
        help="PNG deflate level on zlib's 0-9 scale, mapped onto ISA-L's as WBVAE_PNG_COMPRESS_LEVEL "
        "(default 6; 1 is faster and about 2 %% larger)",
    )
    c.add_argument("--keep-gps", action="store_true", help="keep GPS tags in the EXIF (the service removes them)")
    c.add_argument("--max-pixels", type=int, default=200_000_000, help="largest width x height (default 200 MP)")
    c.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="photos at once (default: cores)")
    c.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model (default: %(default)s)")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=run_correct)

    s = sub.add_parser(
        "serve",
        help="run the HTTP service and web page (python -m app)",
        description="Run the HTTP service (API + web page at /). Flags override the WBVAE_* "
        "environment variables; see the README's Configuration table for the rest.",
    )
    s.add_argument("--host", help="interface (default 0.0.0.0)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--checkpoint", type=Path, help="checkpoint to serve")
    s.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--log-level", help="debug, info, warning, error")
    s.set_defaults(run=run_serve)

    return parser


def _kelvin(text: str) -> float:
    """``--temperature``: kelvin in range, or a preset's name."""
    from model.corrector import KELVIN_RANGE, PRESETS

    if text.strip().lower() in PRESETS:
        return PRESETS[text.strip().lower()]
    try:
        kelvin = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected kelvin or one of {', '.join(PRESETS)}, got {text!r}") from None
    if not KELVIN_RANGE[0] <= kelvin <= KELVIN_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must lie in {KELVIN_RANGE[0]:g}-{KELVIN_RANGE[1]:g} K, got {text}")
    return kelvin


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
