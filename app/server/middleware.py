"""Pure ASGI middleware: request id, metrics and access log; the upload size limit enforced while streaming."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
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
    """At most ``max_bytes`` of request bodies in progress at once, in memory or spooled to disk: each request is
    counted at its ``Content-Length`` (a chunked one at ``per_request_bytes``, the most BodySizeLimit lets in) from
    its head until the app has answered it, and one that would take the total past ``max_bytes`` gets 503 with
    ``Retry-After`` before a byte of its body is read. A declared length over ``per_request_bytes`` is left to
    BodySizeLimit (413) uncounted."""

    def __init__(self, app, max_bytes: int, per_request_bytes: int, retry_after_s: int, metrics: Metrics):
        self.app = app
        self.max_bytes = max_bytes
        self.per_request_bytes = per_request_bytes + MULTIPART_SLACK_BYTES
        self.retry = [(b"retry-after", str(retry_after_s).encode())]
        self.metrics = metrics
        self.held = 0
        metrics.body_bytes_in_flight.set_function(lambda: self.held)

    def cost(self, headers: dict[bytes, bytes]) -> int:
        declared = headers.get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else 0
            return size if size <= self.per_request_bytes else 0
        return self.per_request_bytes if b"chunked" in headers.get(b"transfer-encoding", b"").lower() else 0

    async def __call__(self, scope, receive, send):
        cost = self.cost(dict(scope.get("headers", []))) if scope["type"] == "http" else 0
        if not cost:
            return await self.app(scope, receive, send)
        if self.held + cost > self.max_bytes:
            self.metrics.rejected.labels("upload_budget").inc()
            detail = "busy: too many uploads in progress; retry later"
            return await send_json(send, 503, detail, extra_headers=self.retry)
        self.held += cost
        try:
            await self.app(scope, receive, send)
        finally:
            self.held -= cost


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
