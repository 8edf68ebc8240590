"""The dashboard in a real headless Chromium against a real uvicorn server.

A SQLite database is seeded only through the public API: an admin creates a search, and a
worker that is just an httpx client leases its trials and completes them with the documented
surrogate accuracy (`workers.surrogate`), marked `surrogate: true`. Chromium is Debian's
(/usr/bin/chromium) driven by Playwright's Python API. Every test also checks that the page
raised no error, logged no console error and requested nothing outside the server's origin.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import launched_chromium, playwright_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN, WORKER, VIEWER = "adm-" + "a" * 20, "wrk-" + "b" * 20, "view-" + "c" * 20
SEEDED_TRIALS = 14
NAMED_REFERENCE = "mobilenet_v3_small"

playwright_or_skip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    origin: str
    process: subprocess.Popen[bytes]
    log: Path
    searches: dict[str, Any] = field(default_factory=dict)

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.origin, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


def _search_body(name: str, *, max_trials: int, parallelism: int) -> dict[str, Any]:
    return {
        "name": name,
        "base": {"family": "mobilevit_v2", "width": 1.0, "resolution": 256, "num_classes": 10},
        "dataset": {"name": "digits"},
        "budget": {"c": 0.5},
        "objective": "accuracy",
        "strategy": "sobol",
        "max_trials": max_trials,
        "parallelism": parallelism,
        "training": {"epochs": 8, "batch_size": 64},
        "seed": 3,
    }


def _complete_all(server: Server, search_id: Any, n: int, deadline_s: float = 60.0) -> None:
    """A worker that is only an HTTP client: lease, compute the surrogate result, complete."""
    from vitcube.models import Arch
    from vitcube.workers.surrogate import surrogate_curve, surrogate_top1

    done = 0
    deadline = time.monotonic() + deadline_s
    with server.api(WORKER) as worker:
        while done < n:
            assert time.monotonic() < deadline, f"only {done} of {n} trials could be leased"
            lease = worker.post("/api/trials/lease", json={"worker": "browser-test:cpu"})
            if lease.status_code == 204:
                time.sleep(0.2)
                continue
            assert lease.status_code == 200, lease.text
            trial = lease.json()
            assert trial["search_id"] == search_id
            arch = Arch.from_dict(trial["arch"])
            epochs = int(trial["training"].get("epochs", 8))
            top1 = surrogate_top1(arch, dataset="digits", epochs=epochs, seed=trial["seed"])
            curve = surrogate_curve(arch, dataset="digits", epochs=epochs, seed=trial["seed"])
            body = _surrogate_report(
                trial,
                arch,
                top1,
                curve=[
                    {
                        "epoch": e + 1,
                        "val_top1": v,
                        "val_top5": min(1.0, v + 0.05),
                        "train_loss": 1 - v,
                    }
                    for e, v in enumerate(curve)
                ],
            )
            weights = worker.put(  # final weights, as a real worker uploads them
                f"/api/trials/{trial['id']}/weights",
                params={"lease_id": trial["lease_id"]},
                content=b"w" * (1000 + trial["id"]),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert weights.status_code == 200, weights.text
            reply = worker.post(f"/api/trials/{trial['id']}/complete", json=body)
            assert reply.status_code == 200, reply.text
            done += 1


@contextmanager
def _serving(tmp: Path) -> Iterator[Server]:
    """A uvicorn server (a subprocess) on a fresh SQLite database in `tmp`, stopped afterwards."""
    port = _free_port()
    env = {
        **os.environ,
        "VITCUBE_DATABASE_URL": f"sqlite:///{tmp / 'vitcube.db'}",
        "VITCUBE_ADMIN_TOKEN": ADMIN,
        "VITCUBE_WORKER_TOKEN": WORKER,
        "VITCUBE_VIEWER_TOKEN": VIEWER,
        "VITCUBE_MIGRATE_ON_START": "true",
        "VITCUBE_PLANNER_INTERVAL_S": "0.2",
    }
    log = tmp / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "vitcube.service.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    srv = Server(origin=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server exited:\n" + log.read_text()
            try:
                if httpx.get(srv.origin + "/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()


def _surrogate_report(
    trial: dict[str, Any], arch: Any, top1: float, **fields: Any
) -> dict[str, Any]:
    """A surrogate worker's complete body for a leased trial (the curve and extras in fields)."""
    from vitcube.models import count_macs, count_params

    return {
        "lease_id": trial["lease_id"],
        "top1": top1,
        "top5": min(1.0, top1 + 0.05),
        "params": count_params(arch),
        "macs": count_macs(arch),
        "latency_ms": 1.0 + count_macs(arch) / 1e9,
        "images_per_s": 1000.0,
        "surrogate": True,
        **fields,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _serving(tmp_path_factory.mktemp("dashboard")) as srv:
        with srv.api(ADMIN) as admin:
            body = _search_body("v2 at half budget", max_trials=SEEDED_TRIALS, parallelism=4)
            body["references"] = [NAMED_REFERENCE]  # another family's preset, as a yardstick
            created = admin.post("/api/searches", json=body)
            assert created.status_code == 201, created.text
            done = created.json()
            _complete_all(srv, done["id"], SEEDED_TRIALS)
            # The GP views and the formula of all of them, stored before any page asks.
            fitted = admin.get(f"/api/searches/{done['id']}/analysis", params={"fresh": True})
            # Fitted on the cube's trials: the named reference is not one of its points.
            assert fitted.json()["fitted_on"]["trials"] == SEEDED_TRIALS - 1, fitted.text
            # A second search that stays running with nothing completed: the early states.
            fresh = admin.post(
                "/api/searches", json=_search_body("still empty", max_trials=30, parallelism=1)
            )
            assert fresh.status_code == 201, fresh.text
        srv.searches = {"done": done, "fresh": fresh.json()}
        yield srv


@dataclass
class Watch:
    """What a page did: errors it raised or logged, and every URL it requested."""

    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text} @ {msg.location.get('url')}")

    def assert_clean(self, *, allowed_errors: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        assert errors == [], errors
        foreign = [u for u in self.requests if not u.startswith(self.origin + "/")]
        assert foreign == [], f"requests left the origin: {foreign}"
        assert self.requests, "the page requested nothing at all"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


def _page(browser: Any, server: Server, token: str | None) -> tuple[Any, Watch]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    context = browser.new_context(
        viewport={"width": 1440, "height": 900},
        extra_http_headers=headers,
        base_url=server.origin,
    )
    page = context.new_page()
    watch = Watch(server.origin)
    watch.attach(page)
    return page, watch


POINTS_JS = "n => document.querySelectorAll('#pareto-plot .scatterlayer path.point').length === n"


def _wait_drawn(page: Any) -> None:
    page.wait_for_selector("body[data-ready]", state="attached", timeout=30_000)


def _assert_no_junk(page: Any) -> None:
    """Nothing a person would read as a bug: no null/undefined/NaN printed on the page."""
    junk = re.findall(r"\b(?:null|undefined|NaN)\b", page.inner_text("body"))
    assert junk == [], junk


def test_login_form_sets_an_httponly_cookie_and_refuses_a_wrong_token(
    browser: Any, server: Server
) -> None:
    page, watch = _page(browser, server, token=None)
    page.goto("/")
    assert page.url.startswith(server.origin + "/login"), "an anonymous visit must go to /login"

    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    assert "not accepted" in page.inner_text("#login-error")
    assert page.context.cookies() == []

    page.fill("#token", WORKER)  # workers may not read searches
    page.click("#login-form button[type=submit]")
    assert "not accepted" in page.inner_text("#login-error")

    page.fill("#token", VIEWER)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(server.origin + "/")
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "vitcube_token"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == "", "the token must be invisible to scripts"
    names = page.locator("#searches-table .search-link").all_inner_texts()
    assert "v2 at half budget" in names and "still empty" in names

    # The JSON the page loads accepts the cookie, and a viewer sees no stop button.
    page.click("text=v2 at half budget")
    _wait_drawn(page)
    assert page.locator("#stop-button").count() == 0
    assert page.locator("#pareto-plot .scatterlayer path.point").count() > 0

    page.click("text=Log out")
    page.wait_for_url("**/login")
    assert page.context.cookies() == []
    page.goto("/")
    assert page.url.startswith(server.origin + "/login")
    # The refused logins answer 401, which Chromium logs against /login; nothing else may be.
    watch.assert_clean(allowed_errors=(f"{server.origin}/login",))


def test_search_page_draws_the_front_the_gp_views_and_the_formula(
    browser: Any, server: Server, test_output_dir: Path
) -> None:
    search = server.searches["done"]
    with server.api(VIEWER) as api:
        trials = api.get(f"/api/searches/{search['id']}/trials").json()
        expected_formula = api.get(f"/api/searches/{search['id']}/formula", params={"c": 0.3})
    completed = [t for t in trials if t["state"] == "completed"]
    assert len(completed) == SEEDED_TRIALS

    page, watch = _page(browser, server, token=ADMIN)
    page.goto("/")
    row = page.locator(f"tr[data-search-id='{search['id']}']")
    assert "14 / 14" in row.inner_text()
    row.locator("a").click()
    _wait_drawn(page)

    # Pareto: one marker per completed trial, references marked, the budget line drawn.
    assert page.locator("#pareto-plot .scatterlayer path.point").count() == len(completed)
    legend = page.locator("#pareto-plot .legend").text_content() or ""
    assert "Pareto front" in legend and "width-only reference" in legend
    assert "compound-scaling reference" in legend
    # The named reference: its own trace, called and labelled by its preset's name.
    assert NAMED_REFERENCE in legend
    labels = page.locator("#pareto-plot .scatterlayer .textpoint").all_text_contents()
    assert NAMED_REFERENCE in labels
    # ... and counted on the best-so-far card among the references the best is compared with.
    compared = page.locator("#best-summary ul.compare").inner_text()
    assert f"vs {NAMED_REFERENCE}" in compared and "vs width-only reference" in compared
    assert any("budget" in a for a in page.locator("#pareto-plot .annotation").all_text_contents())
    # GP views: four 1-D plots with their bands, four 2-D contours, importance bars.
    for factor in ("r", "d_i", "d_m", "w"):
        assert page.locator(f"#gp1d-{factor} .scatterlayer .trace").count() >= 3, factor
    assert page.locator("#gp2d .contourlayer").count() == 4
    assert page.locator("#importance-plot .barlayer path").count() == 4
    # The downsizing formula: four factor panels against c, and the form's answer.
    assert page.locator("#formula-plot .cartesianlayer > g.subplot").count() == 4
    assert page.locator("#curves-plot .scatterlayer .trace").count() == len(completed)
    assert expected_formula.status_code == 200, expected_formula.text
    page.fill("#formula-c", "0.3")
    page.click("#formula-form button[type=submit]")
    page.wait_for_selector("#formula-recommendation >> text=c = 0.30")
    macs_text = page.inner_text("#formula-macs")
    from vitcube.service.dashboard import format_macs

    assert format_macs(expected_formula.json()["macs"]).replace(" ", "") in macs_text.replace(
        " ", ""
    )

    # Sorting: a first click on a numeric column sorts it descending, the next ascending.
    def shown_ids() -> list[int]:
        cells = page.locator("#trials-table tbody tr td:first-child").all_inner_texts()
        return [int(i) for i in cells]

    def ids_by(key: str, reverse: bool) -> list[int]:
        return [t["id"] for t in sorted(completed, key=lambda t: t[key], reverse=reverse)]

    macs_header = page.locator("#trials-table th[data-key=macs]")
    macs_header.click()
    assert macs_header.get_attribute("aria-sort") == "descending"
    assert shown_ids() == ids_by("macs", reverse=True)
    macs_header.click()
    assert macs_header.get_attribute("aria-sort") == "ascending"
    assert shown_ids() == ids_by("macs", reverse=False)
    page.click("#trials-table th[data-key=top1]")  # best first, as in the screenshot
    assert shown_ids() == ids_by("top1", reverse=True)

    # Artifacts: the bytes the search holds; download links on the best trial and the front.
    with server.api(VIEWER) as api:
        held = api.get(f"/api/searches/{search['id']}").json()
        front = api.get(f"/api/searches/{search['id']}/pareto").json()
    from vitcube.service.dashboard import format_bytes

    assert held["artifact_bytes"] > 0
    assert page.inner_text("#artifact-bytes") == format_bytes(held["artifact_bytes"])
    best_link = page.locator("#best-weights a.weights-link")
    assert best_link.get_attribute("href") == f"/api/trials/{held['best']['id']}/weights"
    for trial in front:
        link = page.locator(f"#trial-{trial['id']} a.weights-link")
        assert link.get_attribute("href") == f"/api/trials/{trial['id']}/weights"
    download = page.request.get(best_link.get_attribute("href") or "")  # the login cookie
    assert download.status == 200 and len(download.body()) == held["best"]["weights_bytes"]

    page.locator("#formula-plot").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    _assert_no_junk(page)
    page.screenshot(path=str(test_output_dir / "dashboard-search.png"), full_page=True)
    watch.assert_clean()


def test_a_running_search_fills_in_live_keeps_the_zoom_and_an_admin_can_stop_it(
    browser: Any, server: Server, test_output_dir: Path
) -> None:
    search = server.searches["fresh"]
    page, watch = _page(browser, server, token=ADMIN)
    page.goto(f"/searches/{search['id']}")
    _wait_drawn(page)
    # Nothing completed: every view says why it is empty instead of drawing nothing.
    assert "No completed trials yet" in page.inner_text("#pareto-empty")
    assert "not fitted" in page.inner_text("#gp-empty")
    assert page.locator("#formula-empty").is_visible()
    assert page.locator("#formula-error").is_visible()
    assert page.locator("#pareto-plot .main-svg").count() == 0
    assert page.text_content("#search-state") == "running"

    formula_answer_at_zero = page.inner_text("#formula-error")
    points = page.locator("#pareto-plot .scatterlayer path.point")
    _complete_all(server, search["id"], 1)  # the page polls: the first point appears by itself
    page.wait_for_function(POINTS_JS, arg=1, timeout=15_000)
    assert page.locator("#pareto-empty").is_hidden()
    assert "not fitted" in page.inner_text("#gp-empty")  # one trial is too few for a GP
    # The formula is asked again when a trial completes ("too few trials" has a new count);
    # the front is drawn first, the formula's answer when it arrives.
    page.wait_for_function(
        "before => document.getElementById('formula-error').innerText !== before",
        arg=formula_answer_at_zero,
        timeout=15_000,
    )
    _assert_no_junk(page)
    page.screenshot(path=str(test_output_dir / "dashboard-early.png"), full_page=True)

    # A person zooms (drags a box on the plot); the next refresh must keep that zoom.
    box = page.locator("#pareto-plot .nsewdrag").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.1 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.55 * box["width"], box["y"] + 0.9 * box["height"], steps=8)
    page.mouse.up()
    zoomed = page.evaluate("document.getElementById('pareto-plot').layout.xaxis.range")
    assert page.evaluate("document.getElementById('pareto-plot').layout.xaxis.autorange") is False
    _complete_all(server, search["id"], 1)
    page.wait_for_function(POINTS_JS, arg=2, timeout=15_000)
    assert page.evaluate("document.getElementById('pareto-plot').layout.xaxis.range") == zoomed

    # A failed trial shows up with its error, as text (never as markup).
    error = "RuntimeError: CUDA out of memory <img src=x onerror=alert(1)>"
    with server.api(WORKER) as worker:
        lease = worker.post("/api/trials/lease", json={"worker": "browser-test:cpu"})
        assert lease.status_code == 200, lease.text
        failing = lease.json()
        reply = worker.post(
            f"/api/trials/{failing['id']}/fail",
            json={"lease_id": failing["lease_id"], "error": error, "retry": False},
        )
        assert reply.status_code == 200, reply.text
    row = page.locator(f"#trial-{failing['id']}.row-failed")
    row.wait_for(timeout=15_000)
    assert row.locator(".error-text").inner_text() == error
    assert row.locator(".badge").text_content() == "failed"
    assert page.locator("#trials-table img").count() == 0

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#stop-button")
    page.wait_for_selector("#search-state >> text=stopped")
    assert page.locator("#stop-button").is_hidden()
    assert "stopped" in page.inner_text("#refresh-note")
    polled = len(watch.requests)
    page.wait_for_timeout(4_500)  # longer than the 4 s poll: a stopped search is not polled
    assert watch.requests[polled:] == []
    with server.api(VIEWER) as api:
        assert api.get(f"/api/searches/{search['id']}").json()["state"] == "stopped"
    assert points.count() == 2
    # The formula endpoints answer 4xx while too few trials are completed (Chromium logs each
    # failed fetch); the page shows why instead. Nothing else may be logged.
    watch.assert_clean(allowed_errors=("/formula",))


