"""Edge protection as pure ASGI middleware: API keys checked before any byte of the body is read,
CORS for browser apps on other origins, and security headers on every response."""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.server.middleware import send_json

# With keys configured, every request needs one except a GET or HEAD of these paths (health, metrics, the page,
# the docs and their assets), which read no body and run no model; anything else, a new route included, is closed.
OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/", "/favicon.ico", "/docs", "/redoc"})
OPEN_PREFIXES = ("/static/", "/docs-assets/", "/openapi.json")
OPEN_METHODS = frozenset({"GET", "HEAD"})

# The page and its assets come from this origin only; the photo preview is a blob: URL.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Swagger UI's bundle sets inline styles; its start-up script is a static file (app/static/docs.js), not inline.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# API answers (JSON, images) render nothing and may not be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# What an answer that no route made carries (the server's own 400/408/431/503, an unhandled error's 500).
API_SECURITY_HEADERS = (*SECURITY_HEADERS, (b"content-security-policy", API_CSP.encode()))


def open_without_key(method: str, path: str) -> bool:
    """Whether a request needs no key when keys are configured: a GET or HEAD of ``OPEN_PATHS`` (or under
    ``OPEN_PREFIXES``), or a CORS preflight (browsers send no key with it)."""
    if method == "OPTIONS":
        return True
    return method in OPEN_METHODS and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


class ApiKeyGuard:
    """401 for a request without ``Authorization: Bearer <key>`` naming a configured key, unless
    :func:`open_without_key` (deny by default: any route that reads a body or runs the model needs a key),
    answered from the headers alone: the body is never read and the connection is closed, so a
    refused upload costs no memory or disk.
    A request with more than one ``Authorization`` header is 400 on any path (which one counts would be
    up to each proxy on the way)."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and sum(name == b"authorization" for name, _ in scope.get("headers", [])) > 1:
            return await send_json(send, 400, "more than one Authorization header; send one")
        if scope["type"] != "http" or not self.keys or open_without_key(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)
        if self.authorized(dict(scope.get("headers", [])).get(b"authorization", b"")):
            return await self.app(scope, receive, send)
        await send_json(
            send,
            401,
            "missing or invalid API key; send Authorization: Bearer <key>",
            extra_headers=[(b"www-authenticate", b"Bearer")],
        )

    def authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        # compare_digest against every key, so the time taken does not tell which key came close
        return scheme.lower() == b"bearer" and sum(secrets.compare_digest(token, k) for k in self.keys) > 0


class SecurityHeaders:
    """``nosniff``, no framing, no referrer, and a Content-Security-Policy on every response (the API's
    strict one unless the route set its own, as the page and the docs do)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", API_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_cors(app: FastAPI, origins: list[str], expose: tuple[str, ...] = ()) -> None:
    """Let browser apps on ``origins`` call the API (no credentials mode: the key travels in a header) and read
    the response headers ``expose`` besides the usual ones."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=["Content-Disposition", "X-Request-ID", "Retry-After", "WWW-Authenticate", *expose],
        max_age=600,
    )
