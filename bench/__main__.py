"""``python -m bench``: the public correction pipeline's speed on real photos.

In-process, per size and output format (PNG, JPEG, WebP): ``app.pipeline.correct_upload`` as the
service calls it (``bench/stages.py``), median and p95 wall time and the medians of the stage times
the pipeline itself reports (decode / model / mapping / encode, as the service's metrics), beside the
codec floor measured in the same loop: decode + Pillow's PNG encode (``floor``, the issue-6 floor),
decode + the service's own encoder (``own floor``) of the corrected pixels and, for PNG, decode + ONE
thread of ISA-L level-1 deflate of the decoded photo's filtered rows (``isal floor``, the issue-14
floor), with the ratios to them and the output size. On CUDA a second corrector keeps the model on
the GPU and maps on the CPU inside the encoder (``map on`` cpu against cuda). For PNG, the writer's
steps on one thread (map, filter, deflate; ``Bench.png_stages``) beside the floor's deflate. Peak RSS of a fresh
process serving one PNG request per size (``bench/rss.py``). Over HTTP (a real ``python -m app``):
median and p95 end-to-end latency per size and format with the ratios to the same floors (issue 14's
target: 12 MP PNG within 1.2 x the isal floor), then throughput at concurrency 1, 2, 4 with the
model's batch sizes.

    python -m bench [--quick] [--sizes 1 12 24] [--formats png jpeg webp] [--reps 5] [--device cpu|cuda]
                    [--no-cpumap] [--no-rss] [--no-http] [--concurrency 1 2 4] [--out docs/benchmark-run.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from app.memory import retain_freed_memory
from app.settings import Settings
from bench.photos import REPO, photo_jpeg, source_photo
from bench.server import start_server
from bench.stages import STAGES, Bench


def pct(values, q):
    return float(np.percentile(values, q))


def in_process(sizes, fmts, reps, device, cpumap) -> tuple[list[str], dict]:
    """Rows of the in-process table, and each size's and format's floors
    {(mp, fmt): {"pillow": s, "own": s[, "isal": s for PNG]}}."""
    benches = [Bench(device)]
    if cpumap and benches[0].label != "cpu":  # the model on the GPU, the mapping on the CPU inside the encoder
        benches.append(Bench(device, map_on_device=False))
    rows = [
        "| MP | out | map on | median s | p95 s | " + " | ".join(STAGES) + " | floor s | ratio | own floor s | "
        "own ratio | isal floor s | isal ratio | model+mapping s | out MB |",
        "|" + " --- |" * (13 + len(STAGES)),
    ]
    floors = {}
    for mp in sizes:
        data = photo_jpeg(mp)
        for fmt in fmts:
            walls = {b.label: [] for b in benches}
            stages = {b.label: [] for b in benches}
            size, codec = {}, []
            for _ in range(reps):  # interleaved, so load on the machine hits all alike
                for b in benches:
                    wall, t, out = b.run(data, fmt)
                    walls[b.label].append(wall)
                    stages[b.label].append(t)
                    size[b.label] = len(out)
                codec.append(benches[0].floor(data, fmt))
            dec = float(np.median([c["decode"] for c in codec]))
            floor = {k: dec + float(np.median([c[k] for c in codec])) for k in FLOORS if k in codec[0]}
            floor["decode"] = dec
            floors[(mp, fmt)] = floor
            for b in benches:
                total = float(np.median(walls[b.label]))
                m = {s: float(np.median([t[s] for t in stages[b.label]])) for s in STAGES}
                rows.append(
                    f"| {mp:g} | {fmt} | {b.label} | {total:.3f} | {pct(walls[b.label], 95):.3f} | "
                    + " | ".join(f"{m[s]:.3f}" for s in STAGES)
                    + f" | {floor['pillow']:.3f} | {total / floor['pillow']:.2f} | {floor['own']:.3f} | "
                    f"{total / floor['own']:.2f} | {isal_cells(total, floor)} | {m['model'] + m['mapping']:.3f} | "
                    f"{size[b.label] / 2**20:.1f} |"
                )
            print("\n".join(rows[-len(benches) :]), flush=True)
    return rows, floors


FLOORS = ("pillow", "own", "isal")


def isal_cells(total: float, floor: dict) -> str:
    """The isal floor and the ratio to it, or dashes where there is none (JPEG, WebP)."""
    return f"{floor['isal']:.3f} | {total / floor['isal']:.2f}" if "isal" in floor else "- | -"


def png_stages(sizes, reps, device, floors) -> list[str]:
    """The PNG writer's steps on one thread, medians over ``reps``, beside the isal floor's deflate."""
    bench = Bench(device)
    rows = [
        "| MP | map s | filter s | deflate s | sum s | floor deflate s | deflated MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mp in sizes:
        data = photo_jpeg(mp)
        runs = [bench.png_stages(data) for _ in range(reps)]
        m = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        floor = floors.get((mp, "png"), {})
        deflate = f"{floor['isal'] - floor['decode']:.3f}" if "isal" in floor else "-"
        rows.append(
            f"| {mp:g} | {m['map']:.3f} | {m['filter']:.3f} | {m['deflate']:.3f} | "
            f"{m['map'] + m['filter'] + m['deflate']:.3f} | {deflate} | {m['mb']:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def peak_rss(sizes, device) -> list[str]:
    rows = ["| MP | peak RSS MB (one PNG request) | idle MB |", "| --- | --- | --- |"]
    import tempfile

    for mp in sizes:
        photo = Path(tempfile.mkdtemp()) / f"{mp:g}mp.jpg"
        photo.write_bytes(photo_jpeg(mp))
        cmd = [sys.executable, "-m", "bench.rss", str(photo), "png", "--device", device]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        if done.returncode:
            rows.append(f"| {mp:g} | failed: {done.stderr.strip().splitlines()[-1:]} | - |")
        else:
            peak, idle = done.stdout.split()
            rows.append(f"| {mp:g} | {peak} | {idle} |")
        print(rows[-1], flush=True)
        photo.unlink()
    return rows


class ServerPeak:
    """Peak RSS of the server process over a stretch: the kernel's high-water mark, reset through
    /proc/PID/clear_refs (Linux), else RSS sampled every 20 ms."""

    def __init__(self, pid: int):
        import psutil

        self.pid, self.proc, self.sampled = pid, psutil.Process(pid), 0

    def reset(self) -> None:
        self.sampled = 0
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm = True
        except OSError:
            self.hwm = False

    def sample(self) -> None:
        self.sampled = max(self.sampled, self.proc.memory_info().rss)

    def mb(self) -> float:
        if self.hwm:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return self.sampled / 2**20


def batch_counts(text: str) -> tuple[float, float]:
    """(forwards, photos) so far from the server's wbvae_model_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name == "wbvae_model_batch_size":
            values = {s.name: s.value for s in family.samples}
            return values.get("wbvae_model_batch_size_count", 0.0), values.get("wbvae_model_batch_size_sum", 0.0)
    return 0.0, 0.0


