"""Pure ASGI middleware: request id, metrics and access log; the upload size limit enforced while streaming."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount

from app.logs import accept_request_id, request_id
from app.metrics import Metrics
from app.settings import MULTIPART_SLACK_BYTES

access_log = logging.getLogger("wbvae.access")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer
QUIET_PATHS = ("/livez", "/healthz", "/readyz", "/metrics")


async def send_json(send, status: int, detail: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A complete ``{"detail": ...}`` response that closes the connection (an unread body is not drained)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class OneLineStartupFailure:
    """A start-up that failed for a known reason (the lifespan logged it in one line and set
    ``app.state.startup_error``) is reported without the traceback Starlette attaches, unless ``debug``."""

    def __init__(self, app, debug: bool):
        self.app = app
        self.debug = debug

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan" or self.debug:
            return await self.app(scope, receive, send)

        async def send_quietly(message):
            if message["type"] == "lifespan.startup.failed" and getattr(self.app.state, "startup_error", None):
                message = {**message, "message": ""}  # logged already, in one line
            await send(message)

        await self.app(scope, receive, send_quietly)


class HeadAsGet:
    """HEAD wherever GET is allowed (RFC 9110 9.3.2): a HEAD request is routed as GET and answered with GET's
    status and headers (Content-Length included) and no body. Load balancers and uptime monitors probe with HEAD;
    FastAPI's ``@get`` routes would answer it 405."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_without_body(message):
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


class SingleQueryValues:
    """422 for a query string that names a parameter twice (``preset=tungsten&preset=shade``): which one counts
    would be a guess (FastAPI takes the last), and no route takes a list. Answered before the body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("query_string"):
            names = Counter(name for name, _ in parse_qsl(scope["query_string"].decode("latin-1"), True))
            repeated = sorted(name for name, n in names.items() if n > 1)
            if repeated:
                detail = f"query parameter {', '.join(map(repr, repeated))} given more than once; give each once"
                return await send_json(send, 422, detail)
        await self.app(scope, receive, send)


class BodySizeLimit:
    """413 as soon as a request body exceeds ``max_bytes`` (by Content-Length or while streaming)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes + MULTIPART_SLACK_BYTES
        self.detail = f"upload too large; the limit is {max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json(send, 413, self.detail)

        received = 0
        exceeded = False
        started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # whatever the app answers to the aborted body, the answer is 413
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await send_json(send, 413, self.detail)


class _BodyTooLarge(Exception):
    pass


