"""The web page at ``/``: one static HTML + JS + CSS page that posts to ``/correct``; no external resources."""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.formats import DEFAULT_FORMAT, FORMATS
from app.security import PAGE_CSP

STATIC = Path(__file__).resolve().parent / "static"
FORMATS_SLOT = "<!-- FORMATS: filled in from app/formats.py when the page is served -->"


def render_page() -> str:
    """index.html with the output-format choices of the registry (``data-ext``: the download's suffix)."""
    options = "\n".join(
        f'        <option value="{f.name}" data-ext="{f.suffixes[0][1:]}"'
        f"{' selected' if f.name == DEFAULT_FORMAT else ''}>{escape(f.label)}</option>"
        for f in FORMATS.values()
    )
    return (STATIC / "index.html").read_text(encoding="utf-8").replace(FORMATS_SLOT, options.lstrip())


PAGE = render_page()

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    """The page (before/after, strength, download)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """The page's icon (an SVG: half white, half warm)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def install_web(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