# -- multi-fidelity (ASHA) searches: the rung view, paused trials, compute spent -----------------

ASHA_EPOCHS = 9  # rungs 1 · 3 · 9 under min_epochs 1, eta 3
ASHA_TRIALS = 14  # two reference trials and twelve the schedule trains in rungs
ASHA_COMPUTE = 100  # max_train_epochs: room for all of them, so the budget bar shows
DIGITS_TRAIN_IMAGES = 1437
SCREENS = Path("/tmp/exp/screens")


@pytest.fixture(scope="module")
def asha_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own (leases are fair across searches: another search's queued trials
    would be handed to this worker) with one ASHA search trained until the planner completes it:
    some trials promoted, some left paused at a rung, some completed."""
    body = {
        **_search_body("asha at half budget", max_trials=ASHA_TRIALS, parallelism=3),
        "training": {"epochs": ASHA_EPOCHS, "batch_size": 64},
        "schedule": {"kind": "asha", "min_epochs": 1, "eta": 3},
        "max_train_epochs": ASHA_COMPUTE,
    }
    with _serving(tmp_path_factory.mktemp("dashboard-asha")) as srv:
        with srv.api(ADMIN) as admin:
            created = admin.post("/api/searches", json=body)
        assert created.status_code == 201, created.text
        _train_segments(srv, created.json()["id"])
        srv.searches = {"asha": created.json()}
        yield srv


def _train_segments(server: Server, search_id: Any, deadline_s: float = 90.0) -> int:
    """A worker that is only an HTTP client, for a multi-fidelity search: each lease trains to
    its `to_epoch` (the surrogate curve up to there, its top-1 the rung's result), until the
    planner completes the search (some trials left paused at a rung). Returns the leases."""
    from vitcube.models import Arch
    from vitcube.workers.surrogate import surrogate_curve

    leases = 0
    deadline = time.monotonic() + deadline_s
    with server.api(WORKER) as worker, server.api(VIEWER) as viewer:
        while True:
            assert time.monotonic() < deadline, f"the search did not complete ({leases} leases)"
            lease = worker.post("/api/trials/lease", json={"worker": "browser-test:cpu"})
            if lease.status_code == 204:
                if viewer.get(f"/api/searches/{search_id}").json()["state"] == "completed":
                    return leases
                time.sleep(0.1)  # the planner promotes or queues within a pass (0.2 s)
                continue
            assert lease.status_code == 200, lease.text
            trial = lease.json()
            assert trial["search_id"] == search_id
            arch = Arch.from_dict(trial["arch"])
            values = surrogate_curve(arch, dataset="digits", epochs=ASHA_EPOCHS, seed=trial["seed"])
            start, end = int(trial["from_epoch"]), int(trial["to_epoch"])
            curve = [{"epoch": e, "val_top1": float(values[e - 1])} for e in range(1, end + 1)]
            top1 = max(point["val_top1"] for point in curve)
            body = _surrogate_report(
                trial,
                arch,
                top1,
                curve=curve,
                resumed_from_epoch=start or None,
                epochs_trained=float(end - start),
                train_images=DIGITS_TRAIN_IMAGES,
            )
            reply = worker.post(f"/api/trials/{trial['id']}/complete", json=body)
            assert reply.status_code == 200, reply.text
            leases += 1


def test_an_asha_search_shows_its_rungs_paused_trials_and_compute(
    browser: Any, asha_server: Server, test_output_dir: Path
) -> None:
    search_id = asha_server.searches["asha"]["id"]
    with asha_server.api(VIEWER) as api:
        search = api.get(f"/api/searches/{search_id}").json()
        trials = api.get(f"/api/searches/{search_id}/trials").json()
    rungs = search["rungs"]
    assert [r["epoch"] for r in rungs] == [1, 3, 9]
    paused = [t for t in trials if t["state"] == "paused"]
    completed = [t for t in trials if t["state"] == "completed"]
    # What the page must show, as the server counts it: all three fates present.
    assert paused and completed and rungs[0]["promoted"] > 0, rungs
    assert search["counts"]["paused"] == len(paused)

    page, watch = _page(browser, asha_server, token=VIEWER)
    page.goto(f"/searches/{search_id}")
    _wait_drawn(page)

    # The rung view: the schedule in words, and per rung what the server counts.
    assert "ASHA, rungs 1 · 3 · 9, η = 3" in page.inner_text("#rungs-card h2")
    shown = page.locator("#rungs tbody tr")
    assert shown.count() == len(rungs)
    for k, rung in enumerate(rungs):
        row = page.locator(f"#rungs tbody tr[data-epoch='{rung['epoch']}']")
        assert row.locator(".rung-reached").inner_text() == str(rung["reached"])
        assert row.locator(".rung-paused").inner_text() == str(rung["paused"])
        promoted = row.locator(".rung-promoted").inner_text()
        assert promoted == ("–" if k == len(rungs) - 1 else str(rung["promoted"]))
    assert page.locator("#rungs-plot .barlayer path").count() > 0

    # A paused trial is paused in the table, with its top-1 marked partial (at its rung).
    trial = paused[0]
    row = page.locator(f"#trial-{trial['id']}")
    assert row.locator(".badge").inner_text().lower() == "paused"
    assert f"@ {trial['to_epoch']}" in row.locator(".partial").inner_text()
    assert f"{len(paused)} paused at a rung" in page.inner_text("#search-counts")
    page.select_option("#trials-filter", "paused")  # the table's state filter
    badges = page.locator("#trials-table tbody .badge").all_inner_texts()
    assert [b.lower() for b in badges] == ["paused"] * len(paused)
    page.select_option("#trials-filter", "")
    assert page.locator("#trials-table tbody tr").count() == len(trials)

    # Compute spent against the budget, and the training MACs in human units.
    from vitcube.service.dashboard import format_count, format_macs

    epochs = f"{format_count(search['epochs_trained'])} / {ASHA_COMPUTE} epochs"
    assert page.inner_text("#compute-epochs") == epochs
    assert search["train_macs"] > 0
    assert page.inner_text("#compute-macs") == format_macs(search["train_macs"]) + "MACs"
    share = page.evaluate("document.getElementById('compute-progress').style.width")
    assert share == f"{100 * search['epochs_trained'] / ASHA_COMPUTE:g}%"

    # The front is drawn from completed trials only; paused ones are hollow and say so.
    legend = page.locator("#pareto-plot .legend").text_content() or ""
    assert "paused at epoch" in legend and "(partial)" in legend
    points = page.locator("#pareto-plot .scatterlayer path.point").count()
    assert points == len(completed) + len(paused)
    assert page.get_attribute("#pareto-plot", "data-points") == str(len(completed))
    # Learning curves: one line per rung, labelled, and a paused trial's curve ends at its rung.
    labels = page.locator("#curves-plot .annotation").all_text_contents()
    assert [label for label in labels if label.startswith("rung")] == ["rung 1", "rung 2", "rung 3"]
    ends = page.evaluate(
        """id => document.getElementById('curves-plot').data
             .filter(d => d.name === `trial ${id}`).map(d => Math.max(...d.x))""",
        trial["id"],
    )
    assert ends == [trial["to_epoch"]]

    _assert_no_junk(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "rung_view.png"), full_page=True)
    page.screenshot(path=str(test_output_dir / "dashboard-asha.png"), full_page=True)
    # The formula endpoints answer 4xx while too few trials are completed (Chromium logs each
    # failed fetch); the page says why instead. Nothing else may be logged.
    watch.assert_clean(allowed_errors=("/formula",))


def test_the_list_page_counts_paused_trials_and_compute(browser: Any, asha_server: Server) -> None:
    with asha_server.api(VIEWER) as api:
        search = api.get(f"/api/searches/{asha_server.searches['asha']['id']}").json()
    assert search["counts"]["paused"] > 0
    page, watch = _page(browser, asha_server, token=VIEWER)
    page.goto("/")
    row = page.locator(f"tr[data-search-id='{search['id']}']")
    text = row.inner_text()
    assert f"{search['counts']['paused']} paused" in text
    assert f"/ {ASHA_COMPUTE} epochs" in text
    assert row.locator(".progress-fill.trial-paused").count() == 1
    watch.assert_clean()
