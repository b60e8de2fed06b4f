"""make image-check: build the Dockerfile's images with buildah, run them with podman, and check them.

Runs on a machine without a Docker engine or a container registry (this project's machines, its CI), as root:

1. installs podman, buildah, mmdebstrap and runc from Debian when they are missing, and configures them through
   CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF (scripts/podman/: runc, ulimits within
   the machine's limits, overlay storage, no search registries and docker.io blocked, so that a missing image fails
   at once instead of hanging on a pull);
2. uses the Dockerfile's base (python:3.11.13-slim-bookworm) when it is here or can be pulled, else builds a stand-in
   from Debian's archive with mmdebstrap and says so (docs/deployment.md, "The image, built here");
3. builds the serving image (``wbvae:0.1.0``) and the ``train`` target, with the layer cache;
4. runs the serving image read-only, as compose and Kubernetes do, and checks /livez, /readyz, POST /correct on a
   real photo (bit for bit the answer of this checkout's own service, started from .venv), /metrics, the
   healthcheck, the user (uid and gid 10001, both with an entry), the read-only root, that every package in the
   image is pinned by requirements.lock, and a clean stop on SIGTERM; ``python -m model.training.train --help`` in
   the train image; then the compose file's ``wbvae-cpu`` service under podman-compose, with the same checks;
5. reports the build times, the image size, the download size (gzip layers, as a registry serves them) and the
   time to ready; removes its containers, networks and temporary files, and leaves the layer cache.

Every wait has a deadline; a failure prints what failed and the container's log. A disk too full to build on fails
before the build, and a build that fills the disk is stopped. Settings (environment):

    WBVAE_IMAGE_BASE            a base image to use instead (must be here or pullable)
    WBVAE_IMAGE_MIN_FREE_GB     free space needed to build without cache (default 32; less with the cache warm)
    WBVAE_IMAGE_BUILD_TIMEOUT_S per build (default 2400)
    WBVAE_IMAGE_DOWNLOAD_SIZE   0: skip the download size (minutes whenever the code changed: the 5 GB layer)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.server import start_server  # noqa: E402
from tests.conftest import lock_pins  # noqa: E402

CONF = REPO / "scripts" / "podman"
TAG = "localhost/wbvae:0.1.0"  # compose's image (wbvae:${WBVAE_VERSION:-0.1.0}); a short name resolves to localhost
TRAIN_TAG = "localhost/wbvae-train:0.1.0"
REAL_BASE = "docker.io/library/python:3.11.13-slim-bookworm"
STANDIN = "localhost/wbvae-standin-python:3.11-bookworm"
PHOTO_DIR = REPO.parent / "shared" / "data" / "wild"
APT_PACKAGES = (
    "podman buildah mmdebstrap runc uidmap containernetworking-plugins slirp4netns "
    "golang-github-containernetworking-plugin-dnsname"
).split()
NAME = f"wbvae-image-check-{os.getpid()}"
PROJECT = f"wbvae-image-check-{os.getpid()}"  # compose project name: never the user's own stack (name: wbvae)
MIN_FREE_GB = float(os.environ.get("WBVAE_IMAGE_MIN_FREE_GB", "32"))
BUILD_TIMEOUT_S = int(os.environ.get("WBVAE_IMAGE_BUILD_TIMEOUT_S", "2400"))
STOP_FREE_GB = 2.0  # a build that leaves less than this free is stopped
READY_TIMEOUT_S = 180
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
GB = 1e9

ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(CONF / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(CONF / "storage.conf"),
    "CONTAINERS_REGISTRIES_CONF": str(CONF / "registries.conf"),
}
GRAPHROOT = Path(re.search(r'graphroot = "([^"]+)"', (CONF / "storage.conf").read_text()).group(1))


class CheckFailed(Exception):
    """One check's failure: its message is the whole report."""


def say(message: str) -> None:
    print(f"image-check: {message}", flush=True)


