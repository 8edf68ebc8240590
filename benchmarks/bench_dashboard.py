"""Dashboard at 10,000 trials: vitcube's search page vs optuna-dashboard, the same trials, one run.

Both dashboards run locally, on this machine, as subprocesses, one after the other:

- vitcube: `vitcube serve` on a fresh SQLite database. A search is created over the API
  (`random`, MobileViT v2-1.0 at c = 0.5, max_trials = --trials, parallelism 1; its planner
  queues one reference trial, which stays queued: no worker runs, so the search is `running`
  and its page keeps polling, as while a search runs), then filled with --trials completed
  surrogate trials by `service.synthetic.fill_search` (10-epoch surrogate curves, seed 0).
- optuna-dashboard (PyPI, its default wsgiref server): an Optuna study on a SQLite file holding
  exactly the completed trials read back from vitcube's API: params = the effective factors
  r, d_i, d_m, w; values = (top-1, MACs), directions (maximize, minimize); intermediate values =
  the trial's curve (val_top1 per epoch); user attrs params, resolution, vitcube's trial id;
  start and completion times = vitcube's. Its page is /dashboard/studies/1, the study's
  overview (the first page a user opens; Pareto front, history, importance, timeline).

Each page is loaded cold (a new Chromium context: empty cache, no cookies but vitcube's token
cookie; optuna-dashboard's 10-s in-memory trials cache left to expire first, so that its server
reads the study as for a first visitor), --repeats times per tool, alternating tools, in
headless Debian Chromium driven by Playwright. An init script checks the page on every
animation frame and records, when a condition first holds, the page's own performance.now()
(ms since its navigation started) and the wall clock; "wall" times below are from just before
page.goto() to that moment:

- first plot: the first Plotly plot on the page with data drawn (an SVG `.point` of a scatter
  or bar trace, or a WebGL trace with points on its canvas) — the same condition on both.
  vitcube's own mark, `document.body.dataset.firstPaint` (header, Pareto front and trials
  table drawn), is printed beside it where the page sets it; where it does not yet, the
  fallback is `#pareto-plot .point` and a `#trials-table tbody tr`.
- usable page: vitcube: `document.body.dataset.ready >= 1` (the page says everything is drawn,
  GP views and formula included). optuna-dashboard: all four plots of the overview (Pareto
  front, history, hyperparameter importance, timeline) have data drawn and its Best Trials list
  is shown (it has no "ready" mark; the trials table is another tab, not loaded here).
- bytes transferred: the sum of Network.loadingFinished encodedDataLength (on-the-wire bytes,
  headers included) over a CDP session, for responses finished by the usable-page moment.

Refresh: what each page polls while the search/study runs. vitcube's page asks GET
/api/searches/{id} and its trials view (GET /api/searches/{id}/trials/compact?since=<cursor>
where the server has it, else the full GET /api/searches/{id}/trials); optuna-dashboard polls
GET /api/studies/1?after=<trials it has> every 10 s and serves trials from a 10-s in-memory
cache. Each of --refreshes rounds adds one new completed trial to both (the same one: fill_search
then the trial read back from vitcube's API, added to the study), waits until optuna-dashboard's
cache has expired (as at its own polling interval), then times one refresh of each with httpx on
loopback (keep-alive; wall time of the request, i.e. server time plus loopback transfer) and its
downloaded bytes; the medians are reported. Back-to-back refreshes without a change (optuna
served from its cache) are printed beside them.

    .venv/bin/python benchmarks/bench_dashboard.py [--trials 10000] [--repeats 3]
        [--refreshes 10] [--quick]          # --quick: 1000 trials, 1 repeat, 3 refreshes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # tests/browser.py's
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FACTORS = ("r", "d_i", "d_m", "w")
OPTUNA_POLL_S = 10.0  # optuna-dashboard's default reload interval and its trials-cache TTL
OPTUNA_PLOTS = ("graph-pareto-front", "plot-history", "graph-hyperparameter-importances",
                "graph-timeline")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- vitcube: the server, the search, the trials --------------------------------------------


SEARCH_BODY: dict[str, Any] = {
    "name": "bench 10k",
    "base": {"family": "mobilevit_v2", "width": 1.0, "resolution": 256},
    "dataset": {"name": "digits"},
    "budget": {"c": 0.5},
    "space": {"r": [0.5, 1.7], "d_i": [0.5, 2.3], "d_m": [0.5, 1.6], "w": [0.3, 1.2]},
    "strategy": "random",
    "parallelism": 1,
    "training": {"epochs": 10},
}


def surrogate_score(arch: dict[str, Any], epochs: int, seed: int) -> list[float]:
    from vitcube.models import Arch
    from vitcube.workers.surrogate import surrogate_curve

    return [float(v) for v in surrogate_curve(Arch.from_dict(arch), epochs=epochs, seed=seed)]


def read_trials(client: httpx.Client, search_id: int) -> list[dict[str, Any]]:
    """Every trial of the search, paging with limit/offset where the API pages."""
    page, offset = 2000, 0
    trials: list[dict[str, Any]] = []
    while True:
        reply = client.get(
            f"/api/searches/{search_id}/trials", params={"limit": page, "offset": offset}
        )
        reply.raise_for_status()
        body = reply.json()
        chunk = body if isinstance(body, list) else body.get("trials", body.get("items", []))
        trials.extend(chunk)
        if len(chunk) != page:  # a short page, or the whole list (limit/offset not honoured)
            break
        offset += page
    unique = {t["id"]: t for t in trials}
    return [unique[k] for k in sorted(unique)]


def search_state(client: httpx.Client, search_id: int) -> dict[str, Any]:
    reply = client.get(f"/api/searches/{search_id}")
    reply.raise_for_status()
    return dict(reply.json())


# -- Optuna: the same trials ------------------------------------------------------------------


def frozen_trial(trial: dict[str, Any], number: int, bounds: dict[str, tuple[float, float]]) -> Any:
    import optuna

    params = {f: float(trial["effective_factors"][f]) for f in FACTORS}
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        f: optuna.distributions.FloatDistribution(*bounds[f]) for f in FACTORS
    }
    curve = {int(p["epoch"]): float(p["val_top1"]) for p in trial["curve"]}

    def when(text: str | None) -> datetime | None:  # Optuna keeps naive local times
        return datetime.fromisoformat(text).astimezone().replace(tzinfo=None) if text else None

    return optuna.trial.FrozenTrial(
        number=number,
        trial_id=number,  # replaced by the storage
        state=optuna.trial.TrialState.COMPLETE,
        value=None,
        values=[float(trial["top1"]), float(trial["macs"])],
        datetime_start=when(trial["started_at"]),
        datetime_complete=when(trial["finished_at"]),
        params=params,
        distributions=distributions,
        user_attrs={
            "params": int(trial["params"]),
            "resolution": int(trial["resolution"]),
            "vitcube_trial_id": int(trial["id"]),
        },
        system_attrs={},
        intermediate_values=curve,
    )


def space_bounds(trials: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """The search space's bounds, widened to every effective factor (rounding may leave them)."""
    bounds = {}
    for f in FACTORS:
        low, high = SEARCH_BODY["space"][f]
        values = [float(t["effective_factors"][f]) for t in trials]
        bounds[f] = (min([low, *values]), max([high, *values]))
    return bounds


