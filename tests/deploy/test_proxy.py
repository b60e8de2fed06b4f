"""The reverse proxy of the compose stack (deploy/nginx/nginx.conf) and the Ingress of the Kubernetes base.

- Its limits against the service's settings (app/settings.py defaults) and the Ingress' annotations.
- ``nginx -t`` on the committed file, with only the host names, ports and file paths changed so that it
  runs here (unprivileged or as root) without touching /etc.
- A real nginx in front of a real ``python -m app``: a correction passes with the client's X-Request-ID;
  an invalid or missing id is replaced by nginx's own, which the service logs too; X-Forwarded-For cannot
  be forged; an oversized body (by Content-Length or chunked), an oversized header, a slowloris head, a
  stalled body and a client over its connection cap are all answered by nginx without reaching the service.

nginx comes from Debian's package (.ci/run installs it). Without it the tests that run it skip, and fail
under CI (tests.conftest.require, ``WBVAE_REQUIRE_DATA=1``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from app.settings import MULTIPART_SLACK_BYTES, Settings
from bench.server import free_port, start_server, stop_process
from tests.conftest import REPO, require

NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
INGRESS = REPO / "deploy" / "k8s" / "base" / "ingress.yaml"
COMPOSE = REPO / "docker-compose.yml"

# The running test shortens the slow-client timeouts and the per-address cap, to finish in seconds.
TEST_TIMEOUT_S = 2
TEST_PER_IP = 3

UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


# ---------------------------------------------------------------------------- helpers


def conf_text() -> str:
    """nginx.conf without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.read_text().splitlines())


def directives(name: str) -> list[list[str]]:
    """The arguments of every ``name ...;`` directive of nginx.conf (quotes kept)."""
    return [m.group(1).split() for m in re.finditer(rf"(?m)^\s*{name}\s+([^;{{]*);", conf_text())]


def directive(name: str) -> list[str]:
    (found,) = directives(name)
    return found


def size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert m, value
    return int(m.group(1)) * UNITS[m.group(2)]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[m.group(2)]


def defaults() -> Settings:
    """The settings' defaults, whatever WBVAE_* this shell has set."""
    return Settings.model_construct(**{n: f.default for n, f in Settings.model_fields.items()})


def nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    return require(found, "the nginx command", "apt-get install nginx; .ci/run installs it")


