"""make image-check's wiring, checked offline: what .ci/run watches covers what the Dockerfile copies, the image's
user has its group, and the lock's image section is well formed. The image itself is built and checked by
``make image-check`` (scripts/image_check.py), which .ci/run runs when these inputs change."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from tests.conftest import REPO, lock_pins
from tests.deploy.test_deploy import dockerfile_stages

CI_RUN = REPO / ".ci" / "run"
IMAGE_SECTION = "# ---- The image only"


def ci_image_inputs() -> list[str]:
    m = re.search(r"^image_inputs=\(([^)]*)\)", CI_RUN.read_text(), re.M)
    assert m, ".ci/run lists the image's inputs in image_inputs=(...)"
    return shlex.split(m.group(1))


def test_ci_watches_everything_the_dockerfile_copies():
    inputs = ci_image_inputs()
    assert {"Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "app", "model"} <= set(inputs)
    copied = {
        src.rstrip("/")
        for stage in dockerfile_stages().values()
        for kind, rest in stage["steps"]
        if kind == "COPY" and not rest.startswith("--from")
        for src in shlex.split(rest)[:-1]
    }
    copied.discard("README.md")  # the package's long description only: a change to it cannot break the image
    unwatched = {src for src in copied if not any(src == i or src.startswith(f"{i}/") for i in inputs)}
    assert not unwatched, f"the Dockerfile copies what .ci/run does not watch: {sorted(unwatched)}"


def test_ci_runs_the_image_check_on_a_change_and_on_request(tmp_path):
    """The trigger, in a scratch repository: a change to app/ runs it, a change elsewhere skips it, no parent runs
    it, WBVAE_IMAGE_CHECK=1 forces it and 0 skips it, a host without the disk to build reports it not run
    (make is replaced by echo)."""
    script = CI_RUN.read_text()
    trigger = script[script.index("image_inputs=(") :]
    (tmp_path / "trigger.sh").write_text(
        'set -euo pipefail\nmake() { echo RAN; }\ntimeout() { shift 2; "$@"; }\n' + trigger
    )

    def run(*, env: dict[str, str] | None = None) -> str:
        out = subprocess.run(
            ["bash", str(tmp_path / "trigger.sh")], cwd=repo, capture_output=True, text=True, timeout=30, env=env
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "app" / "x.py").write_text("1\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=repo, check=True)
    # This host's free disk must not decide the trigger's outcome: the disk guard is asked for 0 GB.
    base = {k: v for k, v in os.environ.items() if k != "WBVAE_IMAGE_CHECK"} | {"WBVAE_IMAGE_MIN_FREE_GB": "0"}
    assert "RAN" in run(env=base), "no parent commit: it runs"
    (repo / "docs.md").write_text("x\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "two"], cwd=repo, check=True)
    assert "skipped" in run(env=base)
    assert "RAN" in run(env={**base, "WBVAE_IMAGE_CHECK": "1"})
    (repo / "app" / "x.py").write_text("2\n")
    subprocess.run([*git, "commit", "-qam", "three"], cwd=repo, check=True)
    assert "RAN" in run(env=base)
    assert "skipped" in run(env={**base, "WBVAE_IMAGE_CHECK": "0"})
    no_disk = {**base, "WBVAE_IMAGE_MIN_FREE_GB": str(10**9)}
    assert "NOT RUN" in run(env=no_disk) and "RAN" not in run(env=no_disk)
    assert "RAN" in run(env={**no_disk, "WBVAE_IMAGE_CHECK": "1"})  # forced: it runs (and fails for the disk)


def test_the_image_user_has_its_group_in_every_stage_that_runs_as_it():
    for name, stage in dockerfile_stages().items():
        users = [rest for kind, rest in stage["steps"] if kind == "USER"]
        if not users:
            continue
        uid, _, gid = users[-1].partition(":")
        runs = " ".join(rest for kind, rest in stage["steps"] if kind == "RUN")
        assert re.search(rf"groupadd\b[^&]*--gid {gid}\b", runs), f"stage {name}: USER {users[-1]} but no group {gid}"
        assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*--gid {gid}\b", runs), f"stage {name}: no user {uid}"


def test_the_lock_has_an_image_section_of_cuda_pins_beyond_the_rest():
    text = (REPO / "requirements.lock").read_text()
    assert IMAGE_SECTION in text, "requirements.lock has no image section (run `make lock`)"
    main, image = text.split(IMAGE_SECTION, 1)
    names = [line.split("==")[0] for line in image.splitlines()[1:] if line and not line.startswith("#")]
    assert names == sorted(names) and names, names
    assert any(n.startswith("nvidia-") for n in names) and "triton" in names, names
    main_names = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in main.splitlines() if "==" in line}
    assert not main_names & set(names), "pinned twice"
    assert len(lock_pins()) == len(main_names) + len(names)
