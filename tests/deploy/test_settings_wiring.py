"""One source of settings for every way of running the service: each field of ``app.settings.Settings``
is wired into docker-compose.yml, listed in .env.example and in the Kubernetes ConfigMap
(deploy/k8s/base/settings.env), with its default where a value is written down.

A setting added to app/settings.py fails these tests until it is wired everywhere (as
tests/test_readme.py does for the README's table); a default changed there fails them until the
files that repeat it follow.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from pydantic import TypeAdapter

from app.settings import Settings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
K8S_BASE = REPO / "deploy" / "k8s" / "base"

# Set by docker-compose.yml itself, as the container needs them; not passed from .env or the shell.
COMPOSE_FIXED = {"host", "port", "checkpoint", "device"}
# In the ConfigMap with a value other than the default, on purpose (a GPU per pod: fail fast without it).
K8S_NOT_DEFAULT = {"device": "cuda"}
# In the ConfigMap as a comment only: the default is the checkpoint inside the image, no value to write.
K8S_COMMENTED = {"checkpoint"}

# docker-compose.yml's own variables (ports, the checkpoint folder, the image tag), not settings.
COMPOSE_VARIABLES = {
    "WBVAE_PUBLISHED_PORT",
    "WBVAE_TLS_PUBLISHED_PORT",
    "WBVAE_CHECKPOINT_DIR",
    "WBVAE_CHECKPOINT_FILE",
    "WBVAE_VERSION",
}

SETTINGS = Settings.model_fields


def env_var(name: str) -> str:
    return f"WBVAE_{name.upper()}"


def parse(name: str, value: str):
    """A written value as the service would read it (pydantic's parsing of the field's type)."""
    return TypeAdapter(SETTINGS[name].annotation).validate_python(value)


def assert_default(name: str, value: str, where: str) -> None:
    assert parse(name, value) == SETTINGS[name].default, (
        f"{where}: {env_var(name)}={value}, but the default is {SETTINGS[name].default!r}"
    )


def env_lines(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(KEY=VALUE lines, ``# KEY=VALUE`` lines) of an env file, WBVAE_* keys only."""
    active, commented = {}, {}
    for line in text.splitlines():
        if m := re.fullmatch(r"(WBVAE_\w+)=(.*)", line):
            active[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"#\s?(WBVAE_\w+)=(.*)", line):
            commented[m.group(1)] = m.group(2)
    return active, commented


def unknown(keys) -> list[str]:
    return sorted(k for k in keys if k.removeprefix("WBVAE_").lower() not in SETTINGS)


# ---------------------------------------------------------------------------- compose


@pytest.mark.parametrize("service", ["wbvae", "wbvae-cpu"])
def test_compose_passes_every_setting(service):
    env = yaml.safe_load(COMPOSE.read_text())["services"][service]["environment"]
    missing = [env_var(n) for n in SETTINGS if env_var(n) not in env]
    assert not missing, f"docker-compose.yml ({service}) does not pass {missing}: add them to x-wbvae-settings"
    assert not unknown(k for k in env if k.startswith("WBVAE_")), "settings the service no longer has"
    # Without a value: compose takes it from the shell or .env, else leaves it unset (the service's default).
    fixed = {env_var(n) for n in COMPOSE_FIXED}
    valued = sorted(k for k, v in env.items() if k.startswith("WBVAE_") and v is not None and k not in fixed)
    assert not valued, f"a value in docker-compose.yml hides the one in .env or the shell: {valued}"
    assert env["WBVAE_HOST"] == "0.0.0.0" and env["WBVAE_PORT"] == "8000"
    assert env["WBVAE_CHECKPOINT"] == "/checkpoints/${WBVAE_CHECKPOINT_FILE:-default.pt}"


def test_compose_interpolates_only_settings_and_its_own_variables():
    """A misspelt ${WBVAE_...} would silently fall back to its default."""
    used = set(re.findall(r"\$\{(WBVAE_\w+)", COMPOSE.read_text()))
    assert not unknown(used - COMPOSE_VARIABLES), used


def test_env_example_lists_every_setting_with_its_default():
    text = ENV_EXAMPLE.read_text()
    active, commented = env_lines(text)
    assert not active, f".env.example sets {sorted(active)}: list them commented, with their default"
    expected = [env_var(n) for n in SETTINGS if n not in COMPOSE_FIXED]
    missing = [k for k in expected if k not in commented]
    assert not missing, f".env.example does not list {missing}"
    assert not unknown(set(commented) - COMPOSE_VARIABLES), "settings the service no longer has"
    assert not [env_var(n) for n in COMPOSE_FIXED if env_var(n) in commented], "docker-compose.yml sets these"
    for key, value in commented.items():
        if key in COMPOSE_VARIABLES:
            continue
        assert_default(key.removeprefix("WBVAE_").lower(), value, ".env.example")
    lines = text.splitlines()
    assert "COMPOSE_PROFILES=gpu" in lines and "GRAFANA_ADMIN_PASSWORD=" in lines


def test_env_file_is_not_committed():
    """.env holds the Grafana password (and maybe API keys): gitignored, with .env.example to copy."""
    git = shutil.which("git")
    if git and (REPO / ".git").exists():
        ignored = subprocess.run([git, "check-ignore", "-q", "--no-index", ".env"], cwd=REPO, timeout=30)
        assert ignored.returncode == 0, ".env must be gitignored"
    else:
        assert ".env" in (REPO / ".gitignore").read_text().splitlines()


# ------------------------------------------------------------------------- Kubernetes


def test_kubernetes_configmap_lists_every_setting_with_its_default():
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    (env_file,) = generator["envs"]
    active, commented = env_lines((K8S_BASE / env_file).read_text())
    missing = [env_var(n) for n in SETTINGS if env_var(n) not in active and env_var(n) not in commented]
    assert not missing, f"deploy/k8s/base/{env_file} does not list {missing}"
    assert not unknown([*active, *commented]), "settings the service no longer has"
    assert sorted(commented) == sorted(env_var(n) for n in K8S_COMMENTED), commented
    for key, value in active.items():
        name = key.removeprefix("WBVAE_").lower()
        if name in K8S_NOT_DEFAULT:
            assert value == K8S_NOT_DEFAULT[name], key
        else:
            assert_default(name, value, f"deploy/k8s/base/{env_file}")

    # The pods read it, and the port it names is the one the probes and the Service use.
    deployment = yaml.safe_load((K8S_BASE / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert generator["name"] in [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(active["WBVAE_PORT"]) == ports["http"]
