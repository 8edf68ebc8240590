"""The compare page (/compare?ids=…): several searches' Pareto fronts on one plot.

Page tests through FastAPI's TestClient (who may see it, what a bad or unknown id says), and one
test in headless Chromium against a live server: three searches of the same baseline at
c = 0.25, 0.5 and 0.75 whose trials a worker that is only an HTTP client leases and completes;
the page must draw each search's front (the server's), its budget, the formula's pick where
the formula can be fitted and say "not enough trials" where it cannot, and fill the table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.browser import launched_chromium, playwright_or_skip
from tests.factories import (
    VIEWER,
    VIEWER_TOKEN,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    report_body,
    surrogate_top1,
    wait_for,
)
from tests.service.conftest import LiveServer
from vitcube.search.formula import MIN_OBSERVATIONS
from vitcube.service.app import create_app

# -- the page, without a browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("compare-pages") / "vitcube.db"
    settings = make_settings(f"sqlite:///{db}", background=False, migrate_on_start=True)
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def two(client: TestClient) -> list[dict[str, Any]]:
    """Two searches of one baseline; the second's name would be markup if it were not escaped."""
    return [
        create_search(client, name="half budget", budget={"c": 0.5}),
        create_search(client, name="three <b>quarters</b>", budget={"c": 0.75}),
    ]


def test_a_viewer_sees_the_searches_it_names_in_the_order_named(
    client: TestClient, two: list[dict[str, Any]]
) -> None:
    first, second = two
    reply = client.get(f"/compare?ids={second['id']},{first['id']}", headers=VIEWER)
    assert reply.status_code == 200, reply.text
    html = reply.text
    rows = re.findall(r'id="compare-row-(\d+)"', html)
    assert rows == [str(second["id"]), str(first["id"])]
    assert "three &lt;b&gt;quarters&lt;/b&gt;" in html and "<b>quarters</b>" not in html
    assert 'id="compare-plot"' in html
    assert '<script src="/static/compare.js"' in html
    assert '<script src="/static/plotly.min.js"' in html
    assert "c = 0.75" in html and "c = 0.50" in html
    assert "script-src 'self'" in reply.headers["content-security-policy"]


def test_repeated_ids_from_the_checkbox_form_work_too(
    client: TestClient, two: list[dict[str, Any]]
) -> None:
    first, second = two
    reply = client.get(f"/compare?ids={first['id']}&ids={second['id']}", headers=VIEWER)
    assert reply.status_code == 200, reply.text
    assert re.findall(r'id="compare-row-(\d+)"', reply.text) == [
        str(first["id"]),
        str(second["id"]),
    ]


def test_anonymous_visitors_and_workers_go_to_login(
    client: TestClient, two: list[dict[str, Any]]
) -> None:
    client.cookies.clear()
    path = f"/compare?ids={two[0]['id']},{two[1]['id']}"
    for headers in ({}, WORKER):
        reply = client.get(path, headers=headers, follow_redirects=False)
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/login?next=%2Fcompare%3Fids%3D")


def test_the_login_cookie_opens_the_page(client: TestClient, two: list[dict[str, Any]]) -> None:
    client.cookies.clear()
    reply = client.post("/login", data={"token": VIEWER_TOKEN}, follow_redirects=False)
    assert reply.status_code == 303
    assert client.get(f"/compare?ids={two[0]['id']},{two[1]['id']}").status_code == 200
    client.cookies.clear()


def test_an_unknown_id_gets_a_404_page_that_names_it(
    client: TestClient, two: list[dict[str, Any]]
) -> None:
    reply = client.get(f"/compare?ids={two[0]['id']},9999,8888", headers=VIEWER)
    assert reply.status_code == 404
    message = _error_message(reply.text)
    assert "#9999" in message and "#8888" in message
    assert f"#{two[0]['id']}" not in message


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("", "Name 2 to 8 different searches"),
        ("?ids=", "Name 2 to 8 different searches"),
        ("?ids=1", "this link names 1 search)"),
        ("?ids=1,1", "this link names 1 search)"),
        ("?ids=" + ",".join(str(i) for i in range(1, 10)), "this link names 9 searches"),
        ("?ids=1,x", "'x' is not a search id"),
        ("?ids=1,-2,3.5", "'-2', '3.5' are not search ids"),
        ("?ids=0,1", "'0' is not a search id"),
        ("?ids=1,99999999999", "'99999999999' is not a search id"),
        ("?ids=1,%C2%B2", "'²' is not a search id"),
    ],
)
def test_malformed_ids_get_a_422_page_saying_what_to_change(
    client: TestClient, query: str, says: str
) -> None:
    reply = client.get("/compare" + query, headers=VIEWER)
    assert reply.status_code == 422, reply.text
    message = _error_message(reply.text)
    assert says in message, message
    assert "/compare?ids=3,1,2" in message


