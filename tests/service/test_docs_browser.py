"""The API docs in a real headless Chromium with the network cut off: every request whose host
is not this machine's loopback is aborted and recorded, as on an air-gapped cluster.

/docs must list the API's operations (Swagger UI 5 renders the OpenAPI 3.1 document; 4.x shows
an error instead) and /redoc must render them too, with no request blocked, no page error
and no console error (a Content-Security-Policy violation is logged as one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import launched_chromium, playwright_or_skip
from tests.factories import make_settings
from tests.service.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OPERATIONS = [("POST", "/api/searches"), ("GET", "/api/searches"), ("POST", "/api/trials/lease")]

playwright_or_skip()


@pytest.fixture(scope="module")
def server(sqlite_url: str) -> Iterator[LiveServer]:
    with LiveServer(make_settings(sqlite_url, background=False)) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


@dataclass
class Offline:
    """A page whose requests may reach loopback only; the rest are aborted and kept here."""

    page: Any
    blocked: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", self._console)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK or url.startswith(("data:", "blob:")):
            self.served.append(url)
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def assert_clean(self, *, allowed_errors: tuple[str, ...] = ()) -> None:
        assert self.blocked == [], f"requests left the machine: {self.blocked}"
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        assert errors == [], errors
        assert any(u.endswith("/openapi.json") for u in self.served), self.served


@pytest.fixture
def offline(browser: Any) -> Iterator[Offline]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Offline(context.new_page())
    context.close()


def test_swagger_ui_lists_the_operations_offline(
    offline: Offline, server: LiveServer, test_output_dir: Path
) -> None:
    page = offline.page
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    shown = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for block in page.locator(".opblock").all()
    }
    for operation in OPERATIONS:
        assert operation in shown, (operation, sorted(shown, key=str))
    assert "Unable to render this definition" not in page.inner_text("body")
    assert int(page.evaluate("window.versions.swaggerUI.version").split(".")[0]) >= 5
    # The schemas section renders the models, including the error shapes.
    page.wait_for_selector("section.models", timeout=10_000)
    page.screenshot(path=str(test_output_dir / "docs-swagger.png"))
    offline.assert_clean()


def test_redoc_renders_the_operations_offline(offline: Offline, server: LiveServer) -> None:
    page = offline.page
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id^='tag/']", timeout=30_000)
    body = page.inner_text("body")
    assert "/api/trials/lease" in body
    assert "/api/searches" in body
    # ReDoc's side menu shows Redocly's logo from its CDN; the page's CSP refuses it before any
    # request is made (Chromium logs that), and ReDoc then drops the <img>. Nothing else may be.
    offline.assert_clean(allowed_errors=("'https://cdn.redoc.ly/redoc/logo-mini.svg' violates",))
