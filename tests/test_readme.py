"""The README's configuration table lists every setting the service reads."""

from app.settings import Settings
from tests.conftest import REPO


def test_every_setting_is_documented():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Python use")]
    missing = [n for n in Settings.model_fields if f"`WBVAE_{n.upper()}`" not in table]
    assert not missing, f"settings missing from the README's configuration table: {missing}"
