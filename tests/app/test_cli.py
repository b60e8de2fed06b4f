"""The ``wbvae`` command: folders of real photos through the service's pipeline, and every subcommand's --help."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.codec import decode
from tests.conftest import REPO, wild

SMALL = ["Pexels_dot_com_Buenosia_Carol.jpg", "Pexels_dot_com_Isadora_Menezes.jpg"]  # 900x600, 600x900


@pytest.fixture()
def photos(tmp_path):
    src = tmp_path / "in"
    (src / "trip").mkdir(parents=True)
    shutil.copy(wild(SMALL[0]), src / SMALL[0])
    shutil.copy(wild(SMALL[1]), src / "trip" / SMALL[1])
    (src / "trip" / "broken.jpg").write_bytes((wild(SMALL[0])).read_bytes()[:2000])  # truncated JPEG
    (src / "notes.txt").write_text("not a photo, not a photo suffix: ignored")
    return src


@pytest.mark.slow
def test_folder_with_a_broken_photo(photos, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "correct", str(photos), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 corrected, 0 skipped" in r.stdout and "1 failed" in r.stdout
    failures = [line for line in (r.stdout + r.stderr).splitlines() if "broken.jpg" in line]
    assert len(failures) == 1, failures  # each failure printed once, with its reason
    assert failures[0].startswith("FAILED") and "truncated" in failures[0]
    for rel in (SMALL[0], f"trip/{SMALL[1]}"):  # the folder structure and the format are kept
        with Image.open(out / rel) as im, Image.open(wild(Path(rel).name)) as original:
            assert im.format == "JPEG" and im.size == original.size
            assert im.info.get("icc_profile")  # tagged sRGB, as the service does
    assert not (out / "trip" / "broken.jpg").exists() and not list(out.rglob("*.partial"))


def test_skips_finished_outputs_unless_overwrite(photos, tmp_path, capsys):
    (photos / "trip" / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert main(["correct", str(photos), "-o", str(out), "-q"]) == 0
    first = (out / SMALL[0]).stat().st_mtime_ns
    assert main(["correct", str(photos), "-o", str(out), "-q"]) == 0
    assert "0 corrected, 2 skipped" in capsys.readouterr().out
    assert (out / SMALL[0]).stat().st_mtime_ns == first
    assert main(["correct", str(photos / SMALL[0]), "-o", str(out), "-q", "--overwrite"]) == 0
    assert "1 corrected, 0 skipped" in capsys.readouterr().out


def test_strength_zero_png_is_the_decoded_photo(tmp_path):
    out = tmp_path / "out"
    assert (
        main(["correct", str(wild(SMALL[0])), "-o", str(out), "--format", "png", "--strength", "0", "-j", "1", "-q"])
        == 0
    )
    expected = decode((wild(SMALL[0])).read_bytes(), 10**9).rgb
    with Image.open(out / (Path(SMALL[0]).stem + ".png")) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), expected)


def test_usage_errors(tmp_path, capsys):
    assert main(["correct", str(tmp_path), "-o", str(tmp_path / "out")]) == 2  # an empty folder
    assert "no photos found" in capsys.readouterr().err
    assert main(["correct", "/nonexistent/photo.jpg", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == "wbvae: error: no such file or folder: /nonexistent/photo.jpg\n"  # one line, no traceback
    photo = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert main(["correct", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wbvae: error: cannot load the model") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["correct", str(tmp_path), "-o", str(tmp_path / "out"), "--strength", "2"])
    assert exc.value.code == 2


@pytest.mark.parametrize("command", [[], ["correct"], ["serve"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script():
    assert 'wbvae = "app.cli:main"' in (REPO / "pyproject.toml").read_text()
    installed = Path(sys.executable).parent / "wbvae"
    if not installed.exists() and not os.environ.get("WBVAE_REQUIRE_DATA"):  # `make test` installs it
        pytest.skip("the wbvae script is not installed in this environment")
    r = subprocess.run([str(installed), "correct", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OUTDIR" in r.stdout


@pytest.mark.slow
def test_serve_is_the_service_with_flags_over_the_environment():
    import httpx

    from bench.server import start_server

    # The environment names an address that cannot be bound here; the flag must win for the server to come up.
    with start_server(
        "-m", "app.cli", "serve", "--host", "127.0.0.1", "--device", "cpu", WBVAE_HOST="192.0.2.1"
    ) as server:
        assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
        assert "White-balance correction" in httpx.get(f"{server.url}/").text


def test_temperature_renders_bluer_at_a_lower_setting_and_refuses_bad_values(tmp_path, capsys):
    photo = tmp_path / "p.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.uniform(0.2, 0.8, (48, 64, 3)) * 255).astype(np.uint8)).save(photo)
    means = {}
    for setting in ("tungsten", "6500"):
        out = tmp_path / setting
        assert main(["correct", str(photo), "-o", str(out), "-q", "-j", "1", "--temperature", setting]) == 0
        with Image.open(out / "p.png") as im:
            means[setting] = np.asarray(im.convert("RGB")).astype(int).mean((0, 1))
    assert means["tungsten"][2] - means["tungsten"][0] > means["6500"][2] - means["6500"][0] + 10
    for bad in ("1000", "candle"):
        with pytest.raises(SystemExit) as exc:
            main(["correct", str(photo), "-o", str(tmp_path / "x"), "--temperature", bad])
        assert exc.value.code == 2
    assert "--temperature" in capsys.readouterr().err
