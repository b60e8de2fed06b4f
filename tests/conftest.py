"""Shared fixtures: paths to the real reference data beside the checkout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_PAIRS = SHARED_DATA / "real-pairs"
WILD = SHARED_DATA / "wild"


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def wild_photo() -> Path:
    photos = sorted(WILD.glob("*.jpg"))
    if not photos:
        pytest.fail(f"reference photos missing: expected JPEGs in {WILD}")
    return photos[0]


@pytest.fixture(scope="session")
def real_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, input, ground truth) for every line of real-pairs/pairs.tsv."""
    tsv = REAL_PAIRS / "pairs.tsv"
    if not tsv.is_file():
        pytest.fail(f"reference pairs missing: expected {tsv}")
    out = []
    for line in tsv.read_text().splitlines():
        if line.strip():
            inp, gt = line.split("\t")
            out.append((inp, load_rgb(REAL_PAIRS / inp), load_rgb(REAL_PAIRS / gt)))
    return out
