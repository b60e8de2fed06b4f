"""Attack load test: a normal 12 MP correction while the service is under the attacks of issue #13.

    python scripts/attack_load.py [--repeats 5] [--ramp 9] [--flood] [--url http://host:port]

Acceptance (issue #13): "Two scan bombs, two RLE BMPs, 300 idle sockets, 50 slowloris connections and
a 200 MB header sent together leave a normal 12 MP correction within 2x its quiet time, with /readyz
honest throughout."

Without ``--url`` it starts ``python -m app`` itself on a free 127.0.0.1 port (CPU; default settings
unless WBVAE_* variables say otherwise). Then:

1. quiet: one warm-up, then ``--repeats`` timed corrections of a 12 MP JPEG (the first reference photo
   upscaled, ``bench.photos.photo_jpeg``; PNG out, as by default), one after the other;
2. attack: a separate process (so that its work does not delay the measuring client's event loop)
   holds 300 sockets that connect and send nothing and 50 slowloris connections (a partial head, then
   a header line a second), opening again any the server closes. After ``--ramp`` seconds the
   corrections are timed again, each sent together with a wave of the other attacks: 2 scan-bomb
   JPEGs and 2 RLE8-bomb BMPs (``bench/attacks.py``) posted at once, and 1 connection streaming a
   200 MB header. ``--flood``: the bombs (2 + 2 clients) and the header are instead sent back to back,
   each again as soon as answered, for the whole attack (a request flood from the same machine);
3. throughout the attack, GET /readyz every 0.25 s (5 s timeout): statuses and latencies.

``--attacks slow`` runs instead the four attacks of issue #20, one after the other, each for ``--phase`` seconds
with a 12 MP correction every 2 s and /readyz sampled: 1,000 connections sending their body at 1 byte per 10 s
(reconnecting when cut); 100 raw uploads announcing 49 MB that send 45 MB and then trickle; 2 RLE8 BMPs of
1000 x 1000 with 25 M codes that add no pixel (50 MB), resent as answered; 20 clients that send a photo and leave
at once. It reports the answers each attacker got, the server's RSS before, at its peak and after each, and the
ERROR records in the server's log.

Prints a Markdown report: quiet and attacked correction times and their ratio (target <= 2), the
/readyz samples, what each attacker got, the server's peak RSS and open descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.attacks import rle8_bomb_bmp, rle_nop_bomb_bmp, scan_bomb_jpeg  # noqa: E402
from bench.photos import photo_jpeg  # noqa: E402
from bench.server import start_server  # noqa: E402

IDLE_SOCKETS = 300
SLOWLORIS = 50
HUGE_HEADER_BYTES = 200 * 2**20


# -- the attacks (in their own process) -------------------------------------------------------------


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def idle_socket(host: str, port: int, stop: asyncio.Event, stats: Counter) -> None:
    while not stop.is_set():
        try:
            reader, writer = await _open(host, port)
        except OSError:
            stats["idle: connect failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["idle: connections"] += 1
        try:
            done, _ = await asyncio.wait(
                {asyncio.ensure_future(reader.read()), asyncio.ensure_future(stop.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not stop.is_set():
                stats["idle: closed by the server"] += 1
        except OSError:
            stats["idle: closed by the server"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.1)


async def slowloris(host: str, port: int, stop: asyncio.Event, stats: Counter) -> None:
    while not stop.is_set():
        try:
            reader, writer = await _open(host, port)
        except OSError:
            stats["slowloris: connect failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["slowloris: connections"] += 1
        start = time.monotonic()
        try:
            writer.write(b"POST /correct HTTP/1.1\r\nHost: attack\r\nContent-Type: image/jpeg\r\n")
            while not stop.is_set():
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(256), timeout=1.0)
                except asyncio.TimeoutError:
                    writer.write(b"X-Slow: %d\r\n" % int(time.monotonic()))
                    continue
                status = answer[9:12].decode(errors="replace") if answer else "closed"
                stats[f"slowloris: cut ({status}) after {time.monotonic() - start:.0f} s"] += 1
                break
        except OSError:
            stats["slowloris: reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.1)


async def huge_header(
    host: str, port: int, stop: asyncio.Event, stats: Counter, accepted: list[int], repeat: bool
) -> None:
    chunk = b"a" * 65536
    while not stop.is_set():
        try:
            reader, writer = await _open(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        stats["200 MB header: attempts"] += 1
        sent = 0
        status = "closed"
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: attack\r\nX-Huge: ")
            while sent < HUGE_HEADER_BYTES and not stop.is_set():
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            answer = await asyncio.wait_for(reader.read(256), timeout=5)
            status = answer[9:12].decode(errors="replace") if answer else "closed"
        except (OSError, asyncio.TimeoutError):
            status = "reset"
        finally:
            writer.close()
        accepted.append(sent)
        stats[f"200 MB header: cut ({status})"] += 1
        if not repeat:
            return
        await asyncio.sleep(0.05)


async def bomb(
    url: str, name: str, payload: bytes, stop: asyncio.Event, stats: Counter, times: list[float], repeat: bool
) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                r = await client.post(f"{url}/correct", files={"file": (name, payload)})
                stats[f"{name}: {r.status_code}"] += 1
            except httpx.HTTPError as exc:
                stats[f"{name}: {type(exc).__name__}"] += 1
            times.append(time.monotonic() - start)
            if not repeat:
                return


def attack_process(url: str, flood: bool, kinds: str, started: Any, commands: Any, results: Any) -> None:
    """Hold the idle and slowloris sockets; on each "wave" command send the bombs and the huge header
    once (``flood``: send them back to back from the start instead); report on "stop"."""
    host, port = url.removeprefix("http://").split(":")
    scan_bomb, bmp_bomb = scan_bomb_jpeg(), rle8_bomb_bmp()

    async def run() -> None:
        halt = asyncio.Event()
        stats: Counter = Counter()
        accepted: list[int] = []
        bomb_times: dict[str, list[float]] = {"scan-bomb.jpg": [], "rle8-bomb.bmp": []}

        def wave() -> list[asyncio.Task]:
            tasks = []
            if kinds in ("all", "uploads"):
                tasks += [
                    asyncio.create_task(bomb(url, name, payload, halt, stats, bomb_times[name], flood))
                    for name, payload in (("scan-bomb.jpg", scan_bomb), ("rle8-bomb.bmp", bmp_bomb))
                    for _ in range(2)
                ]
            if kinds in ("all", "sockets"):
                tasks.append(asyncio.create_task(huge_header(host, int(port), halt, stats, accepted, flood)))
            return tasks

        tasks = []
        if kinds in ("all", "sockets"):
            tasks += [asyncio.create_task(slowloris(host, int(port), halt, stats)) for _ in range(SLOWLORIS)]
            tasks += [asyncio.create_task(idle_socket(host, int(port), halt, stats)) for _ in range(IDLE_SOCKETS)]
        if flood:
            tasks += wave()
        await asyncio.sleep(0.5)
        started.set()
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, commands.get)) != "stop":
            if command == "wave" and not flood:
                tasks += wave()
        halt.set()
        await asyncio.wait(tasks, timeout=30)
        for t in tasks:
            t.cancel()
        results.put({"stats": dict(stats), "header_accepted": accepted, "bomb_times": bomb_times})

    asyncio.run(run())


# -- issue #20: slow and greedy clients (in a thread of this process) -----------------------------------

SLOW_BODY_HEAD = b"POST /correct HTTP/1.1\r\nHost: attack\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"


async def slow_body(host: str, port: int, stop: threading.Event, stats: Counter) -> None:
    """A body at 1 byte per 10 s; again whenever the server closes the connection."""
    while not stop.is_set():
        try:
            reader, writer = await _open(host, port)
            writer.write(SLOW_BODY_HEAD + b"x")
            while not stop.is_set():
                try:
                    answer = await asyncio.wait_for(reader.read(256), timeout=10)
                    stats[f"slow body: {answer[9:12].decode(errors='replace') if answer else 'closed'}"] += 1
                    break
                except asyncio.TimeoutError:
                    writer.write(b"x")
            writer.close()
        except OSError:
            stats["slow body: reset"] += 1
            await asyncio.sleep(0.1)


async def trickling_upload(host: str, port: int, stop: threading.Event, stats: Counter) -> None:
    """Announce 49 MB, send 45 MB, then a byte a second."""
    try:
        reader, writer = await _open(host, port)
        writer.write(b"POST /correct HTTP/1.1\r\nHost: attack\r\nContent-Type: image/jpeg\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % (49 * 2**20))
        answer = b""
        try:
            answer = await asyncio.wait_for(reader.read(256), timeout=0.5)
        except asyncio.TimeoutError:
            chunk = b"\xff" * 2**20
            for _ in range(45):
                writer.write(chunk)
                await writer.drain()
            while not stop.is_set() and not answer:
                try:
                    answer = await asyncio.wait_for(reader.read(256), timeout=1)
                except asyncio.TimeoutError:
                    writer.write(b"x")
        stats[f"49 MB upload: {answer[9:12].decode(errors='replace') if answer else 'closed'}"] += 1
        writer.close()
    except OSError:
        stats["49 MB upload: reset"] += 1


async def rle_bomb(url: str, payload: bytes, stop: threading.Event, stats: Counter, times: list[float]) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        while not stop.is_set():
            start = time.monotonic()
            r = await client.post(f"{url}/correct", files={"file": ("nop.bmp", payload)})
            stats[f"RLE8 no-op codes: {r.status_code}"] += 1
            times.append(time.monotonic() - start)


async def leaver(host: str, port: int, photo: bytes, stats: Counter) -> None:
    _, writer = await _open(host, port)
    writer.write(b"POST /correct HTTP/1.1\r\nHost: attack\r\nContent-Type: image/jpeg\r\n")
    writer.write(b"Content-Length: %d\r\n\r\n" % len(photo) + photo)
    await writer.drain()
    writer.close()
    stats["left at once"] += 1


def slow_attacks(url: str, proc: Any, server: Any, photo: bytes, phase_s: float) -> None:
    """Issue #20's four attacks, one phase each, with corrections every 2 s; a Markdown report."""
    host, port = url.removeprefix("http://").split(":")
    nop_bomb = rle_nop_bomb_bmp()
    ps = psutil.Process(proc.pid) if proc else None
    print(f"issue #20 attacks, {phase_s:g} s each; a 12 MP correction every 2 s during each\n")
    print("| attack | corrections (s) | statuses | /readyz | RSS MB before / peak / after | attackers got |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("1,000 slow bodies", "100 trickling 49 MB uploads", "2 RLE8 no-op-code BMPs", "20 leave at once"):
        stop, stats, bomb_times = threading.Event(), Counter(), []
        errors_before = server.output().count('"level": "error"') if server else 0

        async def attack(
            name: str = name, stop: threading.Event = stop, stats: Counter = stats, bomb_times: list = bomb_times
        ) -> None:
            tasks: list[asyncio.Task] = []
            if name.startswith("1,000"):
                tasks = [asyncio.create_task(slow_body(host, int(port), stop, stats)) for _ in range(1000)]
            elif name.startswith("100"):
                tasks = [asyncio.create_task(trickling_upload(host, int(port), stop, stats)) for _ in range(100)]
            elif name.startswith("2 RLE8"):
                tasks = [asyncio.create_task(rle_bomb(url, nop_bomb, stop, stats, bomb_times)) for _ in range(2)]
            else:
                await asyncio.gather(*[leaver(host, int(port), photo, stats) for _ in range(20)])
            while not stop.is_set():
                await asyncio.sleep(0.1)
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                task.cancel()

        rss_before = ps.memory_info().rss if ps else 0
        peak = {"rss": rss_before, "fds": 0}
        halt, samples = threading.Event(), []
        samplers = [threading.Thread(target=sample_readyz, args=(url, halt, samples))]
        if ps:
            samplers.append(threading.Thread(target=sample_server, args=(ps.pid, halt, peak)))
        attacker = threading.Thread(target=asyncio.run, args=(attack(),))
        attacker.start()
        for t in samplers:
            t.start()
        time.sleep(2)
        runs, end = [], time.monotonic() + phase_s
        while time.monotonic() < end:
            runs.append(correct_once(url, photo))
            time.sleep(max(0.0, 2 - runs[-1][0]))
        stop.set()
        attacker.join(60)
        time.sleep(3)  # what the attacks held is let go
        halt.set()
        for t in samplers:
            t.join()
        rss_after = ps.memory_info().rss if ps else 0
        ready = Counter(s for _, s, _ in samples)
        lat = max((x for _, _, x in samples), default=0) * 1000
        times = sorted(t for t, _ in runs)
        got = "; ".join(f"{k}: {n}" for k, n in sorted(stats.items()))
        if bomb_times:
            got += f"; answered in median {statistics.median(bomb_times):.2f} s, max {max(bomb_times):.2f} s"
        if server:
            errors = server.output().count('"level": "error"') - errors_before
            got += f"; ERROR records in the log: {errors}"
        print(
            f"| {name} | median {statistics.median(times):.2f}, max {times[-1]:.2f} | "
            f"{dict(Counter(s for _, s in runs))} | {dict(ready)}, max {lat:.0f} ms | "
            f"{rss_before / 2**20:.0f} / {peak['rss'] / 2**20:.0f} / {rss_after / 2**20:.0f} | {got} |"
        )


# -- the measurements -------------------------------------------------------------------------------


def correct_once(url: str, photo: bytes) -> tuple[float, int]:
    start = time.monotonic()
    r = httpx.post(f"{url}/correct", files={"file": ("photo-12mp.jpg", photo)}, timeout=300)
    return time.monotonic() - start, r.status_code


def sample_readyz(url: str, stop: threading.Event, samples: list[tuple[float, str, float]]) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                status = str(client.get(f"{url}/readyz").status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            samples.append((start, status, time.monotonic() - start))
            stop.wait(max(0.0, 0.25 - (time.monotonic() - start)))


def sample_server(pid: int, stop: threading.Event, peak: dict[str, int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            peak["fds"] = max(peak["fds"], proc.num_fds())
        except psutil.Error:
            return
        stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (no RSS/fd figures then)")
    parser.add_argument("--repeats", type=int, default=5, help="timed corrections, quiet and attacked")
    parser.add_argument("--ramp", type=float, default=9.0, help="seconds of attack before the timed corrections")
    parser.add_argument(
        "--flood",
        action="store_true",
        help="send the bombs and the huge header back to back for the whole attack, not once with each correction",
    )
    parser.add_argument(
        "--attacks",
        choices=("all", "sockets", "uploads", "slow"),
        default="all",
        help="sockets: only the idle, slowloris and huge-header connections; uploads: only the bombs; "
        "slow: the four attacks of issue #20 instead",
    )
    parser.add_argument("--phase", type=float, default=20.0, help="--attacks slow: seconds of each attack")
    args = parser.parse_args()

    photo = photo_jpeg(12)
    if args.attacks == "slow":
        with contextlib.ExitStack() as stack:
            server = None if args.url else stack.enter_context(start_server(WBVAE_LOG_LEVEL="info"))
            proc, url = (server.proc, server.url) if server else (None, args.url)
            correct_once(url, photo)  # warm-up
            slow_attacks(url, proc, server, photo, args.phase)
        return
    with contextlib.ExitStack() as stack:
        server = None if args.url else stack.enter_context(start_server(WBVAE_LOG_LEVEL="info", WBVAE_LOG_JSON="false"))
        proc, url = (server.proc, server.url) if server else (None, args.url)
        correct_once(url, photo)  # warm-up
        quiet = [correct_once(url, photo) for _ in range(args.repeats)]

        ctx = mp.get_context("spawn")
        started, commands, results = ctx.Event(), ctx.Queue(), ctx.Queue()
        attacker = ctx.Process(target=attack_process, args=(url, args.flood, args.attacks, started, commands, results))
        halt = threading.Event()
        samples: list[tuple[float, str, float]] = []
        peak = {"rss": 0, "fds": 0}
        samplers = [threading.Thread(target=sample_readyz, args=(url, halt, samples))]
        if proc:
            samplers.append(threading.Thread(target=sample_server, args=(proc.pid, halt, peak)))
        attacker.start()
        if not started.wait(60):
            raise SystemExit("the attacks never started")
        attack_start = time.monotonic()
        cpu = {"attacker": psutil.Process(attacker.pid)}
        if proc:
            cpu["server"] = psutil.Process(proc.pid)
        cpu_before = {k: sum(v.cpu_times()[:2]) for k, v in cpu.items()}
        for t in samplers:
            t.start()
        time.sleep(args.ramp)
        attacked, offsets = [], []
        for _ in range(args.repeats):
            commands.put("wave")  # the bombs and the huge header, sent with the correction
            offsets.append(time.monotonic() - attack_start)
            attacked.append(correct_once(url, photo))
        attack_secs = time.monotonic() - attack_start
        cpu_used = {k: sum(v.cpu_times()[:2]) - cpu_before[k] for k, v in cpu.items()}
        commands.put("stop")
        report = results.get(timeout=60)
        attacker.join(timeout=30)
        halt.set()
        for t in samplers:
            t.join()
        after = time.monotonic()
        after_status = httpx.get(f"{url}/readyz", timeout=5).status_code
        after_latency = time.monotonic() - after
        server_log = server.output() if server else ""

    q = statistics.median(t for t, _ in quiet)
    a = statistics.median(t for t, _ in attacked)
    latencies = sorted(lat for _, _, lat in samples)
    statuses = Counter(s for _, s, _ in samples)
    mode = "flood" if args.flood else "a wave with each correction"
    print(f"attacks: {args.attacks}, bombs and huge header: {mode}; ramp {args.ramp:g} s\n")
    print(f"12 MP correction ({len(photo) / 1e6:.1f} MB JPEG in, PNG out), {args.repeats} each:\n")
    print("| | times s | statuses | median s |")
    print("| --- | --- | --- | --- |")
    print(f"| quiet | {', '.join(f'{t:.2f}' for t, _ in quiet)} | {dict(Counter(s for _, s in quiet))} | {q:.2f} |")
    print(
        f"| under attack | {', '.join(f'{t:.2f}' for t, _ in attacked)} | "
        f"{dict(Counter(s for _, s in attacked))} | {a:.2f} |"
    )
    print(f"(attacked corrections started {', '.join(f'{o:.1f}' for o in offsets)} s into the attack)")
    worst = max(t for t, _ in attacked) / q
    print(
        f"\nratio attacked / quiet, medians: **{a / q:.2f}** (target <= 2: {'met' if a / q <= 2 else 'NOT met'}); "
        f"slowest attacked / quiet median: {worst:.2f}\n"
    )
    print(
        f"/readyz during the attack ({attack_secs:.0f} s, every 0.25 s): {len(samples)} samples, "
        f"statuses {dict(statuses)}, latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"after: {after_status} in {after_latency * 1000:.0f} ms"
    )
    print(
        f"\nCPU used during the attack ({attack_secs:.0f} s, {os.cpu_count()} cores): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in cpu_used.items())
    )
    if proc:
        print(f"\nserver: peak RSS {peak['rss'] / 2**20:.0f} MB, peak open descriptors {peak['fds']}")
    print("\nattackers:\n")
    for key, n in sorted(report["stats"].items()):
        print(f"- {key}: {n}")
    acc = report["header_accepted"]
    if acc:
        print(f"- 200 MB header: bytes the server took before cutting: max {max(acc) / 2**20:.1f} MB")
    for name, times in report["bomb_times"].items():
        if times:
            print(f"- {name}: answered in median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    if server_log:
        print("\nserver's defence log lines:\n")
        for line in server_log.splitlines():
            if "wbvae.server" in line:
                print(f"    {line}")


if __name__ == "__main__":
    main()
