"""The README: the Python it asks for is pyproject.toml's, its configuration table lists every setting, and its curl
and Python examples work as written against a real server."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tomllib
from PIL import Image

from app.settings import Settings
from bench.server import start_server
from tests.conftest import REPO, require

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next heading of the same level."""
    level = title.split(" ")[0]
    start = README.index(title + "\n")
    following = re.search(rf"^{level} ", README[start + len(title) :], flags=re.M)
    return README[start : start + len(title) + following.start()] if following else README[start:]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_every_setting_is_documented():
    table = section("## Configuration")
    missing = [n for n in Settings.model_fields if f"`WBVAE_{n.upper()}`" not in table]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_the_python_version_is_pyprojects():
    """Every "Python ≥ X.Y" in the README is pyproject.toml's requires-python."""
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert re.fullmatch(r">=\d+\.\d+", required), required
    stated = re.findall(r"Python\s*(?:≥|>=)\s*(\d+(?:\.\d+)*)", README)
    assert stated and set(stated) == {required[2:]}, (stated, required)


def test_the_default_host_is_stated():
    assert f"`WBVAE_HOST={Settings.model_fields['host'].default}`" in section("## Quick start")


def test_the_endpoint_table_names_each_endpoints_query_parameters():
    """The "takes" column of /correct and /analyze lists exactly the query parameters each route declares."""
    from app.main import create_app

    schema = create_app(Settings()).openapi()
    rows = {
        row.split(" | ")[1].strip("`"): row.split(" | ")[2]
        for row in section("## Use it").splitlines()
        if row.startswith("| POST | ")
    }
    for path in ("/correct", "/analyze"):
        declared = {p["name"] for p in schema["paths"][path]["post"].get("parameters", []) if p["in"] == "query"}
        assert set(re.findall(r"\?(\w+)=", rows[path])) == declared, (path, rows[path], declared)


def test_the_usage_section_has_curl_and_python_examples():
    use = section("## Use it")
    assert len(curl_commands(use)) >= 2 and len(code_blocks(use, "python")) >= 1


def curl_commands(text: str) -> list[str]:
    commands = []
    for block in code_blocks(text, "sh"):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("curl "):
                commands.append(command.strip())
    return commands


@pytest.fixture(scope="module")
def server():
    with start_server() as s:
        yield s


@pytest.fixture
def photo_dir(tmp_path):
    """A folder holding ``photo.jpg`` (a warm-cast photo, 640 x 480) as the examples name it."""
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.9, (12, 16, 3)) * np.array([1.0, 0.8, 0.55])
    Image.fromarray((np.kron(scene, np.ones((40, 40, 1))) * 255).astype(np.uint8)).save(tmp_path / "photo.jpg")
    return tmp_path


@pytest.mark.slow
def test_the_curl_examples_run_as_written(server, photo_dir):
    require(shutil.which("curl"), "curl on PATH", "apt-get install curl")
    for command in curl_commands(section("## Quick start")) + curl_commands(section("## Use it")):
        command = command.replace("http://localhost:8000", server.url)
        r = subprocess.run(["bash", "-c", command + " --fail-with-body -sS"], cwd=photo_dir, capture_output=True)
        assert r.returncode == 0, (command, r.stderr, r.stdout)
        out = photo_dir / command.split(" -o ")[-1].split()[0]
        with Image.open(out) as im:
            assert im.size == (640, 480) and im.format == {"png": "PNG", "jpg": "JPEG"}[out.suffix[1:]]


@pytest.mark.slow
def test_the_python_example_runs_as_written(server, photo_dir):
    code = code_blocks(section("## Use it"), "python")[0].replace("http://localhost:8000", server.url)
    r = subprocess.run([sys.executable, "-c", code], cwd=photo_dir, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with Image.open(photo_dir / "corrected.jpg") as im:
        assert im.format == "JPEG" and im.size == (640, 480)