# -- the browser ------------------------------------------------------------------------------

HAS_DATA_JS = """
  function hasData(el) {
    if (!el) return false;
    if (el.querySelector('.scatterlayer .point, .barlayer .point')) return true;
    const gl = (el._fullData || []).some(t => /gl$/.test(t.type || '') && (t._length || 0) > 0);
    return gl && !!el.querySelector('canvas');
  }
"""

VITCUBE_MARKS = """
  function firstUseful() {
    if (document.body && document.body.dataset.firstPaint !== undefined) return true;
    return hasData(document.getElementById('pareto-plot'))
      && !!document.querySelector('#trials-table tbody tr');
  }
  const CONDS = [
    ['first_plot', () => Array.from(document.querySelectorAll('.js-plotly-plot')).some(hasData)],
    ['first_useful', firstUseful],
    ['usable', () => !!document.body && Number(document.body.dataset.ready || 0) >= 1],
  ];
"""

OPTUNA_MARKS = """
  const PLOTS = __PLOTS__;
  const CONDS = [
    ['first_plot', () => Array.from(document.querySelectorAll('.js-plotly-plot')).some(hasData)],
    ['first_useful', () => Array.from(document.querySelectorAll('.js-plotly-plot')).some(hasData)],
    ['usable', () => PLOTS.every(id => hasData(document.getElementById(id)))
      && Array.from(document.querySelectorAll('h6')).some(h => h.textContent === 'Best Trials')
      && !!document.querySelector('a[href*="/trials?numbers="]')],
  ];
""".replace("__PLOTS__", json.dumps(list(OPTUNA_PLOTS)))

