"""The HTTP server: uvicorn configured with limits and timeouts it does not have on its own.

uvicorn's httptools protocol has no limit on the request head (httptools concatenates a header as it
arrives, so a 200 MB header costs quadratic time and its size in memory), no timeout on a connection
that never sends a complete head (slowloris) or stalls in its body (a body shorter than its
Content-Length), and its ``limit_concurrency`` counts idle connections, so idle sockets lock out the
health checks until they go. :class:`GuardedProtocol` (a subclass of uvicorn's ``HttpToolsProtocol``,
passed to uvicorn as the ``http`` protocol class) adds, per connection:

- a head limit, checked *before* the bytes reach the parser: the bytes up to the blank line that ends
  the head are counted, and beyond ``max_header_bytes`` (or ``max_headers`` fields) the answer is 431
  and the connection is closed, so at most one socket read (256 KiB) past the limit is ever held;
- one timer: from the connection's start (and from the first byte of each later request on a
  keep-alive connection) to the end of the head, ``header_timeout_s`` (408 then close; an idle
  connection that sent nothing is just closed); then, while a body is being received, at most
  ``body_timeout_s`` without a byte, less than ``min_body_rate_bytes_s`` averaged over any
  ``body_rate_window_s`` (the first window is the grace period; a fast start buys no time for a trickle
  after it), or ``body_deadline_s`` in all (408 before the response, else close). Time the server itself
  does not read (its buffer full while the app is busy, a client waiting for ``100 Continue``) does
  not count. Between requests uvicorn's own keep-alive timeout applies;
- a send timeout: an answer over the write buffer's high-water mark of which the client takes no byte
  for ``send_timeout_s`` is dropped and the connection aborted (nginx's ``send_timeout``); the bytes such
  answers hold are counted (``ConnectionGuard.unsent_bytes``) for ``app.server.middleware.AnswerBudget``;
- a connection cap (:class:`ConnectionGuard`): at ``max_connections`` open connections a new one
  first closes the connection that has been idle longest with nothing of a request in progress (no
  byte of a head read or waiting in its socket, no answer being sent, not in its first second with
  nothing sent yet), else the one whose request body has come slowest, when under the minimum
  rate (408 and close), else the oldest head in progress or, last, a connection in its first second
  (503); if every connection is busy otherwise, a few more are let in for
  the health paths only (503 for anything else), and past those the new connection gets a 503 at
  once. The cap's 503s close with a linger (what the client still sends is read and dropped a while),
  so a request that has arrived is always answered. The cap is lowered, with a warning, to what the
  process's file-descriptor limit allows (the soft limit is first raised towards the hard one). Cap
  events are logged as one warning per ``LOG_WINDOW_S`` with their counts, timeouts and refused heads
  as one info line.

These are transport-level concerns, so they live in the protocol, not in ASGI middleware: the timers
see the bytes (and the reads the server paused), and the head is refused before it is parsed. A request
cut mid-body ends quietly as status 499 (``app.server.middleware.RequestMetrics``). uvicorn's "server: uvicorn"
header is off; the date is kept. Every answer, the protocol's own included, carries the security headers of
:mod:`app.server.security`.

:class:`GuardedProtocol` overrides and calls private parts of uvicorn's ``HttpToolsProtocol``, so it holds only
for the releases in ``WRITTEN_FOR``: ``pyproject.toml`` and ``requirements.lock`` pin exactly those, the server warns
at start-up when others are installed, and ``tests/app/test_server_pins.py`` fails.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.metadata
import json
import logging
import math
import resource
import struct
import sys
import termios
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.metrics import Metrics
from app.server.middleware import OneLineStartupFailure, UnsentAnswers, send_json
from app.server.security import API_SECURITY_HEADERS, SecurityHeaders
from app.settings import Settings

log = logging.getLogger("wbvae.server")

WRITTEN_FOR = {"uvicorn": "0.54.0", "httptools": "0.9.0"}  # see the module docstring; move with pyproject.toml

HEALTH_PATHS = frozenset({"/livez", "/healthz", "/readyz"})
HEALTH_HEADROOM = 16  # connections let in past the cap, for the health paths, when none is idle
FDS_PER_CONNECTION = 2  # the socket, and an upload spooled to a temporary file
FD_RESERVE = 64  # the checkpoint, logs, the event loop's own descriptors, libraries
LOG_WINDOW_S = 10.0
FRESH_GRACE_S = (
    1.0  # a new connection that has sent nothing yet is closed for the cap before this only as a last resort
)
LINGER_S = 1.0  # after a 503 for the cap, what the client still sends is read and dropped this long,
LINGER_BYTES = 64 * 1024  # and up to this much,
LINGER_MAX = 64  # by this many connections at once at most (their descriptors are reserved beside the cap's)
READ_SIZE = 256 * 1024  # the most one socket read hands the protocol (asyncio and uvloop alike)


@dataclass(frozen=True)
class ServerLimits:
    """What :class:`GuardedProtocol` enforces (from :class:`Settings`, the cap fitted to the fd limit)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    keep_alive_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    min_body_rate_bytes_s: int = 16 * 1024
    body_rate_window_s: float = 10.0
    body_deadline_s: float = 300.0
    max_connections: int = 1000
    retry_after_s: int = 2
    send_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            min_body_rate_bytes_s=settings.min_body_rate_bytes_s,
            body_rate_window_s=settings.body_rate_window_s,
            body_deadline_s=settings.body_deadline_s,
            max_connections=fit_to_fd_limit(settings.max_connections),
            retry_after_s=settings.retry_after_s,
            send_timeout_s=settings.send_timeout_s,
        )


