"""The layout's rules: serving never loads training code; ``Corrector`` is the HTTP edge's only door into the model."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

SERVING_CORE = sorted((REPO / "model").glob("*.py"))
EDGE = sorted((REPO / "app").rglob("*.py"))


def imported_modules(path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (at any depth, lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.slow
def test_the_serving_path_never_loads_training_code_or_its_libraries():
    code = (
        "import sys, numpy as np\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        "from app.cli import build_parser\n"
        "from fastapi.testclient import TestClient\n"
        "import io\n"
        "from PIL import Image\n"
        "buf = io.BytesIO(); Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(buf, 'PNG')\n"
        "with TestClient(create_app(Settings(device='cpu'))) as c:\n"
        "    import time\n"
        "    while c.get('/readyz').status_code != 200: time.sleep(0.1)\n"
        "    assert c.post('/correct', files={'file': ('a.png', buf.getvalue())}).status_code == 200\n"
        "build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'skimage', 'scipy', 'tqdm_')\n"
        "             or m.startswith('model.training'))\n"
        "print(' '.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"serving loaded: {done.stdout}"


def test_the_serving_core_never_imports_the_edge_or_training():
    for path in SERVING_CORE:
        bad = {m for m in imported_modules(path) if m.split(".")[0] == "app" or m.startswith("model.training")}
        assert not bad, f"{path.name} imports {bad}"


def test_the_edge_reaches_the_model_only_through_the_corrector():
    for path in EDGE:
        reached = {m for m in imported_modules(path) if m.split(".")[0] == "model"}
        assert reached <= {"model.corrector"}, f"{path.name} imports {reached - {'model.corrector'}}"
