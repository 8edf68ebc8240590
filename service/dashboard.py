"""The web dashboard: server-rendered pages that draw a search with Plotly.js, fed by the JSON API.

Pages (`/`, `/searches/{id}`, `/compare?ids=…`, `/login`) are Jinja2 templates; a little plain
JavaScript (static/dashboard.js, static/compare.js) fetches the same-origin JSON API and draws
with the Plotly.js bundle shipped inside the `plotly` Python package, so nothing is fetched
from another origin and the dashboard works on an air-gapped cluster. The pages read data only
through the public REST API — by an in-process ASGI call that forwards the visitor's
credentials — so the dashboard sees exactly what a scripted client with the same token sees;
who may see a page is decided by service.auth's authenticator, the same one behind the API.
The login form stores the token in the HttpOnly, SameSite=Strict cookie `vitcube_token`,
which service.auth accepts besides `Authorization: Bearer`.

Imports service.auth (the token check) and service.assets; must not import search/, the tables
or the database session: data comes through the API.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import plotly
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from vitcube.service.assets import serve_packed
from vitcube.service.auth import COOKIE_NAME, GRANTS, presented_token

COOKIE_MAX_AGE_S = 7 * 24 * 3600

_HERE = Path(__file__).resolve().parent
_TEMPLATES_DIR = _HERE / "templates"
_STATIC_DIR = _HERE / "static"
_PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Everything the pages load comes from this origin; Plotly injects <style> elements, hence
# 'unsafe-inline' for styles only. Scripts run only from files we serve.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Internal base URL of the in-process API calls; never leaves the process.
_INTERNAL_BASE = "http://dashboard.internal"

Role = Literal["viewer", "admin"]

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(str(_TEMPLATES_DIR)),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


# --- formatting helpers shared by the templates -----------------------------------------------


_MAC_UNITS = (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def format_macs(macs: float | int | None) -> str:
    """`1834000000` -> `"1.83 G"`; per image, or a search's training total (up to `E`)."""
    if macs is None or (isinstance(macs, float) and math.isnan(macs)):
        return "–"
    value = float(macs)
    for unit, scale in _MAC_UNITS:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def format_count(value: float | int | None) -> str:
    """`1234.5` -> `"1,234.5"`, `1000.0` -> `"1,000"`: epochs and other tallies."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    rounded = round(float(value), 1)
    return f"{rounded:,.0f}" if rounded.is_integer() else f"{rounded:,.1f}"


def format_pct(fraction: float | None) -> str:
    """A top-1 fraction in [0, 1] as a percentage."""
    if fraction is None:
        return "–"
    return f"{100.0 * float(fraction):.1f} %"


def metric_label(search: dict[str, Any]) -> str:
    """What a search's metric is called on a page: `top-1` for val_top1 (as always), else its
    name (`val_map`, `val_loss`)."""
    name = str((search.get("metric") or {}).get("name") or "val_top1")
    return "top-1" if name == "val_top1" else name


def metric_better(search: dict[str, Any]) -> str:
    """What "better" means for a search's metric: `more accurate` (top-1), `lower val_loss`."""
    spec = search.get("metric") or {}
    label = metric_label(search)
    if label == "top-1":
        return "more accurate"
    return f"{'lower' if spec.get('goal') == 'minimize' else 'higher'} {label}"


def format_best(search: dict[str, Any]) -> str:
    """The search's best trial's value of its metric: `83.1 %` for top-1, `0.4127 val_loss`."""
    best = search.get("best") or {}
    value = best.get("value", best.get("top1"))
    if metric_label(search) == "top-1":
        return format_pct(value)
    return "–" if value is None else f"{float(value):.4g} {metric_label(search)}"


def best_header(searches: list[dict[str, Any]]) -> str:
    """A column of searches' best results: `Best top-1` when every one optimises top-1."""
    labels = {metric_label(s) for s in searches} or {"top-1"}
    return f"Best {labels.pop()}" if len(labels) == 1 else "Best result"


def format_time(iso: str | None) -> str:
    """ISO-8601 from the API as `2025-01-31 14:05 UTC` (or as given if it does not parse)."""
    if not iso:
        return "–"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    zone = moment.strftime("%Z") or "UTC"
    return moment.strftime("%Y-%m-%d %H:%M ") + zone


def format_bytes(size: int | None) -> str:
    """`123456789` -> `"123 MB"` (decimal units, as the dashboard's script shows them)."""
    value = float(size or 0)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def describe_schedule(search: dict[str, Any]) -> str:
    """A search's schedule in words: `ASHA, rungs 1 · 3 · 9, η = 3` (`, 2 brackets` when new
    configurations may start past the first rung), or `full training`."""
    schedule = search.get("schedule") or {"kind": "full"}
    if schedule.get("kind") != "asha":
        return "full training"
    epochs = " · ".join(str(rung["epoch"]) for rung in search.get("rungs") or [])
    brackets = int(schedule.get("brackets") or 1)
    hedge = f", {brackets} brackets" if brackets > 1 else ""
    return f"ASHA, rungs {epochs}, η = {schedule.get('eta')}{hedge}"