def fit_to_fd_limit(max_connections: int) -> int:
    """``max_connections``, lowered (with a warning) to what RLIMIT_NOFILE allows, after raising the
    soft limit towards the hard one so that the cap plus its headroom never runs the process out of
    descriptors (out of them, accept() fails and uvicorn stops taking connections for a while)."""
    want = FD_RESERVE + LINGER_MAX + FDS_PER_CONNECTION * (max_connections + HEALTH_HEADROOM)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):  # pragma: no cover - not allowed here
                pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    fits = (soft - FD_RESERVE - LINGER_MAX) // FDS_PER_CONNECTION - HEALTH_HEADROOM
    if fits < max_connections:
        fits = max(fits, 1)
        log.warning(
            "max_connections lowered from %d to %d: the file-descriptor limit is %d (ulimit -n)",
            max_connections,
            fits,
            soft,
        )
        return fits
    return max_connections


# What the limits cut, by the bounded ``reason`` label of ``wbvae_connections_cut_total``, and as the log says it.
CUT_REASONS = {
    "head_too_large": "heads over max_header_bytes (431)",
    "too_many_headers": "heads over max_headers (431)",
    "malformed": "malformed requests (400)",
    "head_timeout": "heads not complete in time (408)",
    "silent_connection": "connections idle from the start (closed)",
    "body_timeout": "bodies stalled (408)",
    "body_too_slow": "bodies under the minimum rate (408)",
    "body_deadline": "bodies over the body deadline (408)",
    "cap_closed_slow_body": "bodies under the minimum rate closed to make room (408)",
    "cap_closed_idle": "idle connections closed",
    "cap_closed_head": "heads in progress answered 503 to make room",
    "send_timeout": "answers unread for the send timeout (closed, answer dropped)",
    "cap_refused": "connections refused",
    "cap_not_health_check": "requests refused with 503 (over the cap, not a health check)",
}


