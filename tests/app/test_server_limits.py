"""The server process's own defences (app/server/protocol.py) against a real ``python -m app`` over loopback:
request-head size and count limits, head/body/idle timeouts, the connection cap, the Server header."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from contextlib import ExitStack

import httpx
import psutil
import pytest
from PIL import Image

from app.server import ConnectionGuard
from bench.server import start_server
from tests import photos

pytestmark = pytest.mark.slow  # server processes

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 2.0
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 20
MAX_CONNECTIONS = 40
HEADROOM = 16  # app.server.protocol.HEALTH_HEADROOM

LIMITS = {
    "WBVAE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "WBVAE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "WBVAE_KEEP_ALIVE_TIMEOUT_S": "1",
    "WBVAE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "WBVAE_MAX_HEADERS": str(MAX_HEADERS),
    "WBVAE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "WBVAE_MIN_BODY_RATE_BYTES_S": "0",  # the body rate and the slow-body eviction: tests/app/test_slow_clients.py
}


@pytest.fixture(scope="module")
def server():
    with start_server(**LIMITS) as s:
        yield s


def _connect(server, timeout: float = 10) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _status(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    return int(m.group(1)) if m else None


def _ready(server) -> None:
    """/readyz answers 200: served, not refused at the cap (how fast is the machine's load, not the server's)."""
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200


def _request(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_server_header_says_nothing_and_date_is_kept(server):
    r = httpx.get(f"{server.url}/livez")
    assert r.status_code == 200
    assert "server" not in r.headers, r.headers.get("server")  # uvicorn's "server: uvicorn" is off
    assert r.headers["date"].endswith(" GMT")


def _head_of_size(size: int, first_line: str, headers: dict[str, str]) -> bytes:
    """A request head of exactly ``size`` bytes (an X-Pad field fills it up)."""
    lines = [first_line, "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    bare = len("\r\n".join(lines)) + len("\r\nX-Pad: ") + 4
    lines.append("X-Pad: " + "p" * (size - bare))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    assert len(head) == size
    return head


def test_head_of_exactly_the_limit_is_served(server):
    """The head is counted to its blank line, even when that line straddles two reads and the body
    follows in the same read: a head of exactly max_header_bytes (and max_headers fields) gets through."""
    photo = photos.save(Image.new("RGB", (64, 48), (180, 120, 90)), "PNG")
    fields = {f"X-Fill-{i}": "v" * 100 for i in range(MAX_HEADERS - 4)}
    fields |= {"Content-Type": "image/png", "Content-Length": str(len(photo))}
    head = _head_of_size(MAX_HEADER_BYTES, "POST /correct HTTP/1.1", fields)
    with _connect(server, timeout=30) as sock:
        sock.sendall(head[:-2])
        time.sleep(0.2)  # two reads: "...\r\n" then "\r\n" + the body
        sock.sendall(head[-2:] + photo)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_head_one_byte_over_the_limit_gets_431(server):
    with _connect(server) as sock:
        sock.sendall(_head_of_size(MAX_HEADER_BYTES + 1, "GET /livez HTTP/1.1", {}))
        response = _read_until_closed(sock)
    assert _status(response) == 431 and b"connection: close" in response
    head, _, body = response.partition(b"\r\n\r\n")
    _assert_security_headers(head)
    assert (
        b"content-type: application/json" in head and b"Header Fields Too Large" in json.loads(body)["detail"].encode()
    )


def _assert_security_headers(head: bytes) -> None:
    """The security headers the app's own answers carry (app.server.security), on an answer of the protocol's own."""
    from app.server import API_SECURITY_HEADERS

    for name, value in API_SECURITY_HEADERS:
        assert b"\r\n%s: %s\r\n" % (name, value) in head + b"\r\n", (name, head)


def test_malformed_request_gets_400_with_the_security_headers(server):
    with _connect(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        response = _read_until_closed(sock)
    assert _status(response) == 400
    _assert_security_headers(response.partition(b"\r\n\r\n")[0])


def test_too_many_header_fields_get_431(server):
    with _connect(server) as sock:
        sock.sendall(_request("/livez", {f"X-{i}": "1" for i in range(MAX_HEADERS + 5)}))
        response = _read_until_closed(sock)
    assert _status(response) == 431


def test_a_50_mb_header_is_cut_after_a_few_kb_and_costs_no_memory(server):
    proc = psutil.Process(server.proc.pid)
    rss_before = proc.memory_info().rss
    total, chunk = 50 * 2**20, b"a" * 65536
    sent, response = 0, b""
    with _connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nX-Huge: ")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the server closed the connection
            pass
        response = _read_until_closed(sock)
    # Cut early: at most what the loopback socket buffers hold in flight, not the 50 MB.
    assert sent < 16 * 2**20, f"{sent / 2**20:.0f} MB of header accepted"
    assert response == b"" or _status(response) == 431, response[:100]
    growth_mb = (proc.memory_info().rss - rss_before) / 2**20
    assert growth_mb < 20, f"RSS grew by {growth_mb:.0f} MB"
    _ready(server)


def test_slowloris_head_is_cut_after_the_header_timeout(server):
    with _connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n")
        sock.settimeout(0.3)
        response = b""
        # Trickle a header byte every 0.3 s: each byte must not restart the clock.
        for _ in range(int(4 * HEADER_TIMEOUT_S / 0.3)):
            try:
                sock.sendall(b"X")
                response += sock.recv(65536)
                break
            except TimeoutError:
                continue
            except OSError:
                break
        sock.settimeout(5)
        response += _read_until_closed(sock)
        took = time.monotonic() - start
    assert _status(response) == 408, response[:100]
    assert HEADER_TIMEOUT_S - 0.2 < took < 4 * HEADER_TIMEOUT_S, took  # cut while the bytes still came
    _assert_security_headers(response.partition(b"\r\n\r\n")[0])


def _cuts(server) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    return {s.labels["reason"]: s.value for s in families["wbvae_connections_cut"].samples if s.name.endswith("_total")}


def test_cuts_are_counted_in_the_metrics_by_reason(server):
    before = _cuts(server)
    assert set(before) >= {"head_too_large", "too_many_headers", "head_timeout", "body_timeout", "cap_refused"}
    with _connect(server) as sock:
        sock.sendall(_head_of_size(MAX_HEADER_BYTES + 1, "GET /livez HTTP/1.1", {}))
        _read_until_closed(sock)
    with _connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n")  # and no more: the head times out
        _read_until_closed(sock)
    after = _cuts(server)
    assert after["head_too_large"] == before["head_too_large"] + 1
    assert after["head_timeout"] == before["head_timeout"] + 1
    assert after["body_timeout"] == before["body_timeout"]


def test_connection_that_sends_nothing_is_closed(server):
    with _connect(server) as sock:
        start = time.monotonic()
        response = _read_until_closed(sock)
        took = time.monotonic() - start
    assert response == b""
    assert HEADER_TIMEOUT_S - 0.2 < took < 4 * HEADER_TIMEOUT_S, took  # not at the default, 10 s


def test_idle_keep_alive_connection_is_closed(server):
    with _connect(server) as sock:
        sock.sendall(_request("/livez"))
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        start = time.monotonic()
        rest = _read_until_closed(sock)
        took = time.monotonic() - start
    assert first.startswith(b"HTTP/1.1 200 ") and rest == b""
    assert 0.8 < took < 5, took  # WBVAE_KEEP_ALIVE_TIMEOUT_S=1, not the default 5 s


def test_body_shorter_than_its_content_length_gets_408(server):
    head = (
        b"POST /correct HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with _connect(server) as sock:
        start = time.monotonic()
        sock.sendall(head + b"x" * 1000)
        response = _read_until_closed(sock)
        took = time.monotonic() - start
    assert _status(response) == 408, response[:100]
    assert took > BODY_TIMEOUT_S - 0.2, took  # and before this socket's 10 s timeout: not at the default, 30 s
    assert "Exception in ASGI application" not in server.output()  # the cut is not logged as a server error


def test_a_slow_but_steady_body_is_not_cut(server):
    """The body timeout is the longest silence, not the whole upload: a body taking 2x the timeout
    in pieces 0.4 s apart is served."""
    photo = photos.save(Image.new("RGB", (64, 48), (180, 120, 90)), "PNG")
    head = (
        b"POST /correct HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(photo)
    )
    pieces = int(2 * BODY_TIMEOUT_S / 0.4) + 2
    step = -(-len(photo) // pieces)
    with _connect(server, timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(head)
        for i in range(pieces):
            time.sleep(0.4)
            sock.sendall(photo[i * step : (i + 1) * step])
        response = _read_until_closed(sock)
        took = time.monotonic() - start
    assert took > 2 * BODY_TIMEOUT_S - 0.5
    assert _status(response) == 200, response[:200]


def test_300_idle_sockets_do_not_lock_out_health_checks(server):
    with ExitStack() as stack:
        idle = [stack.enter_context(_connect(server)) for _ in range(300)]
        time.sleep(0.2)
        _ready(server)
        assert httpx.get(f"{server.url}/livez", timeout=30).status_code == 200
        # Only the cap's worth stay open: the oldest idle ones were closed to make room.
        for sock in idle:
            sock.settimeout(0)
        open_ = sum(_still_open(s) for s in idle)
        assert open_ <= MAX_CONNECTIONS, open_
        assert _still_open(idle[-1]) and not _still_open(idle[0])
        # And the rest go by the header timeout.
        time.sleep(HEADER_TIMEOUT_S + 1)
        assert sum(_still_open(s) for s in idle) == 0
    _ready(server)


def _still_open(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (the socket non-blocking; pending bytes are read)."""
    try:
        while sock.recv(65536):
            pass
        return False  # b"": closed by the server
    except BlockingIOError:
        return True  # nothing (more) to read: still open
    except OSError:
        return False