_env.filters["count"] = format_count
_env.filters["schedule"] = describe_schedule
_env.filters["filesize"] = format_bytes
_env.filters["macs"] = format_macs
_env.filters["pct"] = format_pct
_env.filters["best"] = format_best
_env.filters["metric_label"] = metric_label
_env.filters["metric_better"] = metric_better
_env.filters["best_header"] = best_header
_env.filters["when"] = format_time


def _render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(request=request, **context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


# --- reading the API in-process with the visitor's credentials --------------------------------


@dataclass(frozen=True)
class ApiReply:
    status_code: int
    body: Any

    @property
    def detail(self) -> str:
        """The API's error message, whatever shape FastAPI gave it."""
        if isinstance(self.body, dict) and "detail" in self.body:
            detail = self.body["detail"]
            if isinstance(detail, list):
                return "; ".join(
                    str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                    for item in detail
                )
            return str(detail)
        return f"HTTP {self.status_code}"


def _credential_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    if "authorization" in request.headers:
        headers["authorization"] = request.headers["authorization"]
    token = request.cookies.get(COOKIE_NAME)
    if token:
        headers["cookie"] = f"{COOKIE_NAME}={token}"
    return headers


async def _api_get(request: Request, path: str) -> ApiReply:
    """GET this app's own API in-process (no socket) with the visitor's credentials."""
    transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=_INTERNAL_BASE) as client:
        reply = await client.get(path, headers=_credential_headers(request))
    try:
        body = reply.json()
    except ValueError:
        body = None
    return ApiReply(reply.status_code, body)


async def _role_of(request: Request, token: str | None = None) -> Role | None:
    """The visitor's dashboard role, or None when their credentials do not allow reading.

    Uses service.auth's authenticator, the one the API's dependencies use: a Bearer header or
    the `vitcube_token` cookie; in open local mode (no token configured) everyone is admin.
    Worker tokens cannot read searches, so they get None here.
    """
    authenticator = request.app.state.authenticator
    token = token if token is not None else presented_token(request)
    if token is None:
        is_open = await run_in_threadpool(authenticator.open_mode)
        return "admin" if is_open else None
    principal = await run_in_threadpool(authenticator.authenticate, token)
    if principal is None or "viewer" not in GRANTS[principal.role]:
        return None
    return "admin" if principal.role == "admin" else "viewer"


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never `//host` or `https://host`, which would leave the origin."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# --- pages -------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), error=None, role=None)


