"""The API docs at ``/docs`` (Swagger UI) and ``/redoc`` from packaged assets: no CDN, no inline script.

The Swagger UI and ReDoc bundles come with the ``fastapi-offline`` package; the pages use relative URLs
so they also work behind a proxy that mounts the service under a path prefix.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.security import DOCS_CSP

BUNDLES = Path(fastapi_offline.__file__).resolve().parent / "static"

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>wbvae API - Swagger UI</title>
  <link rel="icon" href="favicon.ico">
  <link rel="stylesheet" href="docs-assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs-assets/swagger-ui-bundle.js"></script>
  <script src="static/docs.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>wbvae API - ReDoc</title>
  <link rel="icon" href="favicon.ico">
</head>
<body>
  <redoc spec-url="openapi.json"></redoc>
  <script src="docs-assets/redoc.standalone.js"></script>
</body>
</html>
"""

# ReDoc renders its search index in a web worker started from a blob: URL.
REDOC_CSP = DOCS_CSP + "; worker-src blob:"

router = APIRouter()


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    """Interactive API docs (Swagger UI)."""
    return HTMLResponse(SWAGGER_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    """Reference API docs (ReDoc)."""
    return HTMLResponse(REDOC_PAGE, headers={"Content-Security-Policy": REDOC_CSP})


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their bundles under /docs-assets (create the app with docs_url=None)."""
    app.include_router(router)
    app.mount("/docs-assets", StaticFiles(directory=BUNDLES), name="docs-assets")
