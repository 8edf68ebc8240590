"""The dashboard's page routes through FastAPI's TestClient on a real (SQLite) app.

What a visitor notices without a browser: anonymous visits go to /login, the login form sets
an HttpOnly SameSite=Strict cookie the API accepts, wrong tokens are refused, unknown searches
get a friendly 404 page, admins (only) get a stop button, Plotly.js is served from this origin.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories
from tests.factories import command_search_body, make_settings, queued, wait_for
from vitcube.service import db as service_db
from vitcube.service.app import create_app
from vitcube.service.settings import Settings

ADMIN, WORKER, VIEWER = "adm-" + "a" * 20, "wrk-" + "b" * 20, "view-" + "c" * 20
SEARCH = {
    "name": "pages <b>test</b>",
    "base": {"family": "mobilevit_v2", "width": 1.0, "resolution": 256, "num_classes": 10},
    "dataset": {"name": "digits"},
    "budget": {"c": 0.5},
    "strategy": "random",
    "max_trials": 5,
    "parallelism": 1,
    "training": {"epochs": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("pages") / "vitcube.db"
    settings = Settings(
        database_url=f"sqlite:///{db}",
        admin_token=ADMIN,  # type: ignore[arg-type]
        worker_token=WORKER,  # type: ignore[arg-type]
        viewer_token=VIEWER,  # type: ignore[arg-type]
        background=False,
        migrate_on_start=True,
    )
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def search(client: TestClient) -> dict[str, Any]:
    reply = client.post("/api/searches", json=SEARCH, headers=_bearer(ADMIN))
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/", "/searches/1", "/searches/1?tab=x"])
def test_anonymous_pages_redirect_to_login_with_the_way_back(client: TestClient, path: str) -> None:
    client.cookies.clear()
    reply = client.get(path, follow_redirects=False)
    assert reply.status_code == 303
    location = reply.headers["location"]
    assert location.startswith("/login?next=")
    page = client.get(location)
    assert page.status_code == 200
    assert 'name="token"' in page.text
    assert f'name="next" value="{path}"' in page.text


def test_a_worker_or_unknown_token_cannot_see_pages(client: TestClient) -> None:
    client.cookies.clear()
    for token in (WORKER, "nope"):
        reply = client.get("/", headers=_bearer(token), follow_redirects=False)
        assert reply.status_code == 303, token


def test_login_refuses_wrong_tokens_and_sets_a_strict_httponly_cookie(
    client: TestClient, search: dict[str, Any]
) -> None:
    client.cookies.clear()
    for token in ("", "wrong", WORKER):
        reply = client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
        assert reply.status_code == 401, token
        assert "set-cookie" not in reply.headers
        assert 'id="login-error"' in reply.text

    reply = client.post(
        "/login",
        data={"token": VIEWER, "next": f"/searches/{search['id']}"},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/searches/{search['id']}"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"vitcube_token={VIEWER};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie

    # The cookie alone opens the pages and the JSON API they load.
    page = client.get(f"/searches/{search['id']}")
    assert page.status_code == 200
    assert client.get(f"/api/searches/{search['id']}/trials").status_code == 200
    assert client.post(f"/api/searches/{search['id']}/stop").status_code == 403

    reply = client.post("/logout", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/login"
    assert 'vitcube_token=""' in reply.headers["set-cookie"]
    client.cookies.clear()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil", ""])
def test_login_never_redirects_off_site(client: TestClient, target: str) -> None:
    client.cookies.clear()
    reply = client.post("/login", data={"token": VIEWER, "next": target}, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/"
    client.cookies.clear()


def test_list_page_shows_the_search_escaped(client: TestClient, search: dict[str, Any]) -> None:
    client.cookies.clear()
    page = client.get("/", headers=_bearer(VIEWER))
    assert page.status_code == 200
    assert "pages &lt;b&gt;test&lt;/b&gt;" in page.text  # names are text, never markup
    assert f'href="/searches/{search["id"]}"' in page.text
    assert "0 / 5" in page.text
    assert "connect-src 'self'" in page.headers["content-security-policy"]


def test_only_admins_get_the_stop_button(client: TestClient, search: dict[str, Any]) -> None:
    client.cookies.clear()
    as_viewer = client.get(f"/searches/{search['id']}", headers=_bearer(VIEWER))
    as_admin = client.get(f"/searches/{search['id']}", headers=_bearer(ADMIN))
    assert as_viewer.status_code == as_admin.status_code == 200
    assert 'id="stop-button"' not in as_viewer.text
    assert 'id="stop-button"' in as_admin.text
    for page in (as_viewer, as_admin):
        assert '<script src="/static/plotly.min.js"' in page.text
        assert "https://" not in page.text and "http://" not in page.text  # nothing off-origin


@pytest.mark.parametrize("search_id", ["999999", "abc", "0"])
def test_unknown_search_is_a_friendly_404(client: TestClient, search_id: str) -> None:
    client.cookies.clear()
    page = client.get(f"/searches/{search_id}", headers=_bearer(VIEWER))
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "There is no search" in page.text
    assert "Traceback" not in page.text and "detail" not in page.text


def test_plotly_and_our_assets_come_from_this_origin(client: TestClient) -> None:
    import plotly

    bundled = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    plain = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == bundled
    packed = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(bundled) / 2
    assert packed.content == bundled  # httpx undoes the gzip
    again = client.get("/static/plotly.min.js", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304

    for name in ("dashboard.js", "dashboard.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for bad in ("../dashboard.py", "..%2Fdashboard.py", ".hidden.js", "search.html", "nope.js"):
        assert client.get(f"/static/{bad}").status_code == 404, bad


def test_open_local_mode_needs_no_login(tmp_path: Path) -> None:
    """With no token configured anywhere (a loopback-only server) everyone is admin."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'open.db'}", background=False, migrate_on_start=True
    )
    with TestClient(create_app(settings)) as open_client:
        created = open_client.post("/api/searches", json=SEARCH)
        assert created.status_code == 201, created.text
        assert open_client.get("/", follow_redirects=False).status_code == 200
        page = open_client.get(f"/searches/{created.json()['id']}")
        assert page.status_code == 200
        assert 'id="stop-button"' in page.text