def loopback_config(tmp: Path, upstream_port: int, listen_port: int, overrides: dict[str, str] | None = None) -> Path:
    """nginx.conf made runnable here: the upstream and listen addresses on loopback, the pid file, the logs
    and the temporary folders in ``tmp``, the worker user this process's; ``overrides`` replace the arguments of
    single directives (e.g. a shorter client_header_timeout). Each replaced thing must be there once."""
    text = NGINX_CONF.read_text()

    def replace(pattern: str, repl: str, count: int | None = 1) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == count if count else n > 0, f"{pattern!r} in {NGINX_CONF}: {n} matches"

    replace(r"^user\s+\S+;", "user root root;" if os.geteuid() == 0 else "")
    replace(r"^pid\s+\S+;", f"pid {tmp}/nginx.pid;")
    replace(r"/var/cache/nginx/", f"{tmp}/", count=None)
    replace(r"^error_log\s+/dev/stderr\b", f"error_log {tmp}/error.log")
    replace(r"^(\s*access_log\s+)/dev/stdout\b", rf"\g<1>{tmp}/access.log")
    replace(r"^(\s*server\s+)wbvae:8000\b", rf"\g<1>127.0.0.1:{upstream_port}")
    replace(r"^(\s*listen\s+)80\b", rf"\g<1>127.0.0.1:{listen_port}")
    for name, args in (overrides or {}).items():
        replace(rf"^(\s*{name}\s+)[^;]*;", rf"\g<1>{args};")
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def nginx_test(conf: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [nginx(), "-t", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def running_nginx(conf: Path, tmp: Path, port: int):
    log = (tmp / "nginx.out").open("w+b")
    proc = subprocess.Popen(
        [nginx(), "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log"), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited {proc.returncode}: {(tmp / 'error.log').read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/nginx-livez", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "nginx never answered"
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc, timeout=15)
        log.close()


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 150, 90)).save(buf, format="PNG")
    return buf.getvalue()


def raw_exchange(port: int, head: bytes, body_chunks=(), timeout: float = 10) -> tuple[bytes, float]:
    """Send ``head`` (and the chunks) on a fresh socket, then read the answer: until its declared length
    has arrived or the proxy closes. The bytes read and the seconds from the end of sending until then.
    A send refused because the proxy already answered and closed ends the sending."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sent = time.monotonic()
        out = b""
        try:
            while not _complete(out) and (chunk := sock.recv(65536)):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out, time.monotonic() - sent


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep and length and len(body) >= int(length.group(1)))


def status_of(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(m.group(1)) if m else None


def header_of(response: bytes, name: str) -> list[str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return [v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:]) if k.lower() == name]


# ----------------------------------------------------------- the file, without running it


def test_proxy_limits_match_the_service_settings():
    s = defaults()
    body = size(directive("client_max_body_size")[0])
    assert body >= s.max_upload_bytes + MULTIPART_SLACK_BYTES, "the service, not the proxy, answers at its limit"
    assert body <= s.max_upload_bytes + 4 * 1024**2, "a limit far above the service's only wastes the proxy's disk"
    count, each = directive("large_client_header_buffers")
    assert int(count) * size(each) <= s.max_header_bytes, "a head the service refuses is refused at the proxy"
    assert size(directive("client_header_buffer_size")[0]) <= 4096
    assert seconds(directive("client_header_timeout")[0]) <= s.header_timeout_s
    assert seconds(directive("client_body_timeout")[0]) <= s.body_timeout_s
    assert seconds(directive("send_timeout")[0]) <= 60
    clients, upstream = directives("keepalive_timeout")  # http {}, then upstream {}
    assert seconds(clients[0]) <= 30
    # nginx must drop an idle upstream connection before the service does, or it may reuse one the
    # service has just closed (a 502).
    assert seconds(upstream[0]) < s.keep_alive_timeout_s
    assert seconds(directive("proxy_read_timeout")[0]) >= s.request_timeout_s + 10, "the service's 504 comes first"
    assert directive("server_tokens") == ["off"]
    assert directive("proxy_request_buffering") == ["on"], "slow uploads stay at the proxy"
    zones = {args[0] for args in directives("limit_conn")}
    assert len(zones) == 2, "a cap per client address and one in all"
    assert ["$binary_remote_addr", "zone=wbvae_per_ip:10m"] in directives("limit_conn_zone")
    headers = {args[0].lower(): args[1:] for args in directives("proxy_set_header")}
    assert headers["x-request-id"] == ["$wbvae_request_id"]
    assert headers["x-forwarded-for"] == ["$remote_addr"], "the edge proxy overwrites a forged header"
    assert "$request_id" in conf_text(), "an id is generated when the client sends none"


def test_ingress_matches_the_proxy():
    ingress = yaml.safe_load(INGRESS.read_text())
    notes = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in ingress["metadata"]["annotations"].items()}
    assert size(notes["proxy-body-size"]) == size(directive("client_max_body_size")[0])
    assert notes["proxy-request-buffering"] == directive("proxy_request_buffering")[0]
    assert notes["proxy-buffering"] == directive("proxy_buffering")[0]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout", "proxy-connect-timeout"):
        assert seconds(notes[timeout]) == seconds(directive(timeout.replace("-", "_"))[0]), timeout
    per_ip = next(args for args in directives("limit_conn") if args[0] == "wbvae_per_ip")
    assert notes["limit-connections"] == per_ip[1]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    service = yaml.safe_load((REPO / "deploy/k8s/base/service.yaml").read_text())
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert "tls:" in INGRESS.read_text(), "the TLS section is documented"


def test_compose_publishes_the_proxy_only():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    proxy = services["proxy"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-alpine)?", proxy["image"]), "the official image, a pinned tag"
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert [p.rsplit(":", 1)[1] for p in proxy["ports"]] == ["80"]
    assert "${WBVAE_PUBLISHED_PORT:-8000}" in proxy["ports"][0]
    for name in ("wbvae", "wbvae-cpu"):
        assert "ports" not in services[name], f"{name} is reached through the proxy only"
        assert proxy["depends_on"][name]["required"] is False, "either profile's service will do"
    assert "/var/cache/nginx" in proxy["tmpfs"] and proxy["read_only"] is True
    assert "/nginx-livez" in " ".join(proxy["healthcheck"]["test"])


def test_nginx_accepts_the_config(tmp_path):
    conf = loopback_config(tmp_path, upstream_port=free_port(), listen_port=free_port())
    proc = nginx_test(conf, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -------------------------------------------------------- a real nginx before a real service


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(proxy port, service) with nginx running the committed file, the slow-client timeouts and the
    per-address cap shortened."""
    nginx()
    tmp = tmp_path_factory.mktemp("nginx")
    with start_server(WBVAE_LOG_LEVEL="info") as server:
        port = free_port()
        overrides = {
            "client_header_timeout": f"{TEST_TIMEOUT_S}s",
            "client_body_timeout": f"{TEST_TIMEOUT_S}s",
            "limit_conn wbvae_per_ip": str(TEST_PER_IP),
        }
        conf = loopback_config(tmp, int(server.url.rsplit(":", 1)[1]), port, overrides)
        check = nginx_test(conf, tmp)
        assert check.returncode == 0, check.stdout + check.stderr
        with running_nginx(conf, tmp, port):
            yield port, server


def service_log(server) -> list[dict]:
    """The service's JSON log lines so far."""
    out = []
    for line in server.output().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def logged(server, request_id: str, wait: float = 5) -> list[dict]:
    """The service's access-log lines for ``request_id``, waiting up to ``wait`` seconds for one. Checks
    that a request never got there wait less: the proxy has answered by then, the service would have too."""
    deadline = time.monotonic() + wait
    while True:
        lines = [e for e in service_log(server) if e.get("request_id") == request_id and e.get("msg") == "request"]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.mark.slow
def test_readyz_answers_through_the_proxy(stack):
    port, _ = stack
    r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    assert r.headers["server"] == "nginx", "server_tokens off: no version"


@pytest.mark.slow
def test_a_correction_passes_with_the_clients_request_id(stack):
    port, server = stack
    r = httpx.post(
        f"http://127.0.0.1:{port}/correct",
        files={"file": ("small.png", png_bytes(), "image/png")},
        headers={"X-Request-ID": "proxy-test.1", "X-Forwarded-For": "203.0.113.9"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300] + server.output()[-3000:]
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    assert r.headers.get_list("x-request-id") == ["proxy-test.1"], "once, the client's"
    (entry,) = logged(server, "proxy-test.1")  # the service got the id, it was not only added on the way back
    assert entry["path"] == "/correct" and entry["status"] == 200
    # The proxy replaced the forged X-Forwarded-For with the address it saw.
    assert entry["client"] == "127.0.0.1", entry


@pytest.mark.slow
@pytest.mark.parametrize("sent", [None, "not a valid id!"])
def test_a_missing_or_invalid_request_id_is_generated_by_the_proxy(stack, sent):
    port, server = stack
    headers = {"X-Request-ID": sent} if sent else {}
    r = httpx.get(f"http://127.0.0.1:{port}/openapi.json", headers=headers, timeout=10)
    assert r.status_code == 200
    (rid,) = r.headers.get_list("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid  # nginx's $request_id
    assert logged(server, rid), "the service logs the proxy's id"


@pytest.mark.slow
def test_an_oversized_body_is_refused_at_the_proxy(stack):
    port, server = stack
    limit = size(directive("client_max_body_size")[0])
    head = (
        f"POST /correct HTTP/1.1\r\nHost: wbvae\r\nX-Request-ID: too-big\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    response, _ = raw_exchange(port, head)
    assert status_of(response) == 413, response[:300]
    assert header_of(response, "server") == ["nginx"] and header_of(response, "x-request-id") == ["too-big"]
    assert not logged(server, "too-big", wait=0.5), "the service never saw it"


@pytest.mark.slow
def test_an_oversized_chunked_body_is_refused_at_the_proxy(stack):
    port, server = stack
    limit = size(directive("client_max_body_size")[0])
    head = (
        b"POST /correct HTTP/1.1\r\nHost: wbvae\r\nX-Request-ID: too-big-chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = 1024 * 1024
    chunk = f"{piece:x}\r\n".encode() + b"\0" * piece + b"\r\n"
    response, _ = raw_exchange(port, head, [chunk] * (limit // piece + 2) + [b"0\r\n\r\n"], timeout=30)
    assert status_of(response) == 413, response[:300]
    assert not logged(server, "too-big-chunked", wait=0.5)


@pytest.mark.slow
def test_an_oversized_header_is_refused_at_the_proxy(stack):
    port, server = stack
    count, each = directive("large_client_header_buffers")
    r = httpx.get(
        f"http://127.0.0.1:{port}/readyz",
        headers={"X-Request-ID": "big-header", "X-Padding": "a" * (size(each) + 1)},
        timeout=10,
    )
    assert r.status_code in (400, 431, 494), r.status_code
    assert r.headers["server"] == "nginx"
    assert not logged(server, "big-header", wait=0.5)


@pytest.mark.slow
def test_a_slowloris_head_is_cut_after_the_header_timeout(stack):
    port, _ = stack
    head = b"GET /readyz HTTP/1.1\r\nHost: wbvae\r\nX-Slow: "  # ...and nothing more
    response, waited = raw_exchange(port, head, timeout=TEST_TIMEOUT_S + 10)
    assert TEST_TIMEOUT_S - 0.5 <= waited <= TEST_TIMEOUT_S + 5, waited
    assert response == b"" or status_of(response) == 408, response[:200]


@pytest.mark.slow
def test_a_stalled_body_is_cut_at_the_proxy_and_never_reaches_the_service(stack):
    port, server = stack
    head = b"POST /correct HTTP/1.1\r\nHost: wbvae\r\nX-Request-ID: stalled-body\r\nContent-Length: 1000\r\n\r\n"
    response, waited = raw_exchange(port, head, [b"x" * 10], timeout=TEST_TIMEOUT_S + 10)
    assert TEST_TIMEOUT_S - 0.5 <= waited <= TEST_TIMEOUT_S + 5, waited
    assert response == b"" or status_of(response) == 408, response[:200]
    assert not logged(server, "stalled-body", wait=0.5), "request buffering: the service saw nothing"


@pytest.mark.slow
def test_the_connection_cap_per_client_address(stack):
    port, server = stack
    head = b"POST /correct HTTP/1.1\r\nHost: wbvae\r\nContent-Length: 1000\r\n\r\nxx"
    with ExitStack() as held:
        for _ in range(TEST_PER_IP):  # uploads in progress count against the cap
            sock = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(head)
        time.sleep(0.3)
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": "over-cap"}, timeout=10)
        assert r.status_code == 429, r.status_code
        assert r.headers["x-request-id"] == "over-cap"
    assert not logged(server, "over-cap", wait=0.5)
