"""The search page at 10,000 trials, in headless Chromium against a live server.

One search is filled with 10,000 completed surrogate trials straight in the database
(service.synthetic; reporting them through workers would take hours), after which the
background analyst fits its GP views. The page must draw the header, the server's Pareto front
and the trials table before the GP views arrive (the test holds `/analysis` back), page, sort
and filter the table, let parallel-coordinates brushing filter it, and refresh by asking only
for what changed. No timing is asserted here (benchmarks/bench_dashboard.py measures it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import launched_chromium, playwright_or_skip
from tests.factories import (
    ADMIN,
    ADMIN_TOKEN,
    VIEWER,
    WORKER,
    make_settings,
    report_body,
    search_body,
)
from tests.service.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]
playwright_or_skip()

TRIALS = 10_000
PARALLELISM = 2  # the planner keeps two trials queued besides the filled ones
SCREENS = Path("/tmp/exp/screens")


def _score(arch: dict[str, Any], epochs: int, seed: int) -> list[float]:
    from vitcube.models import Arch
    from vitcube.workers.surrogate import surrogate_curve

    return surrogate_curve(Arch.from_dict(arch), epochs=epochs, seed=seed)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from vitcube.service.db import Database
    from vitcube.service.synthetic import fill_search

    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard-scale') / 'vitcube.db'}"
    # A 10,000-trial search: the planner need not look at it twenty times a second.
    settings = make_settings(url, migrate_on_start=True, planner_interval_s=2.0)
    body = search_body(
        name="ten thousand trials",
        base={"family": "mobilevit_v2", "width": 1.0, "resolution": 256},
        space={"r": [0.5, 1.7], "d_i": [0.5, 2.3], "d_m": [0.5, 1.6], "w": [0.3, 1.2]},
        max_trials=TRIALS + 100,
        parallelism=PARALLELISM,
        training={"epochs": 10, "batch_size": 64},
    )
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=600) as api:
        created = api.post("/api/searches", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        search = created.json()
        fill_search(Database(url), search["id"], TRIALS, score=_score, seed=0)
        # The analyst fits the new trials in the background; wait for that fit once, here.
        fitted = api.get(
            f"/api/searches/{search['id']}/analysis", params={"fresh": True}, headers=VIEWER
        )
        assert fitted.status_code == 200, fitted.text
        assert fitted.json()["fitted_on"]["trials"] == TRIALS
        yield {"server": server, "search": search, "api": api}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


def _page(browser: Any, server: LiveServer) -> tuple[Any, list[str]]:
    """A page as an admin, and the errors it raises or logs (each test asserts there are none)."""
    context = browser.new_context(
        viewport={"width": 1440, "height": 900},
        extra_http_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        base_url=server.url,
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return page, errors


def _compact(api: httpx.Client, search_id: int) -> list[dict[str, Any]]:
    body = api.get(f"/api/searches/{search_id}/trials/compact", headers=VIEWER).json()
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


def _shown_ids(page: Any) -> list[int]:
    return [int(i) for i in page.locator("#trials-table tbody tr td:first-child").all_inner_texts()]


def test_the_front_and_the_table_draw_while_the_analysis_is_held_back(
    browser: Any, big: dict[str, Any], test_output_dir: Path
) -> None:
    search, api = big["search"], big["api"]
    front = api.get(f"/api/searches/{search['id']}/pareto", headers=VIEWER).json()
    page, errors = _page(browser, big["server"])
    held: list[Any] = []
    page.route("**/api/searches/*/analysis*", lambda route: held.append(route))  # held
    page.goto(f"/searches/{search['id']}")
    page.wait_for_selector("body[data-first-paint]", state="attached", timeout=120_000)

    assert len(held) == 1, "the page asks for the analysis once, and it is still held"
    assert page.get_attribute("#pareto-plot", "data-points") == str(TRIALS)
    # A sample of the dominated trials (2,000), the front and nothing else: no reference fits.
    assert page.get_attribute("#pareto-plot", "data-drawn") == str(2000 + len(front))
    drawn_front = page.evaluate(
        "document.getElementById('pareto-plot').data.find(d => d.name === 'Pareto front').x"
    )
    assert drawn_front == [t["macs"] / 1e6 for t in front]  # the server's front, in its order
    assert len(_shown_ids(page)) == 100
    assert page.inner_text("#trials-range").startswith(f"rows 1–100 of {TRIALS + PARALLELISM:,}")
    assert "Loading the GP views" in page.inner_text("#gp-empty")
    assert page.get_attribute("body", "data-analysis") == "loading"
    assert page.get_attribute("body", "data-ready") is None
    assert page.locator("#gp1d-r .main-svg").count() == 0
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "progressive.png"), full_page=True)

    held[0].continue_()
    page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
    assert page.get_attribute("body", "data-analysis") == "drawn"
    assert page.locator("#gp-empty").is_hidden()
    for factor in ("r", "d_i", "d_m", "w"):
        assert page.locator(f"#gp1d-{factor} .scatterlayer .trace").count() >= 3, factor
    note = page.inner_text("#analysis-note")
    assert f"Fitted on {TRIALS:,} completed trials" in note and "2,000 of them" in note
    page.screenshot(path=str(test_output_dir / "dashboard-10k.png"), full_page=True)
    assert errors == []


def test_the_table_pages_sorts_and_a_refresh_moves_only_what_changed(
    browser: Any, big: dict[str, Any]
) -> None:
    search, api = big["search"], big["api"]
    page, errors = _page(browser, big["server"])
    refreshes: list[tuple[str, bytes]] = []
    page.on(
        "response",
        lambda r: "/trials/compact?since=" in r.url and refreshes.append((r.url, r.body())),
    )
    page.goto(f"/searches/{search['id']}")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)

    top1 = page.locator("#trials-table th[data-key=top1]")
    assert top1.get_attribute("aria-sort") == "descending"  # best first from the start
    top1.click()
    assert top1.get_attribute("aria-sort") == "ascending"
    top1.click()
    trials = _compact(api, search["id"])
    done = sorted(
        (t for t in trials if t["state"] == "completed"), key=lambda t: (-t["top1"], t["id"])
    )
    assert _shown_ids(page) == [t["id"] for t in done[:100]]
    page.click("#trials-next")
    assert _shown_ids(page) == [t["id"] for t in done[100:200]]
    assert page.inner_text("#trials-range").startswith("rows 101–200")
    page.select_option("#trials-filter", "queued")
    queued = [t["id"] for t in trials if t["state"] == "queued"]
    assert sorted(_shown_ids(page)) == sorted(queued) and len(queued) == PARALLELISM
    assert page.locator("#trials-pager").is_hidden()  # one page holds them
    page.select_option("#trials-filter", "")

    # A worker completes one trial; the next poll asks for what changed since its cursor.
    lease = api.post("/api/trials/lease", json={"worker": "scale-test"}, headers=WORKER).json()
    reply = api.post(
        f"/api/trials/{lease['id']}/complete", json=report_body(lease, top1=0.5), headers=WORKER
    )
    assert reply.status_code == 200, reply.text

    def refreshed_with_it() -> bool:
        return any(
            lease["id"] in [row[0] for row in json.loads(body)["rows"]] for _, body in refreshes
        )

    page.wait_for_function(
        "n => document.getElementById('pareto-plot').dataset.points === String(n)",
        arg=TRIALS + 1,
        timeout=30_000,
    )
    assert refreshed_with_it()
    for _, body in refreshes:
        rows = json.loads(body)["rows"]
        # Only the trials changed in the overlap window: never the whole search again.
        assert len(rows) <= 10, len(rows)
        assert len(body) < 10_000, len(body)
    assert errors == []


def test_brushing_the_parallel_coordinates_filters_the_table(
    browser: Any, big: dict[str, Any], test_output_dir: Path
) -> None:
    search, api = big["search"], big["api"]
    page, errors = _page(browser, big["server"])
    page.goto(f"/searches/{search['id']}")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
    plot = page.locator("#parcoords-plot")
    assert json.loads(plot.get_attribute("data-axes") or "") == [
        "r", "d_i", "d_m", "w", "MMACs", "top-1 %"
    ]  # fmt: skip
    every = _compact(api, search["id"])
    trials = [t for t in every if t["state"] == "completed"]
    assert plot.get_attribute("data-lines") == str(len(trials)) and len(trials) >= TRIALS

    # Drag along the top-1 axis, from near its top down a fifth of its height, as a person does.
    page.locator("#parcoords-canvas").scroll_into_view_if_needed()
    box = page.locator("#parcoords-canvas").bounding_box()
    assert box is not None
    x = box["x"] + json.loads(plot.get_attribute("data-axis-x") or "")[5]
    top, bottom = (
        float(plot.get_attribute("data-axis-top") or 0),
        float(plot.get_attribute("data-axis-bottom") or 0),
    )
    page.mouse.move(x, box["y"] + top + 0.02 * (bottom - top))
    page.mouse.down()
    page.mouse.move(x, box["y"] + top + 0.2 * (bottom - top), steps=10)
    page.mouse.up()
    page.wait_for_function(
        "() => document.getElementById('parcoords-note').dataset.brushed !== '0'", timeout=10_000
    )
    ((low, high),) = json.loads(plot.get_attribute("data-brush") or "")["top1"]
    ranges = [(low, high)]
    # The range covers the top fifth of the axis less a little: 98 % down to 80 % of its span.
    span = [100 * t["top1"] for t in trials]
    lo_all, hi_all = min(span), max(span)
    assert abs(high - (lo_all + 0.98 * (hi_all - lo_all))) < 0.02 * (hi_all - lo_all)
    assert abs(low - (lo_all + 0.80 * (hi_all - lo_all))) < 0.02 * (hi_all - lo_all)
    inside = [t for t in trials if any(lo <= 100 * t["top1"] <= hi for lo, hi in ranges)]
    assert 0 < len(inside) < len(trials)
    assert page.inner_text("#parcoords-count") == f"{len(inside):,} of {len(trials):,}"
    shown = _shown_ids(page)
    assert len(shown) == min(100, len(inside))
    assert set(shown) <= {t["id"] for t in inside}
    if len(inside) > 100:
        assert f"of {len(inside):,}" in page.inner_text("#trials-range")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.locator("#parcoords-card").screenshot(path=str(SCREENS / "parcoords.png"))
    page.screenshot(path=str(test_output_dir / "dashboard-parcoords.png"), full_page=True)

    page.click("#parcoords-clear")
    assert page.get_attribute("#parcoords-note", "data-brushed") == "0"
    assert page.inner_text("#trials-range").startswith(f"rows 1–100 of {len(every):,}")
    assert errors == []