class UploadBudget:
    """At most ``max_bytes`` of request bodies held at once, in memory or spooled to disk, counted by the bytes the
    app has actually received (what a head declares costs nothing): from each body's first byte until the app has
    answered it. A body whose next bytes would take the total past ``max_bytes`` makes room by closing the uploads
    still arriving that have come slower than itself over the last ``window_s`` or so (slowest first; each gets 503
    with ``Retry-After``), else it gets that 503 itself. So idle or trickling uploads that declare 50 MB lock no one
    out, and a budget filled fast and then held by a trickle gives way to the next upload that arrives faster.
    Following Envoy's buffer accounting (bytes buffered, not declared, against a shared limit) and its overload
    manager's stream resets (there: the streams buffering most; here: the slowest, as the connection cap does)."""

    def __init__(self, app, max_bytes: int, window_s: float, retry_after_s: int, metrics: Metrics):
        self.app = app
        self.max_bytes = max_bytes
        self.window_s = window_s
        self.retry = [(b"retry-after", str(retry_after_s).encode())]
        self.metrics = metrics
        self.held = 0
        self.uploads: set[_Upload] = set()
        metrics.body_bytes_in_flight.set_function(lambda: self.held)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _has_body(dict(scope.get("headers", []))):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        upload = _Upload(loop.time(), loop.create_future())
        self.uploads.add(upload)
        started = False

        async def counted_receive():
            if upload.evicted.done():
                raise _OverBudget()
            next_message = asyncio.ensure_future(receive())
            try:
                await asyncio.wait({next_message, upload.evicted}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the app stopped listening (a disconnect watcher cancelled)
                next_message.cancel()
                raise
            if upload.evicted.done():  # closed to make room while it waited for bytes
                next_message.cancel()
                raise _OverBudget()
            message = next_message.result()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if size:
                    self._make_room(upload, size)
                    upload.add(size, loop.time(), self.window_s)
                    self.held += size
                upload.receiving = message.get("more_body", False)
            else:
                upload.receiving = False
            return message

        async def guarded_send(message):
            nonlocal started
            if upload.evicted.done():  # whatever the app answers to the cut body, the answer is 503
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _OverBudget:
            pass
        finally:
            self.held -= upload.held
            self.uploads.discard(upload)
        if upload.evicted.done() and not started:
            await send_json(send, 503, upload.evicted.result(), extra_headers=self.retry)

    def _make_room(self, upload: _Upload, size: int) -> None:
        """Room for ``size`` more bytes of ``upload``: slower uploads still arriving are closed to make it, else
        ``upload`` itself is (``_OverBudget``)."""
        need = self.held + size - self.max_bytes
        if need <= 0:
            return
        now = asyncio.get_running_loop().time()
        mine = upload.rate(now, self.window_s, size)
        slower = sorted(
            (u for u in self.uploads if u is not upload and u.receiving and u.held and not u.evicted.done()),
            key=lambda u: u.rate(now, self.window_s),
        )
        victims, freed = [], 0
        for other in slower:
            if freed >= need or other.rate(now, self.window_s) >= mine:
                break
            victims.append(other)
            freed += other.held
        if freed < need:
            self.metrics.rejected.labels("upload_budget").inc()
            upload.evict("busy: the uploads in progress fill the budget of body bytes; retry later")
            raise _OverBudget()
        for other in victims:
            self.metrics.rejected.labels("upload_budget").inc()
            self.held -= other.held  # let go of as it unwinds, now
            other.held = 0
            other.evict("busy: upload closed to make room for faster ones (the budget of body bytes is full); retry")


class UnsentAnswers:
    """The bytes of answers written but not yet taken by their clients, as the HTTP server counts them
    (:mod:`app.server.protocol` sets ``count``; 0 under a server that does not)."""

    def __init__(self) -> None:
        self.count: Callable[[], int] = lambda: 0

    def __call__(self) -> int:
        return self.count()


class AnswerBudget:
    """503 with ``Retry-After`` for a new upload while the answers not yet taken by their clients hold more than
    ``max_bytes``: no new answer is made while the unread ones fill memory (the send timeout frees them)."""

    def __init__(self, app, max_bytes: int, unsent: UnsentAnswers, retry_after_s: int, metrics: Metrics):
        self.app = app
        self.max_bytes = max_bytes
        self.unsent = unsent
        self.retry = [(b"retry-after", str(retry_after_s).encode())]
        self.metrics = metrics
        metrics.unsent_answer_bytes.set_function(unsent)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _has_body(dict(scope.get("headers", []))) and self.unsent() > self.max_bytes:
            self.metrics.rejected.labels("unsent_answers").inc()
            detail = "busy: answers not yet read by their clients fill the server's memory; retry later"
            return await send_json(send, 503, detail, extra_headers=self.retry)
        await self.app(scope, receive, send)


def _has_body(headers: dict[bytes, bytes]) -> bool:
    declared = headers.get(b"content-length")
    if declared is not None:
        return declared != b"0"
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower()


@dataclass(eq=False)
class _Upload:
    """One request body as :class:`UploadBudget` counts it."""

    start: float
    evicted: asyncio.Future  # its result: the 503's detail
    held: int = 0
    receiving: bool = True
    recent: float = 0.0  # bytes received, each weighed down by exp(-age / window)
    last: float = 0.0

    def add(self, size: int, now: float, window_s: float) -> None:
        self.held += size
        self.recent = self._decayed(now, window_s) + size
        self.last = now

    def _decayed(self, now: float, window_s: float) -> float:
        return self.recent * math.exp(-(now - self.last) / window_s) if self.recent else 0.0

    def rate(self, now: float, window_s: float, arriving: int = 0) -> float:
        """Bytes a second over about the last ``window_s`` (``arriving``: counted as if received now)."""
        return (self._decayed(now, window_s) + arriving) / min(max(now - self.start, 1.0), window_s)

    def evict(self, detail: str) -> None:
        if not self.evicted.done():
            self.evicted.set_result(detail)


class _OverBudget(Exception):
    pass


def route_label(scope, incoming: dict) -> str:
    """The route template that served a request (``/static/{path}`` for the static files, the docs' own
    paths), or ``unmatched``: a bounded set of label values. ``incoming``: the scope as it arrived (routing
    rewrites ``root_path`` on the way down)."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    for candidate in getattr(scope.get("app"), "routes", []):
        path = getattr(candidate, "path", None)
        if path and candidate.matches(incoming)[0] == Match.FULL:
            return path + ("/{path}" if isinstance(candidate, Mount) else "")
    return "unmatched"


class RequestMetrics:
    """Request id (X-Request-ID accepted and echoed), counts by route template, method and status,
    whole-request latency, and one access-log line per request. A request whose client went away while
    its body was read ends here quietly, as status 499, not as an error traceback per connection."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        rid = accept_request_id(dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1"))
        token = request_id.set(rid)

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        incoming = dict(scope)
        try:
            await self.app(scope, receive, recording_send)
        except ClientDisconnect:  # the client left (or a server timeout cut it) while its body was read
            status = CLIENT_CLOSED_REQUEST
        finally:
            label = route_label(scope, incoming)
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.request_duration.labels(label).observe(elapsed)
            access_log.log(
                logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO,
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "client": (scope.get("client") or ("-",))[0],
                },
            )
            request_id.reset(token)