def test_the_searches_page_lets_a_viewer_pick_searches_to_compare(
    client: TestClient, two: list[dict[str, Any]]
) -> None:
    html = client.get("/", headers=VIEWER).text
    assert 'id="compare-form"' in html and 'action="/compare"' in html
    for search in two:
        assert f'name="ids" value="{search["id"]}" form="compare-form"' in html
    # Both have the same baseline and dataset: one link compares them all, newest first.
    groups = re.findall(r'class="compare-group" href="/compare\?ids=([\d,]+)"', html)
    assert groups == [f"{two[1]['id']},{two[0]['id']}"]


def _error_message(html: str) -> str:
    match = re.search(r'<p id="error-message">(.*?)</p>', html, re.S)
    assert match, html
    return match.group(1).replace("&#39;", "'")


# -- in headless Chromium -----------------------------------------------------------------------

BUDGETS = (0.25, 0.5, 0.75)
# Completed trials per search (the reference trials included): the formula is fitted from
# MIN_OBSERVATIONS (5) completed trials on, so the first search cannot have one and the others can.
COMPLETED = (MIN_OBSERVATIONS - 1, 8, 7)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, list[Any]]]:
    db = tmp_path_factory.mktemp("compare-browser") / "vitcube.db"
    with LiveServer(make_settings(f"sqlite:///{db}", migrate_on_start=True)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            searches = []
            # One at a time: a search is created, then all its trials are completed, so every
            # lease belongs to it (leasing is fair across searches).
            for c, n in zip(BUDGETS, COMPLETED, strict=True):
                search = create_search(
                    api,
                    name=f"at c = {c}",
                    budget={"c": c},
                    strategy="sobol",
                    max_trials=n,
                    parallelism=2,
                )
                for _ in range(n):
                    lease = lease_one(api)
                    assert lease["search_id"] == search["id"]
                    top1 = surrogate_top1(lease["effective_factors"])
                    done = api.post(
                        f"/api/trials/{lease['id']}/complete",
                        json=report_body(lease, top1=top1),
                        headers=WORKER,
                    )
                    assert done.status_code == 200, done.text
                searches.append(search)
            # Nothing completes from here on: once each fittable search's formula answers from
            # its full completed set, the page and this test see the same answers.
            for search, n in zip(searches, COMPLETED, strict=True):
                if n >= MIN_OBSERVATIONS:
                    wait_for(lambda s=search: _formula_is_current(api, s["id"]), timeout_s=60)
        yield server, searches


def _formula_is_current(api: httpx.Client, search_id: int) -> bool:
    reply = api.get(f"/api/searches/{search_id}/formula", headers=VIEWER)
    return reply.status_code == 200 and not reply.json().get("stale")


@pytest.mark.browser
@pytest.mark.slow
def test_compare_page_overlays_fronts_budgets_and_formula_picks(
    live: tuple[LiveServer, list[dict[str, Any]]], test_output_dir: Path
) -> None:
    playwright_or_skip()
    server, searches = live
    ids = [s["id"] for s in searches]
    with httpx.Client(base_url=server.url, headers=VIEWER, timeout=30) as api:
        fronts = {i: api.get(f"/api/searches/{i}/pareto").json() for i in ids}
        own_c = dict(zip(ids, BUDGETS, strict=True))
        formulas = {i: api.get(f"/api/searches/{i}/formula", params={"c": own_c[i]}) for i in ids}
        fitted = {i for i, reply in formulas.items() if reply.status_code == 200}
        asked = {i: api.get(f"/api/searches/{i}/formula", params={"c": 0.4}) for i in fitted}
    assert {i: r.status_code for i, r in formulas.items()} == {
        ids[0]: 409,
        ids[1]: 200,
        ids[2]: 200,
    }

    with launched_chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1440, "height": 1000},
            extra_http_headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
            base_url=server.url,
        )
        page = context.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda request: requests.append(request.url))

        # From the searches page: tick the three and press "Compare selected".
        page.goto("/")
        button = page.locator("#compare-button")
        page.check(f"input.compare-pick[value='{ids[0]}']")
        assert button.is_disabled(), "one search is nothing to compare"
        for i in ids[1:]:
            page.check(f"input.compare-pick[value='{i}']")
        assert page.inner_text("#compare-count") == "3 picked"
        button.click()
        newest_first = ",".join(str(i) for i in reversed(ids))  # the table's order
        page.wait_for_url(f"{server.url}/compare?ids={newest_first}")
        page.goto(f"/compare?ids={','.join(map(str, ids))}")
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)

        traces = page.evaluate(
            """() => document.getElementById('compare-plot').data.map(d => ({
                 role: d.meta.role, search: d.meta.search, x: d.x, y: d.y,
                 text: d.text ? d.text[0] : null,
                 color: d.line ? d.line.color : d.marker.line.color}))"""
        )
        front_traces = [t for t in traces if t["role"] == "front"]
        assert [t["search"] for t in front_traces] == ids, "one front per search, in order"
        for trace in front_traces:
            front = fronts[trace["search"]]
            assert trace["x"] == pytest.approx([t["macs"] / 1e6 for t in front])
            assert trace["y"] == pytest.approx([100 * t["top1"] for t in front])
        assert len({t["color"] for t in front_traces}) == 3, "each search in its own colour"

        marks = {t["search"]: t for t in traces if t["role"] == "formula"}
        assert set(marks) == fitted == {ids[1], ids[2]}
        for i, mark in marks.items():
            recommendation = formulas[i].json()
            assert mark["x"] == pytest.approx([recommendation["macs"] / 1e6])
            below = [t["top1"] for t in fronts[i] if t["macs"] <= recommendation["macs"]]
            if below:  # the star stands on the best top-1 found at or below those MACs
                assert mark["y"] == pytest.approx([100 * max(below)])
            assert f"formula at c={recommendation['c']:.2f}" in mark["text"]
            assert "predicts factors, not accuracy" in mark["text"]

        shapes = page.evaluate("() => document.getElementById('compare-plot').layout.shapes")
        assert [s["x0"] for s in shapes] == pytest.approx([s["max_macs"] / 1e6 for s in searches])
        assert {s["line"]["dash"] for s in shapes} == {"dash"}
        assert [s["line"]["color"] for s in shapes] == [t["color"] for t in front_traces]

        # The table: one row per search, in order, with the counts and the formula's answer.
        rows = page.locator("#compare-table tbody tr")
        assert rows.count() == 3
        for index, (search, n) in enumerate(zip(searches, COMPLETED, strict=True)):
            row = rows.nth(index)
            assert row.get_attribute("data-search-id") == str(search["id"])
            assert f"#{search['id']}" in row.inner_text()
            assert row.locator("[data-col=completed]").inner_text().strip() == f"{n} / {n}"
            assert row.locator("[data-col=front]").inner_text().split()[0] == str(
                len(fronts[search["id"]])
            )
            # The best trial within budget is on the front (whatever beats it is in budget too).
            best = max(t["top1"] for t in fronts[search["id"]] if t["macs"] <= search["max_macs"])
            assert f"{100 * best:.1f} %" in row.locator("[data-col=best]").inner_text()
        assert "Not enough trials" in rows.nth(0).locator("[data-col=formula]").inner_text()
        assert rows.nth(0).get_attribute("data-formula") == "unfitted"
        for index in (1, 2):
            cell = rows.nth(index).locator("[data-col=formula]").inner_text()
            recommendation = formulas[ids[index]].json()
            assert f"c = {recommendation['c']:.2f}" in cell and "MACs" in cell
            assert re.search(r"r \d\.\d\d · d_i \d\.\d\d · d_m \d\.\d\d · w \d\.\d\d", cell)
        junk = re.findall(r"\b(?:null|undefined|NaN)\b", page.inner_text("body"))
        assert junk == [], junk

        screenshots = [test_output_dir / "dashboard-compare.png"]
        if os.environ.get("VITCUBE_SCREENSHOTS"):
            folder = Path(os.environ["VITCUBE_SCREENSHOTS"])
            folder.mkdir(parents=True, exist_ok=True)
            screenshots.append(folder / "compare.png")
        for path in screenshots:
            page.screenshot(path=str(path), full_page=True)

        # One c for every search: the stars move to what each formula builds at c = 0.4.
        page.fill("#compare-c", "0.4")
        page.click("#compare-formula-form button[type=submit]")
        page.wait_for_selector("body[data-ready='2']", state="attached", timeout=30_000)
        moved = page.evaluate(
            """() => document.getElementById('compare-plot').data
                 .filter(d => d.meta.role === 'formula').map(d => [d.meta.search, d.x[0]])"""
        )
        assert dict(moved) == pytest.approx({i: r.json()["macs"] / 1e6 for i, r in asked.items()})
        assert "c = 0.40" in page.inner_text("#compare-formula-note")
        assert "Not enough trials" in rows.nth(0).locator("[data-col=formula]").inner_text()
        context.close()

    # The unfittable search's formula answers 409, which Chromium logs; nothing else may be.
    assert [e for e in errors if "409" not in e] == [], errors
    assert [u for u in requests if not u.startswith(server.url + "/")] == []