OBSERVER_JS = """
(() => {
  __HAS_DATA__
  __MARKS__
  const marks = {};
  window.__benchMarks = marks;
  function check() {
    for (const [name, fn] of CONDS) {
      if (name in marks) continue;
      let ok = false;
      try { ok = fn(); } catch (e) { ok = false; }
      if (ok) marks[name] = {page_ms: performance.now(), wall_ms: Date.now()};
    }
    if (Object.keys(marks).length < CONDS.length) requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();
"""


def load_page(
    browser: Any,
    url: str,
    marks_js: str,
    *,
    cookies: list[dict[str, Any]],
    timeout_s: float,
    extra: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One cold load of `url`: the marks (wall s from goto, page ms) and the bytes by then."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        if cookies:
            context.add_cookies(cookies)
        context.add_init_script(
            OBSERVER_JS.replace("__HAS_DATA__", HAS_DATA_JS).replace("__MARKS__", marks_js)
        )
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        clock: list[float] = []  # wallTime - timestamp of a request: CDP monotonic -> wall
        finished: list[tuple[float, int]] = []
        urls: dict[str, str] = {}
        sizes: dict[str, int] = {}

        def sent(event: dict[str, Any]) -> None:
            if not clock:
                clock.append(float(event["wallTime"]) - float(event["timestamp"]))
            urls[event["requestId"]] = event["request"]["url"]

        def done(event: dict[str, Any]) -> None:
            finished.append((float(event["timestamp"]), int(event["encodedDataLength"])))
            urls.setdefault(event["requestId"], "?")
            sizes[event["requestId"]] = int(event["encodedDataLength"])

        cdp.on("Network.requestWillBeSent", sent)
        cdp.on("Network.loadingFinished", done)
        start = time.time()
        page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        page.wait_for_function(
            "() => !!window.__benchMarks && 'usable' in window.__benchMarks",  # no eval: CSP
            timeout=timeout_s * 1000,
            polling=100,
        )
        marks = page.evaluate("window.__benchMarks")
        result: dict[str, Any] = {
            "first_plot": math.nan,
            "first_plot_page_ms": math.nan,
            "first_useful": math.nan,
            "first_useful_page_ms": math.nan,
        }
        for name, mark in marks.items():
            result[name] = mark["wall_ms"] / 1000 - start
            result[name + "_page_ms"] = mark["page_ms"]
        usable_wall = marks["usable"]["wall_ms"] / 1000
        offset = clock[0] if clock else 0.0
        result["bytes"] = sum(n for ts, n in finished if ts + offset <= usable_wall + 0.001)
        result["requests"] = sum(1 for ts, _ in finished if ts + offset <= usable_wall + 0.001)
        result["biggest"] = sorted(
            ((n, urls.get(rid, "?")) for rid, n in sizes.items()), reverse=True
        )[:3]
        if extra is not None:
            result.update(extra(page))
        return result
    finally:
        context.close()


def vitcube_extra(page: Any) -> dict[str, Any]:
    own = page.evaluate("document.body.dataset.firstPaint")
    return {"own_first_paint_ms": float(own) if own not in (None, "") else None}


# -- refresh ------------------------------------------------------------------------------------


def timed_get(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> Any:
    start = time.perf_counter()
    reply = client.get(path, params=params)
    reply.read()
    ms = (time.perf_counter() - start) * 1000
    reply.raise_for_status()
    return reply, ms, reply.num_bytes_downloaded


class VitcubeRefresh:
    """What vitcube's search page asks on each poll: the search, and its trials view."""

    def __init__(self, client: httpx.Client, search_id: int) -> None:
        self.client, self.search_id = client, search_id
        probe = client.get(f"/api/searches/{search_id}/trials/compact")
        self.compact = probe.status_code == 200
        self.cursor = self._cursor(probe.json()) if self.compact else None
        self.view = (
            "GET /api/searches/{id} + /trials/compact?since=<cursor>"
            if self.compact
            else "GET /api/searches/{id} + /trials (no compact view on this server)"
        )

    @staticmethod
    def _cursor(body: Any) -> Any:
        return body.get("cursor") if isinstance(body, dict) else None

    def __call__(self) -> tuple[float, int]:
        _, ms1, b1 = timed_get(self.client, f"/api/searches/{self.search_id}")
        if self.compact:
            params = {"since": self.cursor} if self.cursor is not None else None
            path = f"/api/searches/{self.search_id}/trials/compact"
            reply, ms2, b2 = timed_get(self.client, path, params)
            self.cursor = self._cursor(reply.json()) or self.cursor
        else:
            _, ms2, b2 = timed_get(self.client, f"/api/searches/{self.search_id}/trials")
        return ms1 + ms2, b1 + b2


# -- the run ----------------------------------------------------------------------------------


def page_files() -> str:
    """A digest of the dashboard's templates and static files (a page served from disk may change
    while the run goes on; the run says so)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("service/static/*"), *ROOT.glob("service/templates/*")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "service"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" + uncommitted changes in service/" if dirty else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="cold loads per tool")
    parser.add_argument("--refreshes", type=int, default=10, help="timed refreshes per tool")
    parser.add_argument("--quick", action="store_true", help="1000 trials, 1 repeat, 3 refreshes")
    parser.add_argument("--page-timeout", type=float, default=300, help="seconds per page load")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.repeats, args.refreshes = 1000, 1, 3

    import optuna
    import optuna_dashboard
    from playwright.sync_api import sync_playwright

    from vitcube.service.db import Database
    from vitcube.service.synthetic import fill_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    token = "bench-admin-" + secrets.token_hex(8)
    v_url = f"sqlite:///{tmp}/v.db"
    o_url = f"sqlite:///{tmp}/o.db"
    v_port, o_port = free_port(), free_port()
    v_base, o_base = f"http://127.0.0.1:{v_port}", f"http://127.0.0.1:{o_port}"
    v_proc = o_proc = None
    page_digest = page_files()
    print(f"# bench_dashboard: {args.trials} trials, {args.repeats} cold load(s) per tool")
    print(
        f"vitcube {git_commit()}; optuna {optuna.__version__}, optuna-dashboard "
        f"{optuna_dashboard.__version__}; {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start"
    )
    try:
        env = {
            **os.environ,
            "VITCUBE_DATABASE_URL": v_url,
            "VITCUBE_ADMIN_TOKEN": token,
            "VITCUBE_ARTIFACT_URL": str(tmp / "art"),
        }
        serve = ["serve", "--host", "127.0.0.1", "--port", str(v_port), "--log-level", "warning"]
        v_proc = subprocess.Popen(
            [str(BIN / "vitcube"), *serve],
            env=env,
            cwd=tmp,
            stdout=(tmp / "vitcube.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(v_base + "/api/health", v_proc, 60, "vitcube serve")
        client = httpx.Client(
            base_url=v_base, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )
        reply = client.post("/api/searches", json={**SEARCH_BODY, "max_trials": args.trials})
        reply.raise_for_status()
        search_id = int(reply.json()["id"])
        deadline = time.monotonic() + 30  # let the planner queue its reference trial first
        while time.monotonic() < deadline and not read_trials(client, search_id):
            time.sleep(0.2)
        started = time.perf_counter()
        db = Database(v_url)
        fill_search(db, search_id, args.trials, score=surrogate_score, seed=0)
        fill_s = time.perf_counter() - started
        trials = read_trials(client, search_id)
        completed = [t for t in trials if t["state"] == "completed"]
        others = [t["state"] for t in trials if t["state"] != "completed"]
        state = search_state(client, search_id)
        print(
            f"vitcube: search {search_id} ({state['state']}) filled with {args.trials} trials in "
            f"{fill_s:.1f} s; the API returns {len(completed)} completed"
            + (f" and {len(others)} other ({', '.join(sorted(set(others)))})" if others else "")
        )

        started = time.perf_counter()
        study = optuna.create_study(
            storage=o_url, study_name="bench 10k", directions=["maximize", "minimize"]
        )
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore")
            study.set_metric_names(["top1", "macs"])
        bounds = space_bounds(completed)
        study.add_trials([frozen_trial(t, i, bounds) for i, t in enumerate(completed)])
        print(
            f"optuna: study of {len(study.trials)} trials written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        o_proc = subprocess.Popen(
            [str(BIN / "optuna-dashboard"), o_url, "--host", "127.0.0.1", "--port", str(o_port)],
            cwd=tmp,
            stdout=(tmp / "optuna-dashboard.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(o_base + "/api/meta", o_proc, 60, "optuna-dashboard")

        results: dict[str, list[dict[str, Any]]] = {"vitcube": [], "optuna-dashboard": []}
        pages = {
            "vitcube": (f"{v_base}/searches/{search_id}", VITCUBE_MARKS, vitcube_extra),
            "optuna-dashboard": (f"{o_base}/dashboard/studies/1", OPTUNA_MARKS, None),
        }
        cookies = {
            "vitcube": [{"name": "vitcube_token", "value": token, "url": v_base}],
            "optuna-dashboard": [],
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                print(f"chromium {browser.version}")
                optuna_idle_since = time.monotonic()
                for rep in range(args.repeats):
                    for tool, (url, marks_js, extra) in pages.items():
                        if tool == "optuna-dashboard":  # its 10-s trials cache: let it expire
                            idle = optuna_idle_since + OPTUNA_POLL_S + 0.5 - time.monotonic()
                            time.sleep(max(0.0, idle))
                        one = load_page(
                            browser,
                            url,
                            marks_js,
                            cookies=cookies[tool],
                            timeout_s=args.page_timeout,
                            extra=extra,
                        )
                        results[tool].append(one)
                        if tool == "optuna-dashboard":
                            optuna_idle_since = time.monotonic()
                        load = os.getloadavg()[0]
                        own = one.get("own_first_paint_ms")
                        print(
                            f"  load {rep + 1} {tool} (load avg {load:.2f}): first plot "
                            f"{one['first_plot']:.2f} s "
                            f"(page {one['first_plot_page_ms']:.0f} ms), first useful "
                            f"{one['first_useful']:.2f} s, usable {one['usable']:.2f} s (page "
                            f"{one['usable_page_ms']:.0f} ms), {one['bytes']:,} B in "
                            f"{one['requests']} responses"
                            + (f", page's firstPaint {own:.0f} ms" if own is not None else "")
                            + "; biggest: "
                            + ", ".join(f"{u.split('/', 3)[-1]} {n:,} B" for n, u in one["biggest"])
                        )
            finally:
                browser.close()

        # refresh: one new trial on both, then one poll each
        refresh_v = VitcubeRefresh(client, search_id)
        o_client = httpx.Client(base_url=o_base, timeout=600)
        o_count = len(study.trials)
        timed_get(o_client, "/api/studies/1", {"after": o_count})  # warm the connection
        last_optuna = time.monotonic()
        changed: dict[str, list[tuple[float, int]]] = {"vitcube": [], "optuna-dashboard": []}
        for i in range(args.refreshes):
            new_id = fill_search(db, search_id, 1, score=surrogate_score, seed=1000 + i)[0]
            new = client.get(f"/api/trials/{new_id}")
            new.raise_for_status()
            study.add_trial(frozen_trial(new.json(), o_count, bounds))
            time.sleep(max(0.0, last_optuna + OPTUNA_POLL_S + 0.5 - time.monotonic()))
            changed["vitcube"].append(refresh_v())
            _, ms, n = timed_get(o_client, "/api/studies/1", {"after": o_count})
            last_optuna = time.monotonic()
            changed["optuna-dashboard"].append((ms, n))
            o_count += 1
        same: dict[str, list[tuple[float, int]]] = {"vitcube": [], "optuna-dashboard": []}
        for _ in range(args.refreshes):
            same["vitcube"].append(refresh_v())
            _, ms, n = timed_get(o_client, "/api/studies/1", {"after": o_count})
            same["optuna-dashboard"].append((ms, n))
        print(f"vitcube refresh: {refresh_v.view}")
        print("optuna-dashboard refresh: GET /api/studies/1?after=<trials it has>")

        # the table
        summary: dict[str, dict[str, float]] = {}
        for tool, loads in results.items():
            summary[tool] = {
                "first_plot": median([x["first_plot"] for x in loads]),
                "first_plot_page": median([x["first_plot_page_ms"] for x in loads]) / 1000,
                "first_useful": median([x["first_useful"] for x in loads]),
                "usable": median([x["usable"] for x in loads]),
                "usable_page": median([x["usable_page_ms"] for x in loads]) / 1000,
                "bytes": median([float(x["bytes"]) for x in loads]),
                "refresh_ms": median([ms for ms, _ in changed[tool]]),
                "refresh_bytes": median([float(n) for _, n in changed[tool]]),
                "same_ms": median([ms for ms, _ in same[tool]]),
                "same_bytes": median([float(n) for _, n in same[tool]]),
            }
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"\n{args.trials:,} trials, median of {args.repeats} cold load(s) and "
            f"{args.refreshes} refreshes; {stamp}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n"
        )
        print(
            "| tool | first plot (s) wall / page | usable page (s) wall / page | bytes transferred "
            "| refresh, one new trial (ms) | refresh bytes | refresh, no change (ms / bytes) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for tool, s in summary.items():
            print(
                f"| {tool} | {s['first_plot']:.2f} / {s['first_plot_page']:.2f} "
                f"| {s['usable']:.2f} / {s['usable_page']:.2f} | {s['bytes']:,.0f} "
                f"| {s['refresh_ms']:.1f} | {s['refresh_bytes']:,.0f} "
                f"| {s['same_ms']:.1f} / {s['same_bytes']:,.0f} |"
            )
        v, o = summary["vitcube"], summary["optuna-dashboard"]

        def ratio(key: str) -> float:
            return o[key] / v[key] if v[key] else float("nan")

        print(
            f"| optuna / vitcube | {ratio('first_plot'):.2f}x / {ratio('first_plot_page'):.2f}x "
            f"| {ratio('usable'):.2f}x / {ratio('usable_page'):.2f}x | {ratio('bytes'):.2f}x "
            f"| {ratio('refresh_ms'):.2f}x | {ratio('refresh_bytes'):.2f}x "
            f"| {ratio('same_ms'):.2f}x / {ratio('same_bytes'):.2f}x |"
        )
        print(
            f"\nvitcube's first useful paint (Pareto front + trials table drawn): "
            f"{v['first_useful']:.2f} s wall"
        )
        met = "met" if ratio("first_plot") >= 3 else "NOT met"
        print(
            f"Goal: vitcube's first plot >= 3x faster than optuna-dashboard's: {met} "
            f"({ratio('first_plot'):.2f}x wall; first useful paint "
            f"{o['first_useful'] / v['first_useful']:.2f}x)"
        )
        at = f" at {args.trials:,}" + ("" if args.trials == 10_000 else " (not 10,000)")
        met = "met" if v["first_useful"] <= 2.0 else "NOT met"
        print(
            f"Goal: vitcube's first useful paint <= 2 s at 10,000 trials: {met}{at}: "
            f"{v['first_useful']:.2f} s"
        )
        if page_files() != page_digest:
            print("WARNING: service/static or service/templates changed during the run")
        else:
            print(f"dashboard page files unchanged during the run (digest {page_digest})")
    finally:
        stop(o_proc)
        stop(v_proc)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
