"""The API docs pages (/docs, /redoc) through FastAPI's TestClient: everything they load is
served by vitcube itself, and Swagger UI's inline start-up script is the only one its CSP allows.

The browser half (does Swagger UI really render the 3.1 document offline?) is
tests/service/test_docs_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import make_settings
from vitcube.service import db as service_db
from vitcube.service.app import create_app

LOADED = re.compile(r"""(?:src|href)=["']?([^"'\s>]+)""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'vitcube.db'}"
    service_db.upgrade(url)
    with TestClient(create_app(make_settings(url, background=False))) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_only_files_this_server_serves(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    loaded = LOADED.findall(page.text) + re.findall(r'spec-url="([^"]+)"', page.text)
    assert loaded, "the page loads no bundle at all"
    for url in loaded:
        assert url.startswith("/"), f"{path} loads {url} from elsewhere"
        if url != "/openapi.json":
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["content-type"].split("/")[0] in {"text", "image"}, url
    assert "'unsafe-eval'" not in page.headers["content-security-policy"]


def test_swagger_csp_allows_exactly_its_inline_script(client: TestClient) -> None:
    page = client.get("/docs")
    csp = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    (inline,) = re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{digest}'"
    assert "'unsafe-inline'" not in csp["script-src"]
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"  # "Try it out" talks to this server only


def test_the_bundle_is_swagger_ui_5_and_only_known_files_are_served(client: TestClient) -> None:
    bundle = client.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
    assert bundle.status_code == 200
    # Swagger UI 4.x cannot render OpenAPI 3.1, which is what FastAPI emits.
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    versions = re.findall(r'VERSION:"(\d+)\.\d+\.\d+"', bundle.text)
    assert versions and int(versions[0]) >= 5, versions
    again = client.get(
        "/docs/assets/swagger-ui-bundle.js", headers={"If-None-Match": bundle.headers["etag"]}
    )
    assert again.status_code == 304
    for name in ("core.py", "..%2Fcore.py", "dashboard.js", Path(__file__).name):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name


def test_docs_pages_are_not_api_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