class _Tally:
    """Counts events and logs them as one line per window (the first at once), never one per event:
    an attack must not turn into a flood of log lines. ``context`` adds fields to the message."""

    def __init__(
        self,
        level: int,
        text: str,
        context: Callable[[], dict[str, Any]] = dict,
        window_s: float = LOG_WINDOW_S,
        observe: Callable[[str], None] | None = None,
    ):
        self.observe = observe  # each event as it happens (the metrics), besides the log line per window
        self.level = level
        self.text = text
        self.context = context
        self.window_s = window_s
        self.counts: Counter[str] = Counter()
        self.last = -math.inf
        self.flush_pending = False

    def add(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.observe is not None:
            self.observe(kind)
        if self.flush_pending:
            return
        loop = asyncio.get_running_loop()
        wait = self.last + self.window_s - loop.time()
        if wait <= 0:
            self.flush()
        else:
            self.flush_pending = True
            loop.call_later(wait, self.flush)

    def flush(self) -> None:
        self.flush_pending = False
        self.last = asyncio.get_running_loop().time()
        if self.counts:
            counts = ", ".join(f"{n} {CUT_REASONS[kind]}" for kind, n in sorted(self.counts.items()))
            log.log(self.level, self.text, {"counts": counts, "window": self.window_s, **self.context()})
            self.counts.clear()


@dataclass
class ConnectionGuard:
    """The open connections of one server, and the idle ones among them, oldest first."""

    max_connections: int
    headroom: int = HEALTH_HEADROOM
    observe: Callable[[str], None] | None = None
    min_body_rate: float = 0.0  # bytes/s; a body below it is closed before a new connection is refused (0: never)
    open: set[GuardedProtocol] = field(default_factory=set)
    idle: dict[GuardedProtocol, None] = field(default_factory=dict)  # insertion order: idle longest first
    heads: dict[GuardedProtocol, None] = field(default_factory=dict)  # a head begun, not complete: oldest first
    receiving: set[GuardedProtocol] = field(default_factory=set)  # busy with a request whose body is arriving
    sending: set[GuardedProtocol] = field(default_factory=set)  # an answer over the write buffer's high-water mark
    lingering: int = 0  # connections closing after a 503 for the cap, reading what their client still sends
    events: _Tally = field(init=False)
    ADMITTED: ClassVar[str] = "admitted"
    HEALTH_ONLY: ClassVar[str] = "health only"
    REFUSED: ClassVar[str] = "refused"

    def __post_init__(self) -> None:
        self.events = _Tally(
            logging.WARNING,
            "connection cap of %(cap)d reached (%(open)d open): %(counts)s in the last %(window)g s",
            lambda: {"cap": self.max_connections, "open": len(self.open)},
            observe=self.observe,
        )

    def admit(self, conn: GuardedProtocol) -> str:
        """Room for ``conn`` at the cap: the connection idle longest is closed, else the slowest body under the
        minimum rate (408), else the oldest head in progress, else the oldest connection in its first
        ``FRESH_GRACE_S`` that has sent nothing yet (503: its request may be on its way). A request that has
        begun to arrive, or may have, is always answered."""
        verdict = self.ADMITTED
        if len(self.open) >= self.max_connections:
            now = asyncio.get_running_loop().time()
            victim = self.idle_victim(opened_before=now - FRESH_GRACE_S)
            slow = None if victim is not None else self.slowest_body()
            head = None if victim is not None or slow is not None else next(iter(self.heads), None)
            if victim is None and slow is None and head is None:
                head = self.idle_victim(opened_before=math.inf)
            if victim is not None:
                self.forget(victim)
                victim.evict()
                self._note("cap_closed_idle")
            elif slow is not None:
                self.forget(slow)
                slow.evict_slow_body()
                self._note("cap_closed_slow_body")
            elif head is not None:
                self.forget(head)
                head.evict_head()
                self._note("cap_closed_head")
            elif len(self.open) < self.max_connections + self.headroom:
                verdict = self.HEALTH_ONLY
            else:
                self._note("cap_refused")
                return self.REFUSED
        self.open.add(conn)
        self.idle[conn] = None
        return verdict

    def idle_victim(self, opened_before: float) -> GuardedProtocol | None:
        """The connection idle longest with nothing of a request in progress: no byte of a next request read or
        waiting in the socket, no answer still being sent, and, if it has not sent a request yet, opened before
        ``opened_before`` (its first request may be on its way). One found with bytes waiting becomes a head in
        progress."""
        for conn in list(self.idle):
            if conn.fresh_since is not None and conn.fresh_since >= opened_before:
                continue
            if conn.head_begun() or conn.unread_bytes():
                self.head_started(conn)
            elif not conn.answer_unsent():
                return conn
        return None

    def head_started(self, conn: GuardedProtocol) -> None:
        if self.idle.pop(conn, False) is None:
            self.heads[conn] = None

    def unsent_bytes(self) -> int:
        """Bytes of answers written but not yet sent, over the connections past their write buffer's high water."""
        return sum(conn.transport.get_write_buffer_size() for conn in self.sending)

    def slowest_body(self) -> GuardedProtocol | None:
        """The connection whose request body has come slowest so far, if under ``min_body_rate``."""
        if not self.min_body_rate or not self.receiving:
            return None
        now = asyncio.get_running_loop().time()
        conn = min(self.receiving, key=lambda c: c.body_rate(now))
        return conn if conn.body_rate(now) < self.min_body_rate else None

    def _note(self, kind: str) -> None:
        self.events.add(kind)

    def note_health_only_refusal(self) -> None:
        self._note("cap_not_health_check")

    def busy(self, conn: GuardedProtocol) -> None:
        self.idle.pop(conn, None)
        self.heads.pop(conn, None)

    def idle_again(self, conn: GuardedProtocol) -> None:
        if conn in self.open:
            self.idle.pop(conn, None)
            self.idle[conn] = None  # to the end: idle for the shortest time

    def forget(self, conn: GuardedProtocol) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)
        self.heads.pop(conn, None)
        self.receiving.discard(conn)
        self.sending.discard(conn)


