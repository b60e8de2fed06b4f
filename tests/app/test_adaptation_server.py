"""Issue #29 over HTTP, on a real server process: ``?adaptation=full|natural`` on /correct and /analyze, the
X-WB-Adaptation and X-WB-Degree headers (exposed through CORS), 422 on bad values, the metric; and the CLI flag."""

import subprocess
import sys

import httpx
import numpy as np
import pytest

from bench.server import start_server
from tests.app.test_whitebalance_server import ORIGIN, decoded, png, post, warm_photo
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # one server process for the module


@pytest.fixture(scope="module")
def server():
    with start_server(WBVAE_CORS_ORIGINS=ORIGIN) as s:
        yield s


def test_natural_keeps_a_warm_photo_warmer_and_full_is_the_default(server):
    photo = warm_photo(120, 160)
    default, full, natural = (
        post(server, "/correct", photo, **p) for p in ({}, {"adaptation": "full"}, {"adaptation": "natural"})
    )
    assert np.array_equal(decoded(default), decoded(full))
    assert default.headers["X-WB-Adaptation"] == "full" and default.headers["X-WB-Degree"] == "1"
    assert natural.headers["X-WB-Adaptation"] == "natural"
    degree = float(natural.headers["X-WB-Degree"])
    assert 0 < degree < 1
    warm = decoded(natural).mean((0, 1))
    neutral = decoded(full).mean((0, 1))
    assert warm[0] - warm[2] > neutral[0] - neutral[2]  # warmer (this light's D is high: a small step)


def test_analyze_reports_the_degree_and_bad_values_get_422(server):
    photo = warm_photo(120, 160)
    facts = post(server, "/analyze", photo, adaptation="Natural").json()["mapping"]
    r = post(server, "/correct", photo, adaptation="natural")
    assert facts["adaptation"] == "natural" and facts["degree"] == pytest.approx(float(r.headers["X-WB-Degree"]))
    assert post(server, "/analyze", photo).json()["mapping"]["degree"] == 1.0
    for path in ("/correct", "/analyze"):
        bad = post(server, path, photo, adaptation="partial")
        assert bad.status_code == 422 and "unknown adaptation 'partial'" in bad.json()["detail"], bad.text


def test_cors_exposes_the_headers_and_the_metric_counts_each_choice(server):
    photo = warm_photo(60, 80)
    r = httpx.post(
        f"{server.url}/correct",
        files={"file": ("p.png", png(photo), "image/png")},
        params={"adaptation": "natural"},
        headers={"Origin": ORIGIN},
        timeout=60,
    )
    exposed = r.headers["access-control-expose-headers"]
    assert "X-WB-Adaptation" in exposed and "X-WB-Degree" in exposed
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    counts = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("wbvae_adaptation_choices_total{")
    }
    assert counts["natural"] >= 1 and counts["full"] >= 1, counts


def test_the_cli_takes_adaptation(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(warm_photo(60, 80)).save(src / "p.png")
    outs = {}
    for a in ("full", "natural"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "correct",
                str(src),
                "-o",
                str(tmp_path / a),
                "--adaptation",
                a,
                "--quiet",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        outs[a] = np.asarray(Image.open(tmp_path / a / "p.png").convert("RGB")).astype(int).mean((0, 1))
    assert outs["natural"][0] - outs["natural"][2] > outs["full"][0] - outs["full"][2] + 5
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "correct", str(src), "-o", str(tmp_path / "x"), "--adaptation", "half"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
