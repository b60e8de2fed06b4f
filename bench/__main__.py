"""``python -m bench``: the correction pipeline's speed on real photos, before and after issue 6.

In-process, per size and output format: median and p95 latency, the split into decode / fit
(downsample + statistics) / vae (model forward) / apply (full-resolution mapping) / encode, the
floor (decode + encode) and the ratio to it, output size; "before" runs the pre-issue-6 code
(``bench/baseline.py``) in the same process, so the two compare on the same noisy machine.
Peak RSS of a fresh process serving one request of each size. Over HTTP (a real ``python -m
app``): median and p95 end-to-end latency per size, then throughput at concurrency 1, 2, 4.

    python -m bench [--quick] [--sizes 1 12 24] [--reps 5] [--device cpu|cuda] [--no-before]
                    [--no-http] [--out docs/benchmark-run.md]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.photos import REPO, photo_jpeg, source_photo
from bench.stages import STAGES, Pipeline


def pct(values, q):
    return float(np.percentile(values, q))


def in_process(sizes, fmts, reps, device, before) -> list[str]:
    variants = [("before", True), ("after", False)] if before else [("after", False)]
    pipes = {name: Pipeline(before=flag, device=device) for name, flag in variants}
    rows = ["| MP | out | code | median s | p95 s | " + " | ".join(STAGES) + " | floor s | ratio | "
            "fit+vae+apply s | out MB |", "|" + " --- |" * (9 + len(STAGES))]
    for mp in sizes:
        data = photo_jpeg(mp)
        for fmt in fmts:
            times = {name: [] for name in pipes}
            size = {}
            for _ in range(reps):  # interleaved, so load on the machine hits both alike
                for name, pipe in pipes.items():
                    t, out = pipe.run(data, fmt)
                    times[name].append(t)
                    size[name] = len(out)
            for name in pipes:
                med = {s: float(np.median([t[s] for t in times[name]])) for s in STAGES}
                totals = [sum(t.values()) for t in times[name]]
                floor = med["decode"] + med["encode"]
                work = med["fit"] + med["vae"] + med["apply"]
                rows.append(f"| {mp:g} | {fmt} | {name} | {np.median(totals):.3f} | {pct(totals, 95):.3f} | "
                            + " | ".join(f"{med[s]:.3f}" for s in STAGES)
                            + f" | {floor:.3f} | {np.median(totals) / floor:.2f} | {work:.3f} | "
                              f"{size[name] / 2**20:.1f} |")
            print(rows[-1] if len(pipes) == 1 else "\n".join(rows[-2:]), flush=True)
    return rows


def peak_rss(sizes, device, before) -> list[str]:
    rows = ["| MP | code | peak RSS MB (one PNG request) | idle MB |", "| --- | --- | --- | --- |"]
    import tempfile
    for mp in sizes:
        photo = Path(tempfile.mkdtemp()) / f"{mp:g}mp.jpg"
        photo.write_bytes(photo_jpeg(mp))
        for name in (["before", "after"] if before else ["after"]):
            cmd = [sys.executable, "-m", "bench.rss", str(photo), "png", "--device", device]
            if name == "before":
                cmd.append("--before")
            peak, idle = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True,
                                        text=True).stdout.split()
            rows.append(f"| {mp:g} | {name} | {peak} | {idle} |")
            print(rows[-1], flush=True)
        photo.unlink()
    return rows


def start_server(device: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WBVAE_HOST": "127.0.0.1", "WBVAE_PORT": str(port), "WBVAE_DEVICE": device,
           "WBVAE_LOG_LEVEL": "warning", "WBVAE_MAX_QUEUED_CORRECTIONS": "16"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


async def http_runs(url, pid, sizes, reps, tput_mp, tput_requests) -> list[str]:
    import httpx
    import psutil

    proc = psutil.Process(pid)
    peak = [0]

    async def sample(stop):
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=600) as client:
        deadline = time.monotonic() + 180
        while True:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server never became ready")
            await asyncio.sleep(0.2)

        async def post(data, fmt):
            start = time.perf_counter()
            r = await client.post(f"{url}/correct?format={fmt}", files={"file": ("p.jpg", data)})
            r.raise_for_status()
            return time.perf_counter() - start

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        rows = ["| MP | out | requests | median s | p95 s | server peak RSS MB |", "| --- | --- | --- | --- | --- | --- |"]
        for mp in sizes:
            for fmt in ("png", "jpeg"):
                peak[0] = 0
                lat = [await post(photo_jpeg(mp), fmt) for _ in range(reps)]
                rows.append(f"| {mp:g} | {fmt} | {reps} | {np.median(lat):.3f} | {pct(lat, 95):.3f} | "
                            f"{peak[0] / 2**20:.0f} |")
                print(rows[-1], flush=True)
        rows += ["", f"Throughput, {tput_mp:g} MP JPEG in, PNG out, {tput_requests} requests per level:", "",
                 "| concurrency | corrections/s | median s | p95 s | server peak RSS MB |",
                 "| --- | --- | --- | --- | --- |"]
        data = photo_jpeg(tput_mp)
        for conc in (1, 2, 4):
            peak[0] = 0
            queue = list(range(tput_requests))
            lat: list[float] = []

            async def worker():
                while queue:
                    queue.pop()
                    lat.append(await post(data, "png"))

            start = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(conc)])
            wall = time.perf_counter() - start
            rows.append(f"| {conc} | {len(lat) / wall:.2f} | {np.median(lat):.3f} | {pct(lat, 95):.3f} | "
                        f"{peak[0] / 2**20:.0f} |")
            print(rows[-1], flush=True)
        stop.set()
        await sampler
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 MP, 2 repetitions: a smoke run (< 30 s)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 12, 24], help="megapixels")
    ap.add_argument("--reps", type=int, default=5, help="in-process repetitions per size and format")
    ap.add_argument("--http-reps", type=int, default=3, help="HTTP requests per size and format")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (model and mapping)")
    ap.add_argument("--no-before", action="store_true", help="skip the pre-issue-6 baseline")
    ap.add_argument("--no-http", action="store_true", help="in-process only")
    ap.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.http_reps = [1.0], 2, 1
    before = not args.no_before
    fmts = ("png", "jpeg")
    import torch
    header = [f"# wbvae benchmark ({time.strftime('%Y-%m-%d %H:%M')})", "",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} intra-op threads, device {args.device}"
              + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
              + f"; photo {source_photo().name} resampled to {', '.join(f'{s:g}' for s in args.sizes)} MP, "
                "JPEG q92 in.", ""]
    print("\n".join(header), flush=True)
    out = header + ["## In-process (seconds; medians of stages; floor = decode + encode; "
                    "ratio = median total / floor)", ""]
    print(out[-2] + "\n", flush=True)
    out += in_process(args.sizes, fmts, args.reps, args.device, before)
    out += ["", "## Peak RSS (fresh process, one PNG request)", ""]
    print("\n".join(out[-3:]), flush=True)
    out += peak_rss(args.sizes, args.device, before)
    if not args.no_http:
        out += ["", "## End to end over HTTP (after; python -m app, default settings)", ""]
        print("\n".join(out[-3:]), flush=True)
        proc, url = start_server(args.device)
        try:
            tput_mp = 1.0 if args.quick else 12.0
            out += asyncio.run(http_runs(url, proc.pid, args.sizes, args.http_reps, tput_mp,
                                         4 if args.quick else 8))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    text = "\n".join(out) + "\n"
    if args.out:
        args.out.write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
