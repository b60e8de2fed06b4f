"""requirements.lock, the one lock of every install, agrees with pyproject.toml and with what is installed.

``make test`` installs the project with every extra from the lock, so the environment running this test is the
lock's: each pyproject requirement is pinned there at a version its specifier allows, every installed
distribution the project needs is pinned at the version installed, and nothing it needs is missing.
"""

from importlib.metadata import PackageNotFoundError, distribution

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, lock_pins

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = sorted(PYPROJECT["optional-dependencies"])


def project_requirements() -> list[Requirement]:
    """The serving dependencies and every extra's."""
    reqs = PYPROJECT["dependencies"] + [r for extra in EXTRAS for r in PYPROJECT["optional-dependencies"][extra]]
    return [Requirement(r) for r in reqs]


def test_every_pyproject_requirement_is_pinned_at_a_version_it_allows():
    pins = lock_pins()
    missing = sorted({str(r) for r in project_requirements() if canonicalize_name(r.name) not in pins})
    assert not missing, f"not in requirements.lock (run `make lock`): {missing}"
    refused = sorted(
        f"{r} (locked {pins[canonicalize_name(r.name)]})"
        for r in project_requirements()
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    )
    assert not refused, f"requirements.lock pins versions pyproject.toml refuses (run `make lock`): {refused}"


def test_the_lock_covers_everything_the_project_needs_at_the_installed_versions():
    """Walk the installed dependency closure of the project with every extra: each distribution is locked, at the
    version installed (torch: its release, whatever its build)."""
    pins, seen, todo = lock_pins(), set(), [(r, frozenset({""})) for r in project_requirements()]
    unlocked, off = set(), {}
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            unlocked.add(name)  # needed but not installed: `make test` installs from the lock, so it is not there
            continue
        installed = dist.version.split("+")[0]
        if name not in pins:
            unlocked.add(name)
        elif pins[name] != installed:
            off[name] = (pins[name], installed)
        wanted = frozenset({"", *req.extras})
        todo += [(Requirement(r), wanted) for r in dist.requires or []]
    assert not unlocked, f"needed but not in requirements.lock (run `make lock`): {sorted(unlocked)}"
    assert not off, f"installed versions differ from requirements.lock (locked, installed): {off}"


def test_the_uvicorn_pins_of_the_server_protocol_hold_in_the_lock_pins():
    from app.server import WRITTEN_FOR

    pins = lock_pins()
    assert {name: pins[canonicalize_name(name)] for name in WRITTEN_FOR} == WRITTEN_FOR
