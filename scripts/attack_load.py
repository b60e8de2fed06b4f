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

``--attacks door`` runs the attacks of issue #28 instead, each against its own server with default settings
(unless said): 11 uploads declaring 512 MiB less 100,000 bytes between them that send nothing, then the same
sending 20 KiB/s, each for ``--phase`` seconds with a 270 KB upload every 2 s; /analyze without a key (keys set);
``--unread`` clients uploading a 12 MP JPEG and never reading the answer; a multipart upload with TMPDIR on a
full tmpfs (``unshare -rm``); six bad checkpoints; HEAD on the health routes; 20,000 connections sending a whole
GET /livez against a cap of 50; a repeated query parameter; a multipart body without its closing boundary.

Prints a Markdown report: quiet and attacked correction times and their ratio (target <= 2), the
/readyz samples, what each attacker got, the server's peak RSS and open descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import os
import socket
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
from bench.server import free_port, start_server  # noqa: E402

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


# -- issue #28: hold the door ------------------------------------------------------------------------------------

DOOR_DECLARED = [52428800] * 10 + [12482912]
READY_S = 600  # a loaded machine may take minutes to start a server


async def declaring_upload(host: str, port: int, declared: int, rate: float, stop: asyncio.Event, stats: Counter):
    """Declare ``declared`` bytes, send ``rate`` bytes a second (0: none); reconnect when cut, or after 9 s."""
    while not stop.is_set():
        try:
            reader, writer = await _open(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.write(b"POST /correct HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % declared)
        end, answer = time.monotonic() + 9, b""
        with contextlib.suppress(OSError):
            while time.monotonic() < end and not stop.is_set() and not answer:
                if rate:
                    writer.write(b"\xff" * int(rate / 10))
                with contextlib.suppress(asyncio.TimeoutError):
                    answer = await asyncio.wait_for(reader.read(256), timeout=0.1)
        stats[f"declaring: {answer[9:12].decode(errors='replace') if answer else 'reconnected'}"] += 1
        writer.close()
        await asyncio.sleep(0.05)


def lock_out(rate: float, phase_s: float) -> str:
    """The issue's lock-out: the share of 270 KB probe uploads (one every 2 s) answered 200."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(300)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(buf, "PNG")
    probe = buf.getvalue()
    with start_server(ready_timeout=READY_S) as server:
        host, port = server.url.removeprefix("http://").split(":")
        stop, stats = threading.Event(), Counter()

        async def attack() -> None:
            halt = asyncio.Event()
            tasks = [
                asyncio.create_task(declaring_upload(host, int(port), n, rate, halt, stats)) for n in DOOR_DECLARED
            ]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            halt.set()
            await asyncio.wait(tasks, timeout=15)

        attacker = threading.Thread(target=asyncio.run, args=(attack(),))
        attacker.start()
        time.sleep(1)
        statuses: Counter = Counter()
        end = time.monotonic() + phase_s
        while time.monotonic() < end:
            start = time.monotonic()
            r = httpx.post(f"{server.url}/correct", content=probe, headers={"Content-Type": "image/png"}, timeout=60)
            statuses[r.status_code] += 1
            time.sleep(max(0.0, 2 - (time.monotonic() - start)))
        stop.set()
        attacker.join(30)
    ok = statuses[200] / max(1, sum(statuses.values()))
    return f"probes {dict(statuses)}: **{ok:.0%} answered 200**; attackers: {dict(stats)}"


def unread_answers(clients: int, photo: bytes) -> str:
    """``clients`` upload ``photo`` one after the other (each when the gate has room) and never read the answer."""
    with start_server(WBVAE_LOG_LEVEL="info", ready_timeout=READY_S) as server:
        host, port = server.url.removeprefix("http://").split(":")
        proc = psutil.Process(server.proc.pid)
        correct_once(server.url, photo)
        rss_before, peak, halt = proc.memory_info().rss, {"rss": 0, "fds": 0}, threading.Event()
        sampler = threading.Thread(target=sample_server, args=(proc.pid, halt, peak))
        sampler.start()
        socks = []
        head = b"POST /correct HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
        for _ in range(clients):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            with contextlib.suppress(OSError):
                sock.sendall(head % len(photo) + photo)
            socks.append(sock)
            time.sleep(0.1)
            while (
                _metric(server.url, "wbvae_corrections_in_flight") + _metric(server.url, "wbvae_corrections_queued")
                >= 2
            ):
                time.sleep(0.05)
        while _metric(server.url, "wbvae_corrections_in_flight") + _metric(server.url, "wbvae_corrections_queued"):
            time.sleep(0.2)
        time.sleep(2)
        held = sum(1 for c in proc.net_connections() if c.status == "ESTABLISHED" and c.laddr.port == int(port))
        time.sleep(35)  # past the default 30 s send timeout
        after = sum(1 for c in proc.net_connections() if c.status == "ESTABLISHED" and c.laddr.port == int(port))
        halt.set()
        sampler.join()
        codes = Counter(_answer_status(s) for s in socks)
        for s in socks:
            s.close()
    return (
        f"RSS {rss_before / 2**20:.0f} MB -> peak {peak['rss'] / 2**20:.0f} MB "
        f"(**+{(peak['rss'] - rss_before) / 2**20:.0f} MB**); connections open 2 s after the last answer: {held}, "
        f"37 s after: **{after}**; what the clients then found in their sockets: {dict(codes)}"
    )


def _answer_status(sock: socket.socket) -> str:
    sock.settimeout(0.5)
    try:
        answer = sock.recv(64)
    except TimeoutError:
        return "nothing (still open)"
    except OSError:
        return "reset"
    return answer[9:12].decode(errors="replace") if answer else "closed"


def _metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.split(" ")[1]) for line in lines if line.split(" ")[0] == name)


def full_tmpdir() -> str:
    """A 1.5 MB multipart upload with TMPDIR on a 2 MiB tmpfs holding 1.3 MB; then a raw body; /readyz."""
    import shutil
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode:
        return "skipped: no unprivileged mount namespaces (unshare -rm)"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(700).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(buf, "PNG")
    big = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmpdir:
        mount = 'mount -t tmpfs -o size=2m tmpfs "$TMPDIR" && exec "$@"'
        env = {"TMPDIR": tmpdir, "WBVAE_MAX_UPLOAD_BYTES": "1800000", "WBVAE_LOG_LEVEL": "info"}
        with start_server(ready_timeout=READY_S, wrap=("unshare", "-rm", "sh", "-c", mount, "sh"), **env) as server:
            Path(f"/proc/{server.proc.pid}/root{tmpdir}/fill").write_bytes(b"\0" * 1_300_000)
            multipart = httpx.post(f"{server.url}/correct", files={"file": ("big.png", big)}, timeout=60)
            ready = httpx.get(f"{server.url}/readyz")
            raw = httpx.post(f"{server.url}/correct", content=big, headers={"Content-Type": "image/png"}, timeout=60)
            above_info = [line for line in server.output().splitlines() if '"level": "error"' in line]
    return (
        f"multipart {multipart.status_code} {multipart.json()['detail']!r}; /readyz {ready.status_code}; "
        f"raw body {raw.status_code}; ERROR lines: {len(above_info)}"
        + (f" ({json.loads(above_info[0])['msg'][:90]}...)" if above_info else "")
    )


def bad_checkpoints() -> str:
    """Exit status and the lines of output of ``python -m app`` on six bad checkpoints."""
    import subprocess
    import tempfile

    out = []
    with tempfile.TemporaryDirectory() as folder:
        good = (REPO / "model" / "checkpoints" / "default.pt").read_bytes()
        cases = {"missing": None, "a directory": "dir", "truncated": good[: len(good) // 2]}
        cases |= {"random bytes": os.urandom(4096), "text": b"weights\n", "empty": b""}
        procs = {}
        for name, data in cases.items():
            path = Path(folder) / name.replace(" ", "-")
            if data == "dir":
                path.mkdir()
            elif data is not None:
                path.write_bytes(data)
            env = {**os.environ, "WBVAE_CHECKPOINT": str(path), "WBVAE_PORT": str(free_port()), "WBVAE_DEVICE": "cpu"}
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        for name, proc in procs.items():
            text = proc.communicate(timeout=300)[0].decode()
            errors = [json.loads(line)["msg"] for line in text.splitlines() if '"level": "error"' in line]
            naming = [m for m in errors if "cannot start" in m or "Traceback" in m]
            said = naming[-1].strip().splitlines()[-1][:70] if naming else "-"
            lines = sum(m.count("\n") + 1 for m in naming)
            out.append(
                f"{name}: exit {proc.returncode}, error {lines} line(s), traceback {'Traceback' in text}: {said!r}"
            )
    return "; ".join(out)


def small_checks() -> str:
    """HEAD on the health routes, /analyze without a key, a repeated query parameter, a multipart body cut short."""
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 48), (180, 120, 90)).save(png, "PNG")
    photo = png.getvalue()
    out = []
    with start_server(WBVAE_API_KEYS="k", ready_timeout=READY_S) as server:
        heads = {p: httpx.head(f"{server.url}{p}").status_code for p in ("/livez", "/healthz", "/readyz", "/metrics")}
        out.append(f"HEAD {heads}")
        keyless = httpx.post(f"{server.url}/analyze", content=photo, headers={"Content-Type": "image/png"})
        out.append(f"/analyze without a key: {keyless.status_code}")
        auth = {"Authorization": "Bearer k", "Content-Type": "image/png"}
        twice = httpx.post(f"{server.url}/correct?preset=tungsten&preset=shade", content=photo, headers=auth)
        out.append(
            f"preset twice: {twice.status_code}" + (f" {twice.json()['detail']!r}" if twice.status_code != 200 else "")
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + photo
        cut = httpx.post(
            f"{server.url}/correct",
            content=part,
            headers={"Authorization": "Bearer k", "Content-Type": "multipart/form-data; boundary=b"},
        )
        out.append(f"no closing boundary: {cut.status_code} {cut.json()['detail'][:80]!r}")
    return "; ".join(out)


def cap_flood(total: int = 20_000, cap: int = 50, clients: int = 150) -> str:
    """``total`` connections, ``clients`` at a time, each sending a whole GET /livez and idling 0.3 s after."""
    with start_server(WBVAE_MAX_CONNECTIONS=str(cap), ready_timeout=READY_S) as server:
        host, port = server.url.removeprefix("http://").split(":")
        counts: Counter = Counter()
        left = [total]

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                try:
                    reader, writer = await _open(host, int(port))
                except OSError:
                    counts["connect failed"] += 1
                    continue
                writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
                    answer = b""
                counts[answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer"] += 1
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(), 0.3)
                writer.close()

        async def flood() -> None:
            await asyncio.gather(*(client() for _ in range(clients)))

        asyncio.run(flood())
    return f"{total:,} connections against a cap of {cap}: {dict(counts)}; **{counts['no answer']} without an answer**"


def door_attacks(phase_s: float, unread: int, photo: bytes) -> None:
    print(f"issue #28 attacks (lock-out phases {phase_s:g} s, {unread} unread 12 MP answers)\n")
    rows = [
        ("11 uploads declaring 512 MiB - 100 kB, no body", lambda: lock_out(0, phase_s)),
        ("the same at 20 KiB/s", lambda: lock_out(20 * 1024, phase_s)),
        ("HEAD, /analyze without a key, repeated parameter, multipart cut short", small_checks),
        (f"{unread} clients that never read their 12 MP answer", lambda: unread_answers(unread, photo)),
        ("TMPDIR full", full_tmpdir),
        ("six bad checkpoints", bad_checkpoints),
        ("20,000 connections at the cap", cap_flood),
    ]
    print("| attack | result |")
    print("| --- | --- |")
    for name, run in rows:
        print(f"| {name} | {run()} |", flush=True)


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
        choices=("all", "sockets", "uploads", "slow", "door"),
        default="all",
        help="sockets: only the idle, slowloris and huge-header connections; uploads: only the bombs; "
        "slow: the four attacks of issue #20 instead; door: those of issue #28",
    )
    parser.add_argument("--phase", type=float, default=20.0, help="--attacks slow, door: seconds of each attack")
    parser.add_argument("--unread", type=int, default=120, help="--attacks door: clients that never read")
    args = parser.parse_args()

    photo = photo_jpeg(12)
    if args.attacks == "door":
        door_attacks(args.phase, args.unread, photo)
        return
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