class _TooManyHeaders(Exception):
    pass


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head limit, head and body timeouts and a connection cap.
    Made per server by :func:`protocol_class`, which sets ``limits``, ``guard`` and ``defences``."""

    limits: ClassVar[ServerLimits]
    guard: ClassVar[ConnectionGuard]
    defences: ClassVar[_Tally]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]  # float
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # between the end of one request's body and the end of the next head
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle two reads
        self._in_body = False
        self._body_activity = 0.0
        self._body_start = 0.0  # when the head ended
        self._body_bytes = 0
        self._window_start = 0.0  # the body rate's current window
        self._window_bytes = 0
        self._health_only = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._unsent = 0  # the write buffer at the last check of the send timeout
        self._send_progress = 0.0  # when the write buffer last shrank
        self._fd = -1
        self.fresh_since: float | None = None  # when it opened, until its first request head begins
        self._lingering = 0  # bytes still to read and drop before closing (see _linger)
        self._lingered = False

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        self.fresh_since = self.loop.time()
        verdict = self.guard.admit(self)
        if verdict == ConnectionGuard.REFUSED:
            self._reply_and_close(503, "Service Unavailable: too many connections", retry=True, linger=True)
            return
        self._health_only = verdict == ConnectionGuard.HEALTH_ONLY
        self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self._lingered:
            self.guard.lingering -= 1
            self._lingered = False
        self._cancel_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a new connection (this one had no request in progress)."""
        self._cancel_timer()
        self.transport.close()

    def evict_head(self) -> None:
        """Closed to make room for a new connection: its request head had begun (or was waiting unread), so it is
        answered 503 rather than dropped."""
        self._reply_and_close(503, "Service Unavailable: too many connections", retry=True, linger=True)

    def head_begun(self) -> bool:
        return self._awaiting_head and self._head_bytes > 0

    def unread_bytes(self) -> int:
        """Bytes the client has sent that the server has not read yet (in the socket's receive queue)."""
        if self._fd < 0:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    def answer_unsent(self) -> bool:
        """Whether an answer is still being written: the app's, or bytes of it waiting in the write buffer."""
        cycle = self.cycle
        return (cycle is not None and not cycle.response_complete) or self.transport.get_write_buffer_size() > 0

    def evict_slow_body(self) -> None:
        """Closed to make room for a new connection: its request body was the slowest, under the minimum rate."""
        self._reply_and_close(408, "Request Timeout: the request body arrived too slowly")

    def body_rate(self, now: float) -> float:
        """Bytes a second of the request body since its head ended (the first second counted as one)."""
        return self._body_bytes / max(now - self._body_start, 1.0)

    # -- bytes in ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering -= min(len(data), self._lingering)
            if not self._lingering:
                self.transport.close()
            return
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self.fresh_since = None
            self.guard.head_started(self)
            if self._timer is None:  # the first byte of a later request: its head's clock starts
                self._arm(self.limits.header_timeout_s, self._head_timed_out)
            if not self._head_fits(data):
                self.defences.add("head_too_large")
                self._reply_and_close(431, "Request Header Fields Too Large")
                return
        elif self._in_body:
            self._body_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No WebSocket here (ws="none"): the request is answered like any other, then the connection
            # closes (uvicorn would log two warnings per such request).
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self.defences.add("too_many_headers")
                self._reply_and_close(431, "Request Header Fields Too Large")
            else:
                self.defences.add("malformed")
                self._reply_and_close(400, "Invalid HTTP request received.")

    def _head_fits(self, data: bytes) -> bool:
        """Count the bytes of ``data`` up to the blank line that ends the head; False past the limit."""
        found = data.find(b"\r\n\r\n")
        end: int | None = found if found >= 0 else None  # where the blank line starts, in data
        if self._tail:
            joint = (self._tail + data[:3]).find(b"\r\n\r\n")
            if joint >= 0:  # it began in the previous read
                end = joint - len(self._tail)
        if end is None:
            self._head_bytes += len(data)
            self._tail = (self._tail + data[-3:])[-3:]
        else:
            self._head_bytes += end + 4
        return self._head_bytes <= self.limits.max_header_bytes

    # -- bytes out -----------------------------------------------------------------------------
    def pause_writing(self) -> None:
        """The write buffer passed its high-water mark: the send timeout's clock runs while it does not shrink."""
        super().pause_writing()
        self.guard.sending.add(self)
        self._unsent = self.transport.get_write_buffer_size()
        self._send_progress = self.loop.time()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(min(1.0, self.limits.send_timeout_s), self._send_check)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.guard.sending.discard(self)
        self._cancel_send_timer()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_check(self) -> None:
        """No byte of the answer taken by the client for ``send_timeout_s`` (nginx's ``send_timeout``): the
        connection is aborted and the answer's bytes freed."""
        self._send_timer = None
        if self not in self.guard.sending:
            return
        now, unsent = self.loop.time(), self.transport.get_write_buffer_size()
        if unsent < self._unsent:
            self._send_progress = now
        self._unsent = unsent
        if now - self._send_progress >= self.limits.send_timeout_s:
            self.defences.add("send_timeout")
            self.guard.forget(self)
            self.transport.abort()  # close() would keep the buffer until it is sent
            return
        left = self._send_progress + self.limits.send_timeout_s - now
        self._send_timer = self.loop.call_later(min(1.0, max(left, 0.01)), self._send_check)

    # -- parser callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_headers:
            raise _TooManyHeaders()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self._awaiting_head = False
        self._head_bytes = 0
        self._tail = b""
        self.guard.busy(self)
        if self._health_only and httptools.parse_url(self.url).path.decode("latin-1") not in HEALTH_PATHS:
            self.guard.note_health_only_refusal()
            self.app = _over_capacity(self.limits.retry_after_s)
        super().on_headers_complete()
        self._in_body = True
        self._body_activity = self._body_start = self._window_start = self.loop.time()
        self._body_bytes = self._window_bytes = 0
        self.guard.receiving.add(self)
        self._arm(min(self.limits.body_timeout_s, self._next_rate_check()), self._body_check)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._window_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self.guard.receiving.discard(self)
        self._awaiting_head = True
        self._cancel_timer()
        if self.cycle is not None and self.cycle.response_complete and not self.transport.is_closing():
            # Answered before the body was all in (413, 401): the keep-alive timer uvicorn armed then was
            # cancelled by the body's bytes, so arm it again.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:  # not a pipelined request started just now
            self.guard.idle_again(self)

    # -- timers --------------------------------------------------------------------------------
    def _arm(self, delay: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The app is still answering the previous request; the next (pipelined) head can wait for it.
            self._arm(self.limits.header_timeout_s, self._head_timed_out)
            return
        if self._head_bytes:
            self.defences.add("head_timeout")
            self._reply_and_close(408, "Request Timeout: the request head did not arrive in time")
        else:
            self.defences.add("silent_connection")
            self.transport.close()

    def _next_rate_check(self) -> float:
        """Seconds to the end of the body rate's window (to the deadline when the rate is off)."""
        if not self.limits.min_body_rate_bytes_s:
            return self._body_start + self.limits.body_deadline_s - self.loop.time()
        return self._window_start + self.limits.body_rate_window_s - self.loop.time()

    def _body_check(self) -> None:
        """The body's clocks: its silence (``body_timeout_s``), its rate over each window and its deadline."""
        self._timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        limits, cycle = self.limits, self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The server is not reading: the client cannot be late; its rate is measured afresh once it reads.
            self._body_activity = self._window_start = now
            self._window_bytes = 0
        cut, message = None, ""
        if now - self._body_start >= limits.body_deadline_s:
            cut, message = "body_deadline", f"the request body took over {limits.body_deadline_s:g} s"
        elif now - self._body_activity >= limits.body_timeout_s:
            cut, message = "body_timeout", "the request body stalled"
        elif limits.min_body_rate_bytes_s and now - self._window_start >= limits.body_rate_window_s:
            if self._window_bytes < limits.min_body_rate_bytes_s * (now - self._window_start):
                cut, message = "body_too_slow", "the request body arrived too slowly"
            self._window_start, self._window_bytes = now, 0
        if cut is None:
            left = min(
                self._body_activity + limits.body_timeout_s - now,
                self._body_start + limits.body_deadline_s - now,
                self._next_rate_check(),
            )
            self._arm(max(left, 0.01), self._body_check)
            return
        self.defences.add(cut)
        if cycle is not None and not cycle.response_started:
            self._reply_and_close(408, f"Request Timeout: {message}")
        else:
            self.transport.close()

    # -- answers the app never sees --------------------------------------------------------------
    def _reply_and_close(self, status: int, message: str, retry: bool = False, linger: bool = False) -> None:
        """A ``{"detail": message}`` answer with ``status``, then close (``linger``: see :meth:`_linger`), written
        straight to the transport; a request the app is still receiving sees a disconnect, and whatever it
        answers is dropped."""
        self._cancel_timer()
        self._awaiting_head = self._in_body = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # halfway through an answer: no room for another
                self.transport.close()
                return
        body = json.dumps({"detail": message}).encode()  # errors are JSON, as the app's own
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *API_SECURITY_HEADERS):
            content.extend([name, b": ", value, b"\r\n"])
        if retry:
            content.append(b"retry-after: %d\r\n" % self.limits.retry_after_s)
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if linger:
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Close once the answer is out, reading and dropping what the client still sends for up to ``LINGER_S``
        and ``LINGER_BYTES`` (or until it closes): a socket closed with unread bytes is reset, and the reset can
        destroy the answer before the client reads it (nginx's ``lingering_close``). For the cap's 503s: a client
        refused there may have sent a whole request that must not go unanswered."""
        if not self.transport.can_write_eof() or self.guard.lingering >= LINGER_MAX:
            self.transport.close()
            return
        self.guard.lingering += 1
        self._lingering = LINGER_BYTES
        self._lingered = True
        self.transport.write_eof()
        self._cancel_timer()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def _over_capacity(retry_after_s: int) -> Any:
    """The ASGI app that answers a request let in past the cap for the health paths only."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        retry = [(b"retry-after", str(retry_after_s).encode()), *API_SECURITY_HEADERS]
        await send_json(send, 503, "Service Unavailable: too many connections", extra_headers=retry)

    return app


def protocol_class(limits: ServerLimits, observe: Callable[[str], None] | None = None) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` subclass for one server: its limits, its connection registry; ``observe``
    gets each event (a key of ``CUT_REASONS``) as it happens."""
    return type(
        "WbvaeHttpProtocol",
        (GuardedProtocol,),
        {
            "limits": limits,
            "guard": ConnectionGuard(
                limits.max_connections, observe=observe, min_body_rate=limits.min_body_rate_bytes_s
            ),
            "defences": _Tally(
                logging.INFO, "connections cut by the server's limits: %(counts)s in %(window)g s", observe=observe
            ),
        },
    )


def count_cuts(metrics: Metrics) -> Callable[[str], None]:
    """An ``observe`` for :func:`protocol_class` that counts each event in ``metrics`` by its reason."""
    counter = metrics.connections_cut
    for reason in CUT_REASONS:  # every series exported from the start
        counter.labels(reason)
    return lambda reason: counter.labels(reason).inc()


def version_mismatches() -> list[str]:
    """``name installed X, written for Y`` for each package of ``WRITTEN_FOR`` installed at another release."""
    installed = {name: importlib.metadata.version(name) for name in WRITTEN_FOR}
    return [f"{n} {installed[n]} installed, written for {v}" for n, v in WRITTEN_FOR.items() if installed[n] != v]


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: the guarded protocol, no WebSocket, no Server header. When ``app``
    has its ``Metrics`` (``app.state.metrics``), connections cut by the limits are counted there."""
    for mismatch in version_mismatches():
        log.warning("the server's limits may not hold: %s (app/server/protocol.py uses uvicorn's internals)", mismatch)
    limits = ServerLimits.from_settings(settings)
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    http = protocol_class(limits, count_cuts(metrics) if isinstance(metrics, Metrics) else None)
    unsent = getattr(getattr(app, "state", None), "unsent_answers", None)
    if isinstance(unsent, UnsentAnswers):
        unsent.count = http.guard.unsent_bytes
    if hasattr(app, "state"):
        app = OneLineStartupFailure(app, debug=settings.log_level.lower() == "debug")
    return uvicorn.Config(
        SecurityHeaders(app),  # around Starlette's own error handler too: its 500 (headers already set are kept)
        host=settings.host,
        port=settings.port,
        http=http,
        ws="none",  # no WebSocket routes: no upgrade path around the limits
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout_s),  # the protocol uses the exact value
        server_header=False,  # no "server: uvicorn"
        date_header=True,
    )


def run(app: Any, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (what ``uvicorn.run`` does for one process)."""
    server = uvicorn.Server(uvicorn_config(app, settings))
    try:
        server.run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
