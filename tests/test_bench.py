"""``python -m bench --quick`` runs end to end and prints its tables (timings are not asserted)."""
import subprocess
import sys

import numpy as np
import torch

from app.pipeline import map_pixels
from model.mapping import apply_matrix
from tests.conftest import REPO


def test_quick_benchmark_prints_tables():
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for heading in ("| MP | out | code | median s |", "| 1 | png | before |", "| 1 | png | after |",
                    "| 1 | jpeg | after |", "peak RSS MB", "| concurrency | corrections/s |"):
        assert heading in done.stdout


def test_map_pixels_torch_path_equals_cpu_path():
    """The path a GPU takes (torch tables on the corrector's device), run here on the CPU."""
    img = np.random.default_rng(7).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    m = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.02], [0.01, 0.0, 0.8]], np.float32)
    img.setflags(write=False)  # decoded pixels are read-only
    cpu = torch.device("cpu")
    assert np.array_equal(map_pixels(img, m, cpu, use_torch=True), apply_matrix(img, m))
    assert np.array_equal(map_pixels(img, m, cpu), apply_matrix(img, m))


def test_peak_rss_probe_counts_its_own_process_only():
    """The fresh-process probe must not read its parent's size (Linux keeps ru_maxrss across exec)."""
    ballast = np.ones(400 << 20, np.uint8)  # 400 MB resident in this, the parent, process
    code = "from bench.rss import peak_rss_mb; print(peak_rss_mb())"
    child_mb = float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                    check=True).stdout)
    assert ballast.sum() and child_mb < 200


def test_retaining_freed_memory_is_set_on_glibc():
    code = "import platform; from app.memory import retain_freed_memory; " \
           "print(retain_freed_memory() == (platform.libc_ver()[0] == 'glibc'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