async def http_runs(url, pid, sizes, fmts, reps, tput_mp, tput_requests, concurrency, floors) -> list[str]:
    import httpx

    peak = ServerPeak(pid)

    async def sample(stop):
        while not stop.is_set():
            peak.sample()
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=600) as client:

        async def post(data, fmt):
            start = time.perf_counter()
            r = await client.post(f"{url}/correct?format={fmt}", files={"file": ("p.jpg", data)})
            r.raise_for_status()
            return time.perf_counter() - start

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        rows = [
            "| MP | out | requests | median s | p95 s | ratio to floor | ratio to own floor | ratio to isal floor | "
            "server peak RSS MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mp in sizes:
            for fmt in fmts:
                await post(photo_jpeg(mp), fmt)  # first request of a size: allocations, caches
                peak.reset()
                lat = [await post(photo_jpeg(mp), fmt) for _ in range(reps)]
                med = float(np.median(lat))
                ratios = [f"{med / f:.2f}" if (f := floors.get((mp, fmt), {}).get(k)) else "-" for k in FLOORS]
                rows.append(
                    f"| {mp:g} | {fmt} | {reps} | {med:.3f} | {pct(lat, 95):.3f} | {ratios[0]} | "
                    f"{ratios[1]} | {ratios[2]} | {peak.mb():.0f} |"
                )
                print(rows[-1], flush=True)
        rows += [
            "",
            f"Throughput, {tput_mp:g} MP JPEG in, PNG out, {tput_requests} requests per level "
            "(forwards and mean batch: the model's, from the server's batch-size histogram):",
            "",
            "| concurrency | corrections/s | median s | p95 s | server peak RSS MB | forwards | mean batch |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        data = photo_jpeg(tput_mp)
        for conc in concurrency:
            peak.reset()
            forwards0, photos0 = batch_counts((await client.get(f"{url}/metrics")).text)
            queue = list(range(tput_requests))
            lat: list[float] = []

            async def worker(queue: list[int] = queue, lat: list[float] = lat) -> None:
                while queue:
                    queue.pop()
                    lat.append(await post(data, "png"))

            start = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(conc)])
            wall = time.perf_counter() - start
            forwards, photos = batch_counts((await client.get(f"{url}/metrics")).text)
            forwards, photos = forwards - forwards0, photos - photos0
            batch = f"{forwards:.0f} | {photos / forwards:.2f}" if forwards else "- (batching off) | -"
            rows.append(
                f"| {conc} | {len(lat) / wall:.2f} | {np.median(lat):.3f} | {pct(lat, 95):.3f} | "
                f"{peak.mb():.0f} | {batch} |"
            )
            print(rows[-1], flush=True)
        stop.set()
        await sampler
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 MP, 2 repetitions: a smoke run (< 60 s)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 12, 24], help="megapixels")
    ap.add_argument(
        "--formats", nargs="+", default=["png", "jpeg", "webp"], choices=["png", "jpeg", "webp"], help="output formats"
    )
    ap.add_argument("--reps", type=int, default=5, help="in-process repetitions per size and format")
    ap.add_argument("--http-reps", type=int, default=3, help="HTTP requests per size and format")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (model and mapping)")
    ap.add_argument("--no-cpumap", action="store_true", help="on CUDA, skip the corrector that maps on the CPU")
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS")
    ap.add_argument("--note", default="", help="a line added under the header (e.g. the settings of a GPU run)")
    ap.add_argument("--no-http", action="store_true", help="in-process only")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="throughput levels")
    ap.add_argument("--tput-mp", type=float, default=12.0, help="photo size of the throughput runs")
    ap.add_argument("--tput-requests", type=int, default=8, help="requests per throughput level")
    ap.add_argument("--server-log", type=Path, help="the HTTP server's output goes here (default: discarded)")
    ap.add_argument("--out", type=Path, help="also write the tables to this Markdown file (after each section)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.http_reps, args.tput_mp, args.tput_requests = [1.0], 2, 1, 1.0, 4
    retain = Settings().retain_freed_memory and retain_freed_memory()  # as the service does at start-up
    import torch

    header = [
        f"# wbvae benchmark ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads at start, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
        + f"; photo {source_photo().name} resampled to {', '.join(f'{s:g}' for s in args.sizes)} MP, "
        f"JPEG q92 in; allocator keeps freed memory: {'yes' if retain else 'no'}.",
        "",
    ]
    if args.note:
        header += [args.note, ""]
    out = list(header)

    def emit(lines: list[str]) -> None:
        out.extend(lines)
        print("\n".join(lines), flush=True)
        if args.out:
            args.out.write_text("\n".join(out) + "\n")

    emit(
        [
            (
                "## In-process: app.pipeline.correct_upload (seconds; median and p95 of its wall time, medians of "
                "the stages it reports; floor = decode + Pillow's PNG encode (level 1, Z_RLE, one thread), own floor "
                "= decode + the service's encoder, both of the corrected pixels; isal floor (PNG) = decode + ONE "
                "thread of ISA-L level-1 deflate of the decoded photo's Paeth-filtered rows, issue 14's floor; "
                "ratio = median / floor)"
            ),
            "",
        ]
    )
    rows, floors = in_process(args.sizes, args.formats, args.reps, args.device, not args.no_cpumap)
    emit(rows)
    if "png" in args.formats:
        emit(
            [
                "",
                "## PNG writer steps (app/codec/png.py on one thread, the service's level; medians, seconds per photo; "
                "floor deflate = the isal floor's ISA-L level-1 deflate of the decoded photo's rows)",
                "",
            ]
        )
        emit(png_stages(args.sizes, args.reps, args.device, floors))
    if not args.no_rss:
        emit(["", "## Peak RSS (fresh process, one PNG request through correct_upload; VmHWM)", ""])
        emit(peak_rss(args.sizes, args.device))
    if not args.no_http:
        emit(
            [
                "",
                (
                    "## End to end over HTTP (python -m app, default settings but 16 queue places; "
                    "WBVAE_* from the environment)"
                ),
                "",
            ]
        )
        with start_server(
            log=args.server_log, ready_timeout=180, WBVAE_DEVICE=args.device, WBVAE_MAX_QUEUED_CORRECTIONS="16"
        ) as server:
            emit(
                asyncio.run(
                    http_runs(
                        server.url,
                        server.proc.pid,
                        args.sizes,
                        args.formats,
                        args.http_reps,
                        args.tput_mp,
                        args.tput_requests,
                        args.concurrency,
                        floors,
                    )
                )
            )
    if not args.out:
        print("\n" + "\n".join(out))


if __name__ == "__main__":
    main()