def check(ok: object, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def sh(*cmd: str, timeout: float = 120, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with a deadline; on failure (when ``ok``) raise with its output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", ENV), **kw)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from e
    if ok and proc.returncode != 0:
        raise CheckFailed(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def free_gb(path: Path) -> float:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / GB


# ------------------------------------------------------------------------------------------- tools


def install_tools() -> None:
    missing = [t for t in ("podman", "buildah", "mmdebstrap", "runc", "iptables") if not shutil.which(t)]
    if missing:
        say(f"installing {' '.join(APT_PACKAGES)} from Debian (missing: {', '.join(missing)})")
        apt = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
        sh("apt-get", "update", "-qq", timeout=300, env=apt)
        sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES, timeout=600, env=apt)
    version = sh("podman", "--version").stdout.strip()
    compose = shutil.which("podman-compose", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    check(compose, "podman-compose is missing: it comes with the deploy extra (make install-dev)")
    compose_version = sh(compose, "version").stdout.strip().splitlines()[0]
    say(f"{version}, {sh('buildah', '--version').stdout.strip()}, {compose_version}")


# -------------------------------------------------------------------------------------------- base


def image_exists(ref: str) -> bool:
    return sh("podman", "image", "exists", ref, ok=False, timeout=60).returncode == 0


def base_image(tmp: Path) -> str:
    """The Dockerfile's base if it is here or can be pulled, else the stand-in (built once, then cached)."""
    if chosen := os.environ.get("WBVAE_IMAGE_BASE"):
        if not image_exists(chosen):
            sh("podman", "pull", chosen, timeout=600)
        return chosen
    if image_exists(REAL_BASE):
        return REAL_BASE
    # The pull goes through a registries.conf that does not block docker.io; DNS fails at once here, and the
    # deadline bounds a network that swallows the connection instead.
    open_conf = tmp / "registries-open.conf"
    open_conf.write_text("unqualified-search-registries = []\n")
    try:
        pull = sh(
            "podman", "pull", REAL_BASE, ok=False, timeout=60, env={**ENV, "CONTAINERS_REGISTRIES_CONF": str(open_conf)}
        )
        if pull.returncode == 0:
            return REAL_BASE
        reason = (pull.stderr.strip().splitlines() or ["no answer"])[-1]
    except CheckFailed as e:
        reason = str(e)
    say(f"the Dockerfile's base {REAL_BASE} cannot be pulled ({reason[:200]})")
    if image_exists(STANDIN):
        say(
            f"using the stand-in base {STANDIN} (cached): Debian bookworm's python3 3.11.2 in /usr/bin, "
            "not python.org's 3.11.13 in /usr/local (docs/deployment.md)"
        )
        return STANDIN
    say(f"building the stand-in base {STANDIN} with mmdebstrap from Debian's archive")
    start = time.monotonic()
    tar = tmp / "base.tar"
    sh(
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates,netbase,tzdata",
        "bookworm",
        str(tar),
        timeout=900,
    )
    sh(
        "podman",
        "import",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["python3"]',
        str(tar),
        STANDIN,
        timeout=600,
    )
    tar.unlink()
    say(f"stand-in base built in {time.monotonic() - start:.0f} s")
    return STANDIN


# ------------------------------------------------------------------------------------------- build


def du_gb(path: Path) -> float:
    """What ``path`` holds on its file system, in GB (0 when it is not there)."""
    try:
        return int(sh("du", "-sxb", str(path), timeout=300, ok=False).stdout.split()[0]) / GB
    except (IndexError, ValueError, CheckFailed):
        return 0.0


def needed_free_gb() -> float:
    """Free space a build needs: MIN_FREE_GB without cache, less by what the cache already holds."""
    return max(6.0, MIN_FREE_GB - du_gb(GRAPHROOT))


def build(base: str, tag: str, target: str | None, log: Path) -> float:
    """buildah build with the layer cache; stopped (with a message) when it fills the disk or runs out of time."""
    need = needed_free_gb()
    have = free_gb(GRAPHROOT)
    check(
        have >= need,
        f"not enough disk to build {tag}: {have:.1f} GB free on {GRAPHROOT}, {need:.1f} GB needed "
        f"(a build without cache peaks at about 30 GB; set WBVAE_IMAGE_MIN_FREE_GB to override)",
    )
    cmd = [
        "nice",
        "-n",
        "19",
        "buildah",
        "build",
        "--pull=never",
        "--format",
        "docker",
        "--layers",
        "--force-rm",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "-t",
        tag,
    ]
    # The RUN steps trust what this machine trusts: its CA bundle, mounted over the base's for the build only
    # (nothing of it lands in a layer). Here PyPI is reached through a TLS proxy whose CA only the host knows;
    # Debian's pip (the stand-in's) reads this file, as any pip does through PIP_CERT.
    if HOST_CA.is_file():
        cmd += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
    cmd += ["--target", target] if target else []
    say(f"building {tag} ({'target ' + target if target else 'default target'}; log {log})")
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, str(REPO)], stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=REPO, start_new_session=True
        )
        why = None
        while proc.poll() is None:
            if free_gb(GRAPHROOT) < STOP_FREE_GB:
                why = f"the disk filled up: under {STOP_FREE_GB} GB free on {GRAPHROOT}"
            elif time.monotonic() - start > BUILD_TIMEOUT_S:
                why = f"it ran past {BUILD_TIMEOUT_S} s (WBVAE_IMAGE_BUILD_TIMEOUT_S)"
            if why:
                os.killpg(proc.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(2)
    seconds = time.monotonic() - start
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    if why:
        raise CheckFailed(f"building {tag} stopped: {why}\n{tail}")
    if proc.returncode != 0:
        hint = " (no space left on the disk)" if "no space left" in tail.lower() else ""
        raise CheckFailed(f"building {tag} failed{hint}, exit {proc.returncode}:\n{tail}")
    say(f"built {tag} in {seconds:.0f} s")
    return seconds


# ------------------------------------------------------------------------------------------- sizes


def gzip_size(stream: IO[bytes], chunk: int = 32 << 20) -> int:
    """Size of ``stream`` gzip-compressed at level 6, on every core: independent 32 MB blocks, as pigz writes them
    (within a few hundredths of a percent of one stream; zlib releases the GIL)."""
    total, pending = 18, deque()  # 18: gzip's header and trailer
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        while block := stream.read(chunk):
            pending.append(pool.submit(lambda b: len(zlib.compress(b, 6, -15)), block))
            while len(pending) > 2 * (os.cpu_count() or 1):
                total += pending.popleft().result()
        return total + sum(f.result() for f in pending)
    finally:  # on SIGTERM too: the blocks not started are dropped, the process does not wait for them
        pool.shutdown(wait=False, cancel_futures=True)


def download_size(image: str, base: str, cache_file: Path) -> tuple[int, int]:
    """(all layers, the base's layers excluded): gzip sizes, as a registry serves them (level 6, what buildah and
    docker push use). Each layer is compressed once, then remembered by its digest in ``cache_file``."""
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    sizes: dict[str, int] = {}
    save = subprocess.Popen(
        ["podman", "image", "save", "--format", "docker-archive", image],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert save.stdout is not None
    timer = threading.Timer(900, save.kill)
    timer.start()
    try:
        with tarfile.open(fileobj=save.stdout, mode="r|") as archive:
            for member in archive:
                if not member.isfile() or not member.name.endswith(".tar"):
                    continue
                digest = Path(member.name).stem.split("/")[-1]
                f = archive.extractfile(member)
                assert f is not None
                if digest in cache:
                    sizes[digest] = cache[digest]
                    continue
                sizes[digest] = cache[digest] = gzip_size(f)
    except BaseException:  # stopped before the end (SIGTERM, a failure): podman would block on the full pipe
        save.kill()
        raise
    finally:
        timer.cancel()
        save.wait(60)
    check(save.returncode == 0 and sizes, f"podman image save {image} failed (exit {save.returncode})")
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cache))
    base_layers = json.loads(sh("podman", "image", "inspect", base).stdout)[0]["RootFS"]["Layers"]
    own = sum(size for digest, size in sizes.items() if f"sha256:{digest}" not in base_layers)
    return sum(sizes.values()), own


# --------------------------------------------------------------------------------------- containers


def logs(container: str) -> str:
    return (
        sh("podman", "logs", container, ok=False, timeout=30).stdout[-3000:]
        + sh("podman", "logs", container, ok=False, timeout=30).stderr[-3000:]
    )


def running(container: str) -> bool:
    state = sh("podman", "inspect", "--format", "{{.State.Running}}", container, ok=False, timeout=30)
    return state.stdout.strip() == "true"


def wait_ready(url: str, container: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds until /readyz answers 200; fails when the container exits or the deadline passes."""
    start = time.monotonic()
    while True:
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                return time.monotonic() - start
        if not running(container):
            raise CheckFailed(f"{container} exited before it was ready:\n{logs(container)}")
        if time.monotonic() - start > timeout:
            raise CheckFailed(f"{container} was not ready within {timeout} s:\n{logs(container)}")
        time.sleep(0.5)


def correct(url: str, photo: Path) -> bytes:
    with photo.open("rb") as f:
        r = httpx.post(f"{url}/correct", files={"file": (photo.name, f, "image/jpeg")}, timeout=180)
    check(
        r.status_code == 200 and r.headers.get("content-type") == "image/png",
        f"POST {url}/correct answered {r.status_code} {r.headers.get('content-type')}: {r.text[:300]}",
    )
    return r.content


def in_container(container: str, code: str) -> str:
    return sh("podman", "exec", container, "python", "-c", code, timeout=60).stdout.strip()


USER_CHECK = """
import grp, os, pwd
status = dict(line.split(":", 1) for line in open("/proc/1/status"))
uid, gid = int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
print(uid, gid, pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name, pwd.getpwuid(uid).pw_gid)
"""

WRITE_CHECK = """
import errno
for path in ("/opt/venv/probe", "/home/wbvae/probe", "/probe", "/tmp/probe"):
    try:
        open(path, "w").close()
        print(path, "written")
    except OSError as e:
        print(path, errno.errorcode.get(e.errno, e.errno))
"""


def check_service(url: str, container: str, photo: Path, reference: bytes, what: str) -> None:
    """/livez, /readyz, POST /correct (bit for bit), /metrics, the healthcheck, the user, the read-only root."""
    r = httpx.get(f"{url}/livez", timeout=10)
    check(r.status_code == 200, f"{what}: /livez answered {r.status_code}: {r.text[:300]}")
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    check(ready.get("status") == "ready" and ready.get("device") == "cpu", f"{what}: /readyz answered {ready}")
    body = correct(url, photo)
    check(
        body == reference,
        f"{what}: POST /correct on {photo.name} differs from this checkout's service: {len(body)} bytes "
        f"sha256 {hashlib.sha256(body).hexdigest()[:16]}, expected {len(reference)} bytes "
        f"sha256 {hashlib.sha256(reference).hexdigest()[:16]}",
    )
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    for series in ("wbvae_model_ready 1.0", "wbvae_http_requests_total{", "wbvae_inference_duration_seconds_count"):
        check(series in metrics, f"{what}: /metrics lacks {series!r}:\n{metrics[:1500]}")
    check(
        re.search(r'wbvae_http_requests_total\{[^}]*status="200"[^}]*\} [1-9]', metrics)
        or re.search(r"wbvae_http_requests_total\{[^}]*\} [1-9]", metrics),
        f"{what}: /metrics did not count the correction",
    )
    health = sh("podman", "healthcheck", "run", container, ok=False, timeout=60)
    check(health.returncode == 0, f"{what}: the image's HEALTHCHECK failed: {health.stdout}{health.stderr}")
    uid, gid, user, group, user_gid = in_container(container, USER_CHECK).split()
    check(
        (uid, gid) == ("10001", "10001") and user_gid == gid,
        f"{what}: the service runs as uid {uid} gid {gid} (user {user}, group {group}, the user's group "
        f"{user_gid}); expected 10001:10001, the user's own group",
    )
    writes = dict(line.rsplit(" ", 1) for line in in_container(container, WRITE_CHECK).splitlines())
    check(
        all(v == "EROFS" for p, v in writes.items() if p != "/tmp/probe") and writes["/tmp/probe"] == "written",
        f"{what}: expected a read-only root with a writable /tmp: {writes}",
    )
    say(
        f"{what}: /livez, /readyz {ready}, POST /correct ({len(body)} bytes, bit for bit), /metrics, healthcheck, "
        f"uid:gid {uid}:{gid} ({user}:{group}), read-only root: ok"
    )


def stop_cleanly(container: str, what: str) -> float:
    start = time.monotonic()
    sh("podman", "kill", "--signal", "TERM", container, timeout=30)
    code = sh("podman", "wait", container, timeout=60, ok=False)
    seconds = time.monotonic() - start
    check(
        code.returncode == 0 and code.stdout.strip() == "0",
        f"{what}: after SIGTERM the service exited {code.stdout.strip() or code.stderr.strip()} "
        f"(expected 0):\n{logs(container)}",
    )
    say(f"{what}: stopped on SIGTERM with exit 0 in {seconds:.1f} s")
    return seconds


def check_locked(image: str) -> None:
    """Every package in the image pinned by requirements.lock, at the version installed (torch: its release)."""
    freeze = sh(
        "podman", "run", "--rm", "--network", "none", image, "python", "-m", "pip", "freeze", "--all", timeout=120
    ).stdout
    pins = lock_pins()
    off = []
    for line in freeze.splitlines():
        if "==" not in line:
            continue
        name, version = line.split("==", 1)
        name = re.sub(r"[-_.]+", "-", name).lower()
        if name in ("pip", "wbvae"):
            continue
        if pins.get(name) != version.split("+")[0]:
            off.append(f"{name}=={version} (locked: {pins.get(name, 'not pinned')})")
    check(not off, f"{image} installs packages requirements.lock does not pin (run `make lock`): {off}")
    say(f"{image}: every installed package is pinned by requirements.lock")


# ------------------------------------------------------------------------------------------ compose


def compose(*args: str, timeout: float = 120, ok: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("podman-compose", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    assert exe
    env = {**ENV, "COMPOSE_PROFILES": "cpu", "GRAFANA_ADMIN_PASSWORD": "image-check-not-used"}
    return sh(
        exe, "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"), *args, timeout=timeout, ok=ok, env=env, cwd=REPO
    )


def check_compose(photo: Path, reference: bytes) -> float:
    """The cpu profile's wbvae-cpu service under podman-compose; the rest of the stack needs images from a registry."""
    config = compose("config", timeout=60).stdout
    images = sorted(set(re.findall(r"^\s+image: (\S+)$", config, re.M)))
    missing = [i for i in images if not image_exists(i)]
    if missing:
        say(f"compose: no image for {', '.join(missing)} (no registry here): checking the wbvae-cpu service alone")
    check(image_exists(TAG), f"compose: the service's image {TAG} is missing")
    compose("up", "-d", "--no-build", "wbvae-cpu", timeout=120)
    container = next(
        (
            c
            for c in sh(
                "podman", "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={PROJECT}"
            ).stdout.split()
            if "wbvae-cpu" in c
        ),
        None,
    )
    check(container, "compose: `up -d wbvae-cpu` started no wbvae-cpu container")
    assert container
    ip = sh(
        "podman", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container
    ).stdout.split()
    check(ip, f"compose: {container} has no address on the compose network")
    url = f"http://{ip[0]}:8000"
    ready = wait_ready(url, container)
    say(f"compose: wbvae-cpu ready in {ready:.1f} s")
    check_service(url, container, photo, reference, "compose wbvae-cpu")
    # A stack whose images are missing fails at once: short names resolve nowhere, docker.io is blocked.
    if missing:
        t = time.monotonic()
        create = sh("podman", "create", "--name", f"{NAME}-pull", missing[0], ok=False, timeout=60)
        check(
            create.returncode != 0 and time.monotonic() - t < 30,
            f"compose: creating a container of the missing {missing[0]} did not fail fast",
        )
        say(
            f"compose: a service whose image is missing fails in {time.monotonic() - t:.1f} s: "
            f"{(create.stderr.strip().splitlines() or [''])[-1][:160]}"
        )
    down = time.monotonic()
    compose("down", "-t", "45", timeout=120)
    check(not running(container), f"compose: {container} still runs after `down`")
    return time.monotonic() - down


def build_containers() -> set[str]:
    """buildah's working containers (a build stopped by a signal can leave its own behind)."""
    return set(sh("buildah", "containers", "--quiet", "--notruncate", ok=False, timeout=60).stdout.split())


BUILD_CONTAINERS_BEFORE: set[str] = set()


def ours_or_stale(name: str) -> bool:
    """A container, pod or network of this run, or of an earlier run whose process is gone (killed: no clean-up)."""
    m = re.search(r"wbvae-image-check-(\d+)", name)
    if not m:
        return False
    pid = int(m.group(1))
    return pid == os.getpid() or not Path(f"/proc/{pid}").exists()


def cleanup() -> None:
    """Remove every container, pod and network this run made (by name and compose label), the build containers a
    stopped build left; prune dangling images."""
    left = build_containers() - BUILD_CONTAINERS_BEFORE
    if left:
        sh("buildah", "rm", *left, ok=False, timeout=120)
    with suppress(CheckFailed):
        compose("down", "-t", "10", timeout=120, ok=False)
    names = sh("podman", "ps", "-a", "--format", "{{.Names}}", ok=False, timeout=60).stdout.split()
    if mine := [n for n in names if ours_or_stale(n)]:
        sh("podman", "rm", "-f", "-t", "5", *mine, ok=False, timeout=120)
    pods = sh("podman", "pod", "ls", "--format", "{{.Name}}", ok=False, timeout=60).stdout.split()
    for pod in filter(ours_or_stale, pods):
        sh("podman", "pod", "rm", "-f", pod, ok=False, timeout=120)
    nets = sh("podman", "network", "ls", "--format", "{{.Name}}", ok=False, timeout=60).stdout.split()
    for net in filter(ours_or_stale, nets):
        sh("podman", "network", "rm", "-f", net, ok=False, timeout=60)
    # Images that the tags no longer name (an older build of the same tag): the layer cache stays. Deleting a
    # 5 GB layer can take minutes on a busy disk; a prune cut short is finished by the next run.
    try:
        sh("podman", "image", "prune", "-f", ok=False, timeout=900)
    except CheckFailed as e:
        say(f"clean-up: {e}")


# --------------------------------------------------------------------------------------------- main


@contextmanager
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="wbvae-image-check-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stopped(signum: int, _frame: object) -> None:
    """SIGTERM (CI's timeout) or SIGHUP: leave through the cleanup."""
    raise SystemExit(f"image-check: stopped by signal {signum}; cleaning up")


def main() -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGHUP, stopped)
    check(os.geteuid() == 0, "make image-check runs as root (rootful podman; it installs Debian packages)")
    photos = sorted(PHOTO_DIR.glob("*.jpg"))
    check(photos, f"no photo in {PHOTO_DIR}: copy the project's shared/data beside the checkout")
    photo = photos[0]
    cache_before = du_gb(GRAPHROOT)
    install_tools()
    BUILD_CONTAINERS_BEFORE.update(build_containers())
    cleanup()  # what an earlier run, killed, left
    with workdir() as tmp:
        try:
            base = base_image(tmp)
            if base == STANDIN:
                say("NOTE: built on the stand-in base, not python:3.11.13-slim-bookworm (no registry here)")
            build_s = build(base, TAG, None, tmp / "build.log")
            train_s = build(base, TRAIN_TAG, "train", tmp / "build-train.log")

            inspect = json.loads(sh("podman", "image", "inspect", TAG).stdout)[0]
            size = inspect["Size"]
            say(f"{TAG}: {size / GB:.2f} GB unpacked")

            # The reference: this checkout's own service (its .venv, the CPU build of torch), the same photo.
            with start_server(ready_timeout=120) as server:
                reference = correct(server.url, photo)
            say(f"reference: this checkout's service answered {len(reference)} bytes for {photo.name}")

            check_locked(TAG)
            check_locked(TRAIN_TAG)
            helped = sh(
                "podman",
                "run",
                "--rm",
                "--network",
                "none",
                "--read-only",
                "--tmpfs",
                "/tmp",
                TRAIN_TAG,
                "python",
                "-m",
                "model.training.train",
                "--help",
                timeout=120,
            ).stdout
            check("usage" in helped.lower(), f"{TRAIN_TAG}: `python -m model.training.train --help` printed {helped}")
            user = sh("podman", "run", "--rm", "--network", "none", TRAIN_TAG, "id", timeout=60).stdout.strip()
            check("uid=10001(wbvae) gid=10001(wbvae)" in user, f"{TRAIN_TAG} runs as {user}")
            say(f"{TRAIN_TAG}: `python -m model.training.train --help` runs, as {user}")

            # The serving image as compose and Kubernetes run it: read-only root, /tmp a tmpfs, on the CPU.
            from bench.server import free_port

            port = free_port()
            sh(
                "podman",
                "run",
                "-d",
                "--name",
                NAME,
                "--read-only",
                "--tmpfs",
                "/tmp",
                "-e",
                "WBVAE_DEVICE=cpu",
                "--stop-timeout",
                "45",
                "-p",
                f"127.0.0.1:{port}:8000",
                TAG,
                timeout=120,
            )
            url = f"http://127.0.0.1:{port}"
            to_ready = wait_ready(url, NAME)
            say(f"{TAG}: ready in {to_ready:.1f} s")
            check_service(url, NAME, photo, reference, "podman run")
            stop_s = stop_cleanly(NAME, "podman run")

            compose_stop_s = check_compose(photo, reference)
            say(f"compose: `down` stopped wbvae-cpu in {compose_stop_s:.1f} s")

            # Last: every layer that changed is compressed (minutes for the 5 GB one, after any change to the code).
            download = "not measured (WBVAE_IMAGE_DOWNLOAD_SIZE=0)"
            if os.environ.get("WBVAE_IMAGE_DOWNLOAD_SIZE", "1") != "0":
                start = time.monotonic()
                total_dl, own_dl = download_size(TAG, base, GRAPHROOT.parent / "wbvae-image-check" / "gzip-sizes.json")
                download = f"{total_dl / GB:.2f} GB ({own_dl / GB:.2f} GB above the base)"
                say(f"{TAG}: {download} to download, measured in {time.monotonic() - start:.0f} s")
        except CheckFailed as e:
            say(f"FAILED: {e}")
            return 1
        finally:
            cleanup()
    cache_after = du_gb(GRAPHROOT)
    say(
        f"figures: build {build_s:.0f} s (train target {train_s:.0f} s more), image {size / GB:.2f} GB, "
        f"download {download}, ready in {to_ready:.1f} s, stop {stop_s:.1f} s, "
        f"layer cache {cache_before:.1f} -> {cache_after:.1f} GB, whole check {time.monotonic() - started:.0f} s"
    )
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