def test_connection_cap_refuses_with_503_logs_a_warning_and_keeps_health_checks(server):
    """Connections busy with a request are not closed to make room: past the cap the next ones get
    503 (health checks still served, in a small headroom), and the refusals are logged."""
    head = (
        b"POST /correct HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 100000\r\n\r\nxx"
    )
    with ExitStack() as stack:
        busy = []
        for _ in range(MAX_CONNECTIONS):  # a body in progress each: not idle
            sock = stack.enter_context(_connect(server))
            sock.sendall(head)
            busy.append(sock)
        time.sleep(0.2)
        not_health = stack.enter_context(_connect(server))  # inside the headroom: health checks only
        not_health.sendall(_request("/metrics"))
        response = _read_until_closed(not_health)
        assert _status(response) == 503 and b"retry-after: " in response
        _assert_security_headers(response.partition(b"\r\n\r\n")[0])
        over = stack.enter_context(_connect(server))
        over.sendall(_request("/readyz"))
        assert over.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Answered, it is idle: a newcomer takes the place of the connection idle longest (a new one that
        # has not sent its head yet is idle too), never that of one busy with a request.
        newcomers = [stack.enter_context(_connect(server)) for _ in range(HEADROOM + 10)]
        time.sleep(0.2)
        for sock in [*busy, *newcomers, over]:
            sock.settimeout(0)
        assert not _still_open(over)
        assert [_still_open(s) for s in newcomers].count(True) == 1 and _still_open(newcomers[-1])
        assert all(_still_open(s) for s in busy)
    # The busy ones are cut by the body timeout; then everything is back (as soon as the timers have run).
    time.sleep(BODY_TIMEOUT_S)
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/metrics", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "/metrics still refused 30 s after the body timeout"
        time.sleep(0.2)
    while "connection cap of 40 reached" not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.1)
    assert server.output().count("connection cap of 40 reached") <= 2  # one line per window, not per refusal


