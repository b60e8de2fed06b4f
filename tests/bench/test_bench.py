"""``python -m bench --quick`` runs end to end and prints its tables (timings are not asserted); the
mapping a GPU runs equals the CPU's."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from model.corrector import Correction
from tests.conftest import REPO, wild_photos


@pytest.mark.slow
def test_quick_benchmark_prints_tables():
    if not os.environ.get("WBVAE_BENCH_PHOTOS"):
        wild_photos()  # the benchmark's default photos: skip (fail under WBVAE_REQUIRE_DATA=1) without them
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for heading in (
        "## In-process: app.pipeline.correct_upload",
        "| MP | out | map on | median s | p95 s | decode | model | mapping | encode | floor s |",
        "| 1 | png | cpu |",
        "| 1 | jpeg | cpu |",
        "| 1 | webp | cpu |",
        "| own ratio | isal floor s | isal ratio |",  # issue 14's floor: decode + one thread of ISA-L level 1
        "## PNG writer steps",
        "| MP | map s | filter s | deflate s | sum s | floor deflate s | deflated MB |",
        "peak RSS MB",
        "| MP | out | requests | median s |",
        "| ratio to isal floor |",
        "| concurrency | corrections/s |",
    ):
        assert heading in done.stdout


def test_correction_mapped_on_a_device_equals_its_row_mapping():
    """The path a GPU takes (``map_on``: torch tables on a device), run here on the CPU, equals ``map_rows``."""
    img = np.random.default_rng(7).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    m = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.02], [0.01, 0.0, 0.8]], np.float32)
    img.setflags(write=False)  # decoded pixels are read-only
    correction = Correction(m, 0.5)
    for c in (correction, correction.at_strength(0.4)):
        on_device = c.map_on(img, torch.device("cpu"))
        assert on_device.shape == img.shape and on_device.dtype == np.uint8
        assert np.array_equal(on_device, c.map_rows(img))
    assert not np.array_equal(correction.map_rows(img), img)


def test_peak_rss_probe_counts_its_own_process_only():
    """The fresh-process probe must not read its parent's size (Linux keeps ru_maxrss across exec)."""
    ballast = np.ones(400 << 20, np.uint8)  # 400 MB resident in this, the parent, process
    code = "from bench.rss import peak_rss_mb; print(peak_rss_mb())"
    child_mb = float(
        subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    )
    assert ballast.sum() and child_mb < 200


def test_retaining_freed_memory_is_set_on_glibc():
    code = (
        "import platform; from app.memory import retain_freed_memory; "
        "print(retain_freed_memory() == (platform.libc_ver()[0] == 'glibc'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
