"""Load test: drive a real ``python -m app`` with real photos at several concurrencies.

    python scripts/loadtest.py [--requests 24] [--concurrency 1 4 16] [--url http://host:port]

Without ``--url`` it starts the server itself on a free 127.0.0.1 port (CPU, default
settings unless WBVAE_* variables say otherwise) and samples its peak RSS. Prints a
Markdown table: latency p50/p95/p99 of all answers, throughput of successful
corrections, counts by status, peak server RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.server import start_server  # noqa: E402

PHOTOS = sorted((REPO.parent / "shared" / "data" / "wild").glob("*.jpg"))


async def sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        await asyncio.sleep(0.05)


async def run_level(url: str, photos: list[bytes], concurrency: int, requests: int, pid: int | None) -> dict:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    latencies, statuses = [], Counter()
    peak, stop = [0], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, peak, stop)) if pid else None

    async def worker(client: httpx.AsyncClient):
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/correct", files={"file": ("p.jpg", photos[i % len(photos)])})
                statuses[r.status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
    wall = time.perf_counter() - start
    stop.set()
    if sampler:
        await sampler
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "concurrency": concurrency,
        "requests": requests,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "throughput": statuses[200] / wall,
        "statuses": dict(statuses),
        "peak_rss_mb": peak[0] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    photos = [p.read_bytes() for p in PHOTOS]
    with contextlib.ExitStack() as stack:
        server = (
            None
            if args.url
            else stack.enter_context(
                start_server(ready_timeout=120, WBVAE_DEVICE=os.environ.get("WBVAE_DEVICE", "cpu"))
            )
        )
        url, pid = (server.url, server.proc.pid) if server else (args.url, None)
        rows = [asyncio.run(run_level(url, photos, c, args.requests, pid)) for c in args.concurrency]
    print(f"photos: {len(photos)} real JPEGs, 0.5-2.8 MP, cycled; answers: PNG\n")
    print("| concurrency | requests | p50 s | p95 s | p99 s | corrections/s | statuses | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items(), key=str))
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} "
            f"| {r['throughput']:.2f} | {statuses} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