def test_a_full_search_page_has_no_rung_view(client: TestClient, search: dict[str, Any]) -> None:
    client.cookies.clear()
    assert search["schedule"] == {"kind": "full"}
    page = client.get(f"/searches/{search['id']}", headers=_bearer(VIEWER))
    assert page.status_code == 200
    assert 'id="rungs' not in page.text and "ASHA" not in page.text
    assert 'id="search-progress-paused"' not in page.text  # the trials bar is as it was
    assert 'id="compute-epochs"' in page.text and 'id="compute-progress"' not in page.text


def test_an_asha_search_page_names_its_rungs_and_its_compute_budget(client: TestClient) -> None:
    client.cookies.clear()
    body = {
        **SEARCH,
        "name": "pages asha",
        "training": {"epochs": 9, "batch_size": 64},
        "schedule": {"kind": "asha", "min_epochs": 1, "eta": 3},
        "max_train_epochs": 1000,
    }
    created = client.post("/api/searches", json=body, headers=_bearer(ADMIN))
    assert created.status_code == 201, created.text
    search_id = created.json()["id"]
    page = client.get(f"/searches/{search_id}", headers=_bearer(VIEWER))
    assert page.status_code == 200
    assert 'id="rungs"' in page.text
    assert "ASHA, rungs 1 · 3 · 9, η = 3" in page.text
    assert "0 / 1,000 epochs" in page.text  # nothing trained yet, against the budget
    listed = client.get("/", headers=_bearer(VIEWER))
    assert "0 / 1,000 epochs" in listed.text


def test_training_compute_reads_in_human_units() -> None:
    from vitcube.service.dashboard import format_count, format_macs

    assert format_macs(3.4e15) == "3.4 P" and format_macs(1.23e12) == "1.23 T"
    assert format_macs(1.834e9) == "1.83 G"  # per image, as before
    assert format_count(412.0) == "412" and format_count(1000) == "1,000"
    assert format_count(12.5) == "12.5" and format_count(None) == "–"


def test_the_schedule_in_words_names_its_brackets() -> None:
    from vitcube.service.dashboard import describe_schedule

    rungs = [{"epoch": 3}, {"epoch": 9}, {"epoch": 27}]
    hedged = {"schedule": {"kind": "asha", "eta": 3, "brackets": 2}, "rungs": rungs}
    assert describe_schedule(hedged) == "ASHA, rungs 3 · 9 · 27, η = 3, 2 brackets"
    plain = {"schedule": {"kind": "asha", "eta": 3, "brackets": 1}, "rungs": rungs}
    assert describe_schedule(plain) == "ASHA, rungs 3 · 9 · 27, η = 3"
    assert describe_schedule({"schedule": {"kind": "full"}}) == "full training"


def test_a_search_no_connected_worker_can_run_says_so_on_its_page(
    client: TestClient, search: dict[str, Any], tmp_path: Path
) -> None:
    # The module's app plans nothing (background=False): no queued trials, nothing to say.
    plain = client.get(f"/searches/{search['id']}", headers=_bearer(VIEWER))
    assert 'id="trainer-notice"' not in plain.text
    url = f"sqlite:///{tmp_path / 'notice.db'}"
    service_db.upgrade(url)
    with TestClient(create_app(make_settings(url))) as live:
        created = live.post(
            "/api/searches", json=command_search_body("det-v2"), headers=factories.ADMIN
        )
        assert created.status_code == 201, created.text
        page_url = f"/searches/{created.json()['id']}"
        wait_for(lambda: queued(live, created.json()["id"]))
        page = live.get(page_url, headers=factories.VIEWER)
        notice = re.search(
            r'<div class="alert alert-notice" id="trainer-notice"[^>]*>([^<]*)<', page.text
        )
        assert notice is not None, page.text
        assert html.unescape(notice.group(1)).startswith(
            "no connected worker can run trainer command:det-v2: start one with "
            "vitcube worker --command det-v2='…'"
        )
        asked = live.post(
            "/api/trials/lease",
            json={"worker": "det-box", "trainers": ["command:det-v2"]},
            headers=factories.WORKER,
        )
        assert asked.status_code == 200, asked.text
        assert 'id="trainer-notice"' not in live.get(page_url, headers=factories.VIEWER).text
