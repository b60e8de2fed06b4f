"""The pages: the web page at ``/`` (one static HTML + JS + CSS page that posts to ``/correct``) and the API docs at
``/docs`` (Swagger UI) and ``/redoc``, all from packaged assets: no CDN, no external resource, no inline script.

The Swagger UI and ReDoc bundles come with the ``fastapi-offline`` package; the docs pages use relative URLs so
they also work behind a proxy that mounts the service under a path prefix.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.codec import DEFAULT_FORMAT, FORMATS
from app.server import DOCS_CSP, PAGE_CSP

STATIC = Path(__file__).resolve().parents[1] / "static"
BUNDLES = Path(fastapi_offline.__file__).resolve().parent / "static"
FORMATS_SLOT = "<!-- FORMATS: filled in from app/codec/formats.py when the page is served -->"


def render_page() -> str:
    """index.html with the output-format choices of the registry (``data-ext``: the download's suffix)."""
    options = "\n".join(
        f'        <option value="{f.name}" data-ext="{f.suffixes[0][1:]}"'
        f"{' selected' if f.name == DEFAULT_FORMAT else ''}>{escape(f.label)}</option>"
        for f in FORMATS.values()
    )
    return (STATIC / "index.html").read_text(encoding="utf-8").replace(FORMATS_SLOT, options.lstrip())


PAGE = render_page()

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


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    """The page (before/after, strength, download)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """The page's icon (an SVG: half white, half warm)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    """Interactive API docs (Swagger UI)."""
    return HTMLResponse(SWAGGER_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    """Reference API docs (ReDoc)."""
    return HTMLResponse(REDOC_PAGE, headers={"Content-Security-Policy": REDOC_CSP})


def mount_assets(app: FastAPI) -> None:
    """The pages' assets: ``/static`` (the web page's) and ``/docs-assets`` (the docs bundles)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=BUNDLES), name="docs-assets")