@router.post("/login", response_model=None)
async def login_submit(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:
    token = token.strip()
    target = _safe_next(next)
    role = None
    if token:
        role = await _role_of(request, token)
    if role is None:
        message = (
            "Paste a viewer or admin token."
            if not token
            else "That token was not accepted: use a viewer or admin token "
            "(worker tokens cannot read searches)."
        )
        return _render(
            request, "login.html", status_code=401, next=target, error=message, role=None
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse, response_model=None)
async def searches_page(request: Request) -> Response:
    role = await _role_of(request)
    if role is None:
        return _login_redirect(request)
    reply = await _api_get(request, "/api/searches")
    if reply.status_code != 200:
        return _error_page(request, reply, role=role)
    searches = reply.body if isinstance(reply.body, list) else reply.body.get("items", [])
    searches = sorted(searches, key=lambda s: str(s.get("created_at") or ""), reverse=True)
    return _render(request, "index.html", searches=searches, role=role)


@router.get("/searches/{search_id}", response_class=HTMLResponse, response_model=None)
async def search_page(request: Request, search_id: str) -> Response:
    role = await _role_of(request)
    if role is None:
        return _login_redirect(request)
    reply = await _api_get(request, f"/api/searches/{quote(search_id, safe='')}")
    if reply.status_code != 200:
        if reply.status_code in (404, 422):
            reply = ApiReply(404, {"detail": f"There is no search {search_id!r}."})
        return _error_page(request, reply, role=role)
    return _render(request, "search.html", search=reply.body, role=role)


# The compare page overlays this many searches at most: beyond it the colours stop being
# told apart and the plot turns into noise.
COMPARE_MIN, COMPARE_MAX = 2, 8
_SEARCH_ID_MAX = 2_147_483_647  # the API's own bound on a search id


def _is_search_id(text: str) -> bool:
    # isascii: str.isdigit() also accepts digits like "²" that int() refuses.
    return text.isascii() and text.isdigit() and 1 <= int(text) <= _SEARCH_ID_MAX


def parse_compare_ids(values: list[str]) -> list[int] | str:
    """`["3,1", "2"]` -> `[3, 1, 2]` (order kept, repeats dropped), or what to change in words.

    Accepts the comma-separated `?ids=3,1,2` of a link and the repeated `?ids=3&ids=1` that the
    searches page's checkboxes submit without JavaScript.
    """
    parts = [part.strip() for value in values for part in value.split(",")]
    parts = [part for part in parts if part]
    bad = [part for part in parts if not _is_search_id(part)]
    if bad:
        shown = ", ".join(repr(part) for part in bad[:3])
        return (
            f"{shown} {'is not a search id' if len(bad) == 1 else 'are not search ids'}: "
            "give positive whole numbers separated by commas, as in /compare?ids=3,1,2."
        )
    ids = list(dict.fromkeys(int(part) for part in parts))
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        have = f"{len(ids)} search{'es' if len(ids) != 1 else ''}" if ids else "no search"
        return (
            f"Name {COMPARE_MIN} to {COMPARE_MAX} different searches to compare (this link "
            f"names {have}), as in /compare?ids=3,1,2."
        )
    return ids


def describe_base(base: dict[str, Any] | None) -> str:
    """A baseline in words: `mobilevit_v2 ×1.0`, `mobilevit_v1 xs`, or its preset's name."""
    base = base or {}
    words = str(base.get("preset") or base.get("family") or "?")
    if not base.get("preset"):
        if base.get("width") is not None:
            words += f" ×{base['width']}"
        if base.get("size"):
            words += f" {base['size']}"
    return words


def same_baseline_groups(searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Searches with the same baseline and dataset, two or more of them, as compare links:
    `[{"label": "mobilevit_v2 ×1.0 · digits", "ids": [5, 3, 2]}]` (newest first, at most
    COMPARE_MAX per link)."""
    groups: dict[str, dict[str, Any]] = {}
    for search in searches:
        dataset = str((search.get("dataset") or {}).get("name") or "?")
        key = json.dumps([search.get("base") or {}, dataset], sort_keys=True, default=str)
        label = f"{describe_base(search.get('base'))} · {dataset}"
        groups.setdefault(key, {"label": label, "ids": []})["ids"].append(search.get("id"))
    return [
        {"label": group["label"], "ids": group["ids"][:COMPARE_MAX]}
        for group in groups.values()
        if len(group["ids"]) >= COMPARE_MIN
    ]


_env.filters["baseline"] = describe_base
_env.globals["same_baseline_groups"] = same_baseline_groups
_env.globals["compare_max"] = COMPARE_MAX


@router.get("/compare", response_class=HTMLResponse, response_model=None)
async def compare_page(
    request: Request, ids: Annotated[list[str] | None, Query()] = None
) -> Response:
    """Several searches' Pareto fronts, budgets and formula recommendations on one plot."""
    role = await _role_of(request)
    if role is None:
        return _login_redirect(request)
    parsed = parse_compare_ids(ids or [])
    if isinstance(parsed, str):
        return _error_page(request, ApiReply(422, {"detail": parsed}), role=role)
    replies = await asyncio.gather(*(_api_get(request, f"/api/searches/{i}") for i in parsed))
    missing = [i for i, reply in zip(parsed, replies, strict=True) if reply.status_code == 404]
    if missing:
        named = ", ".join(f"#{i}" for i in missing)
        there = "There is no search" if len(missing) == 1 else "There are no searches"
        message = f"{there} {named}: take {'it' if len(missing) == 1 else 'them'} out of the ids."
        return _error_page(request, ApiReply(404, {"detail": message}), role=role)
    for reply in replies:
        if reply.status_code != 200:
            return _error_page(request, reply, role=role)
    searches = [reply.body for reply in replies]
    return _render(request, "compare.html", searches=searches, role=role)


def _error_page(request: Request, reply: ApiReply, *, role: Role | None) -> HTMLResponse:
    status = reply.status_code if 400 <= reply.status_code < 600 else 502
    title = {404: "Not found", 403: "Not allowed"}.get(status, "Something went wrong")
    return _render(
        request, "error.html", status_code=status, title=title, message=reply.detail, role=role
    )


# --- static files ------------------------------------------------------------------------------


@router.get("/static/plotly.min.js")
async def plotly_js(request: Request) -> Response:
    """The Plotly.js bundle of the installed `plotly` package (4.8 MB; 1.4 MB gzipped)."""
    return serve_packed(request, _PLOTLY_JS, _STATIC_TYPES[".js"])


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """Our own small assets: only plain files directly inside service/static/."""
    path = _STATIC_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in _STATIC_TYPES:
        return Response("not found", status_code=404, media_type="text/plain")
    try:
        content = path.read_bytes()
    except OSError:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        content,
        media_type=_STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