def test_fd_limit_of_256_lowers_the_cap_and_300_idle_sockets_leave_readyz_answering():
    """The attack report's case: ulimit -n 256 and 300 idle sockets. The cap is fitted to the limit
    (with a warning), the oldest idle sockets are closed, and /readyz answers."""
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); from app.__main__ import main; main()"
    )
    with start_server("-c", code, WBVAE_HEADER_TIMEOUT_S="30") as s, ExitStack() as stack:
        assert "max_connections lowered from 1000 to" in s.output()
        idle = [stack.enter_context(_connect(s)) for _ in range(300)]
        time.sleep(0.2)
        for _ in range(5):
            _ready(s)
        for sock in idle:
            sock.settimeout(0)
        assert sum(_still_open(sock) for sock in idle) < 128  # (256 - 64) / 2 descriptors a connection
        assert s.proc.poll() is None
        assert psutil.Process(s.proc.pid).num_fds() < 256
        assert "Too many open files" not in s.output()


def test_guard_never_closes_a_busy_connection_and_bounds_the_open_ones():
    """ConnectionGuard alone: idle connections make room, busy ones never; past the headroom, refused."""

    class Conn:
        evicted = False
        fresh_since = None  # has sent a request: idle means between requests

        def evict(self):
            self.evicted = True

        def head_begun(self):
            return False

        def unread_bytes(self):
            return 0

        def answer_unsent(self):
            return False

    async def scenario():
        guard = ConnectionGuard(max_connections=2, headroom=1)
        a, b, c, d, e = (Conn() for _ in range(5))
        assert guard.admit(a) == guard.admit(b) == ConnectionGuard.ADMITTED
        guard.busy(a)
        guard.busy(b)
        assert guard.admit(c) == ConnectionGuard.HEALTH_ONLY  # nothing idle: health checks only
        guard.busy(c)
        assert guard.admit(d) == ConnectionGuard.REFUSED  # cap + headroom, all busy
        assert len(guard.open) == 3 and not any(x.evicted for x in (a, b, c))
        guard.idle_again(b)
        guard.idle_again(a)
        assert guard.admit(e) == ConnectionGuard.ADMITTED and b.evicted and not a.evicted  # b idle longest
        assert len(guard.open) == 3

    asyncio.run(scenario())
