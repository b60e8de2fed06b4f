"""Shared fixtures: paths to the real reference data beside the checkout; a real server process.

Tests that need something a bare clone lacks (the reference data in ``../shared/data``, Chromium,
promtool...) call :func:`require`: it skips with one line saying what is missing and how to get it,
and fails instead when ``WBVAE_REQUIRE_DATA=1`` (``.ci/run`` sets it, so CI never passes by skipping).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_PAIRS = SHARED_DATA / "real-pairs"
WILD = SHARED_DATA / "wild"
# The reference data is not in the repository but beside it: how to get it.
GET_SHARED_DATA = (
    "the reference data beside the checkout: copy the project's shared/data folder there, "
    "with wild/, real-pairs/, raw-thumbs/"
)
REQUIRE_ALL = os.environ.get("WBVAE_REQUIRE_DATA", "").strip().lower() not in ("", "0", "false", "no")

T = TypeVar("T")


class MissingRequirement(pytest.skip.Exception):
    """The skip require() raises: it names what is missing and how to get it."""


def require(have: T, what: str, how: str) -> T:
    """``have`` back if it is there (a path that exists, a non-empty collection, a true value); else skip
    the test with one line, "missing WHAT (HOW)", or fail it when WBVAE_REQUIRE_DATA=1. Works in a test,
    a fixture, or at module level (the whole module skips)."""
    ok = have.exists() if isinstance(have, Path) else bool(have)
    if not ok:
        message = f"missing {what} ({how})"
        if REQUIRE_ALL:
            pytest.fail(f"{message}; WBVAE_REQUIRE_DATA=1 makes this a failure", pytrace=False)
        raise MissingRequirement(message, allow_module_level=True)
    return have


def _fold_missing(report) -> None:
    """A skip raised by require() (from whichever copy of this module: test modules import it as
    ``tests.conftest``, pytest as ``conftest``) is reported at this file, without a line number, so that
    ``-ra`` folds every test that lacks the same thing into one line: "SKIPPED [n] tests/conftest.py: missing ..."."""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = re.sub(r"^[\w.]*MissingRequirement: ", "Skipped: ", report.longrepr[2])
        if reason != report.longrepr[2]:
            report.longrepr = (__file__, None, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fold_missing(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fold_missing(outcome.get_result())


def pytest_runtest_setup(item):
    """``@pytest.mark.gpu`` tests skip without CUDA (a plain skip: CI has no GPU)."""
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")


def shared_data(rel: str) -> Path:
    """``../shared/data/REL``; skips (fails under WBVAE_REQUIRE_DATA=1) when it is not there, naming the
    first missing folder, so that a clone without the data gets one summary line for all such tests."""
    path = SHARED_DATA / rel
    chain = [p for p in (*reversed(path.parents), path) if p == SHARED_DATA or SHARED_DATA in p.parents]
    missing = next((p for p in chain if not p.exists()), None)
    require(missing is None, str(missing), GET_SHARED_DATA)
    return path


def wild_photos() -> list[Path]:
    """The reference photos (JPEGs in ../shared/data/wild), sorted."""
    return require(sorted(shared_data("wild").glob("*.jpg")), f"JPEGs in {WILD}", GET_SHARED_DATA)


def wild(name: str) -> Path:
    """One reference photo of ../shared/data/wild by file name."""
    return shared_data(f"wild/{name}")


def real_pair_file(name: str) -> Path:
    """A file of ../shared/data/real-pairs (pairs.tsv or one of its images)."""
    return shared_data(f"real-pairs/{name}")


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def wild_photo() -> Path:
    return wild_photos()[0]


@pytest.fixture(scope="session")
def real_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, input, ground truth) for every line of real-pairs/pairs.tsv."""
    tsv = real_pair_file("pairs.tsv")
    out = []
    for line in tsv.read_text().splitlines():
        if line.strip():
            inp, gt = line.split("\t")
            out.append((inp, load_rgb(REAL_PAIRS / inp), load_rgb(REAL_PAIRS / gt)))
    return out


def wait_client_ready(client, timeout: float = 60) -> None:
    """Poll an in-process TestClient's /readyz until the background warm-up is done."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.05)


def lock_pins() -> dict[str, str]:
    """requirements.lock as {PEP 503 name: version}; every entry must be an exact ``==`` pin of a release."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;+]+", line), f"not an exact pin of a release: {line}"
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins
