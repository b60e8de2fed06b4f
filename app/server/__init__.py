"""The server edge: uvicorn with a guarded protocol (``protocol``: connection cap, header and body limits, slow
clients), the ASGI middleware (``middleware``: request ids, metrics, upload limits) and the security layer
(``security``: API keys, security headers, CORS).

Everything outside the server edge imports from here.
"""

from app.server.middleware import (
    CLIENT_CLOSED_REQUEST,
    AnswerBudget,
    BodySizeLimit,
    HeadAsGet,
    RequestMetrics,
    SingleQueryValues,
    UnsentAnswers,
    UploadBudget,
)
from app.server.protocol import WRITTEN_FOR, ConnectionGuard, run, version_mismatches
from app.server.security import (
    API_CSP,
    API_SECURITY_HEADERS,
    DOCS_CSP,
    PAGE_CSP,
    ApiKeyGuard,
    SecurityHeaders,
    install_cors,
)

__all__ = [
    "API_CSP",
    "API_SECURITY_HEADERS",
    "CLIENT_CLOSED_REQUEST",
    "DOCS_CSP",
    "PAGE_CSP",
    "WRITTEN_FOR",
    "AnswerBudget",
    "ApiKeyGuard",
    "BodySizeLimit",
    "ConnectionGuard",
    "HeadAsGet",
    "RequestMetrics",
    "SecurityHeaders",
    "SingleQueryValues",
    "UnsentAnswers",
    "UploadBudget",
    "install_cors",
    "run",
    "version_mismatches",
]
