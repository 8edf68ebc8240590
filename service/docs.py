"""The API's documentation pages, /docs (Swagger UI) and /redoc, served without any CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on an air-gapped cluster they stay
blank. These pages load the unmodified bundles that the `fastapi-offline` package ships
(Swagger UI 5, which renders the OpenAPI 3.1 document FastAPI emits, and ReDoc 2) from this
server, under /docs/assets/. Each page has its own Content-Security-Policy: Swagger UI's page
runs one inline start-up script, allowed by its hash and nothing else.

Imports service.assets only; must not import the database, the tables or search/.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from vitcube.service.assets import serve_packed

ASSETS_URL = "/docs/assets"
_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Swagger UI and ReDoc set inline style attributes and inject <style> elements, hence
# 'unsafe-inline' for styles; ReDoc starts its search index in a blob: worker.
_CSP_COMMON = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _Page:
    html: str
    csp: str


def _response(page: _Page) -> HTMLResponse:
    return HTMLResponse(
        page.html,
        headers={
            "Content-Security-Policy": page.csp,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def _script_hashes(html: str) -> str:
    """CSP sources for every inline <script> of `html`, as 'sha256-…'."""
    digests = (hashlib.sha256(body.encode()).digest() for body in _INLINE_SCRIPT.findall(html))
    return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)


@cache
def _swagger_page(title: str, openapi_url: str) -> _Page:
    body = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=None,
        # Swagger UI would otherwise show a badge image fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    ).body
    html = bytes(body).decode()
    return _Page(html, f"{_CSP_COMMON}; script-src 'self' {_script_hashes(html)}")


@cache
def _redoc_page(title: str, openapi_url: str) -> _Page:
    body = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{title} - ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    ).body
    html = bytes(body).decode()
    return _Page(html, f"{_CSP_COMMON}; script-src 'self'; worker-src blob:")


def _openapi_url(app: FastAPI) -> str:
    if app.openapi_url is None:  # pragma: no cover - vitcube always publishes its schema
        raise RuntimeError("the docs pages need app.openapi_url")
    return app.openapi_url


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _response(_swagger_page(app.title, _openapi_url(app)))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _response(_redoc_page(app.title, _openapi_url(app)))


@router.get(ASSETS_URL + "/{name}")
async def asset(name: str, request: Request) -> Response:
    """One of the bundled files, gzipped when the browser accepts it (the JS is 1.5 MB)."""
    media_type = _ASSET_TYPES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return serve_packed(request, _ASSETS_DIR / name, media_type)
